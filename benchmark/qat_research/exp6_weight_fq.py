"""Q5: does a per-channel weight FakeQuant in the graph convert? Conv2D / DepthwiseConv2D / Dense
with keras.quantizers.fake_quant_with_min_max_vars(kernel, -m, m, axis=out_axis, narrow_range=True)
(Keras swaps the channel axis last around tf.quantization.fake_quant_with_min_max_vars_per_channel)
and with the TF op called directly on a kernel whose channel axis is already last."""
from qsim import *  # noqa
from keras.quantizers import fake_quant_with_min_max_vars as kfq


class WConv(layers.Layer):
    def __init__(self, kind, how, **kw):
        super().__init__(**kw)
        self.kind, self.how = kind, how

    def build(self, s):
        c = s[-1]
        shape = {"conv": (3, 3, c, 6), "dw": (3, 3, c, 1), "dense": (c, 6)}[self.kind]
        self.k = self.add_weight(shape=shape, initializer="glorot_uniform")

    def call(self, x):
        k = self.k
        axis = {"conv": 3, "dw": 2, "dense": 1}[self.kind]
        m = ops.max(ops.abs(k), axis=[i for i in range(len(k.shape)) if i != axis])
        if self.how == "keras":
            k = kfq(k, -m, m, num_bits=8, narrow_range=True, axis=axis)
        elif self.how == "tf_lastaxis":
            if self.kind == "dw":  # (kh, kw, C, 1) -> reshape to (kh, kw, 1, C)? use reshape
                kk = ops.reshape(k, (3, 3, 1, -1))
                kk = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                    kk, -m, m, num_bits=8, narrow_range=True)
                k = ops.reshape(kk, k.shape)
            else:
                k = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                    k, -m, m, num_bits=8, narrow_range=True)
        if self.kind == "conv":
            return ops.conv(x, k, padding="same")
        if self.kind == "dw":
            return ops.depthwise_conv(x, k, padding="same")
        return ops.matmul(x, k)


rng = np.random.default_rng(6)
for kind in ("conv", "dw", "dense"):
    for how in ("keras", "tf_lastaxis"):
        shape = (8, 8, 4) if kind != "dense" else (16,)
        inp = keras.Input(shape)
        y = FQ(-3, 3)(WConv(kind, how)(FQ(-2, 2)(inp)))
        m = keras.Model(inp, y)
        rep = rng.normal(0, 1, (8, *shape)).astype(np.float32)
        try:
            t = convert_int8(m, rep)
            print(f"{kind:6s} {how:12s} OK   ops {ops_list(t)}")
        except Exception as e:
            msg = [l for l in str(e).splitlines() if "error" in l.lower()]
            print(f"{kind:6s} {how:12s} FAIL {(msg[0] if msg else str(e).splitlines()[0])[:200]}")
