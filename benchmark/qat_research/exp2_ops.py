"""Q2 + Q3: per-op agreement between a fake-quant Keras model and its int8 TFLite export.

Every case: input FakeQuant -> op(s) -> output FakeQuant; kernels pre-rounded to the per-channel
symmetric int8 grid (no weight FakeQuant in the graph); activation ranges from min/max over
calibration data, nudged to the int8 grid (qsim.nudge). Inputs are fed on the input grid (random
int8 codes), so the comparison isolates what the int8 kernels compute.
Prints, per kernel implementation (builtin optimized, reference, XNNPACK), how many output int8
codes differ from round(keras_out / s_out) + zp_out, and the largest difference.
Also Q3: checks the .tflite weights against round(w / (max|w| / 127)).
"""
import sys

from qsim import *  # noqa

H, C = 12, 8
rng = np.random.default_rng(1)


def dw_set(layer, seed, bias=True):
    r = np.random.default_rng(seed)
    k = layer.kernel.shape
    w = r.normal(0, 0.5, k).astype(np.float32)
    axis = 2 if isinstance(layer, layers.DepthwiseConv2D) else -1
    wq, _, _ = quantize_kernel(w, channel_axis=axis)
    ws = [wq]
    if bias:
        ws.append(r.normal(0, 0.3, layer.bias.shape).astype(np.float32))
    layer.set_weights(ws)


def case_conv(stride, relu=True):
    def build(inp):
        x = FQR()(inp)
        if stride == 2:
            x = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        conv = layers.Conv2D(C, 3, strides=stride, padding="same" if stride == 1 else "valid")
        y = conv(x)
        dw_set(conv, 2)
        if relu:
            y = ops.relu(y)
        return FQR()(y)
    return build


def case_dw(stride, relu=True):
    def build(inp):
        x = FQR()(inp)
        if stride == 2:
            x = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        conv = layers.DepthwiseConv2D(3, strides=stride, padding="same" if stride == 1 else "valid")
        y = conv(x)
        dw_set(conv, 3)
        if relu:
            y = ops.relu(y)
        return FQR()(y)
    return build


def case_add(inp):
    x = FQR()(inp)
    conv = layers.DepthwiseConv2D(1)
    a = FQR()(conv(x))
    dw_set(conv, 4)
    return FQR()(a + x)


def case_mean(inp):
    x = FQR()(inp)
    return FQR()(ops.mean(x, axis=(1, 2), keepdims=True))


def case_mul(inp):
    x = FQR()(inp)
    conv = layers.DepthwiseConv2D(1)
    g = FQR()(ops.relu(conv(x)))
    dw_set(conv, 5)
    return FQR()(x * g)


def case_hsig_explicit(inp):
    x = FQR()(inp)
    h = FQR()(ops.relu6(x + 3.0))
    return FQR()(h / 6.0)


def case_hsig_keras(inp):
    x = FQR()(inp)
    return FQR()(ops.hard_sigmoid(x))


def case_se(inp):
    """Full squeeze-excite: mean -> conv1x1 -> relu -> conv1x1 -> hard sigmoid -> x * gate."""
    x = FQR()(inp)
    s = FQR()(ops.mean(x, axis=(1, 2), keepdims=True))
    c1, c2 = layers.Conv2D(4, 1), layers.Conv2D(C, 1)
    s = FQR()(ops.relu(c1(s)))
    dw_set(c1, 6)
    s = FQR()(c2(s))
    dw_set(c2, 7)
    s = FQR()(ops.relu6(s + 3.0))
    g = FQR()(s / 6.0)
    return FQR()(x * g)


def case_dense(inp):
    x = FQR()(inp)
    x = layers.Flatten()(x)
    d = layers.Dense(10)
    y = d(x)
    dw_set(d, 8)
    return FQR()(y)


def case_conv_relu_fqbetween(inp):
    """FakeQuant between conv and ReLU too (is it dropped by the conv+relu fusion?)."""
    x = FQR()(inp)
    conv = layers.Conv2D(C, 3, padding="same")
    y = FQR()(conv(x))
    dw_set(conv, 2)
    return FQR()(ops.relu(y))


CASES = {
    "conv3x3 s1 +b +relu": (case_conv(1), (H, H, C)),
    "conv3x3 s2 pad +b +relu": (case_conv(2), (H, H, C)),
    "conv3x3 s1 +b (no relu)": (case_conv(1, relu=False), (H, H, C)),
    "dw3x3 s1 +b +relu": (case_dw(1), (H, H, C)),
    "dw3x3 s2 pad +b +relu": (case_dw(2), (H, H, C)),
    "add (dw1x1(x) + x)": (case_add, (H, H, C)),
    "mean HW keepdims": (case_mean, (H, H, C)),
    "mul x * relu(dw1x1(x))": (case_mul, (H, H, C)),
    "hsig relu6(x+3)/6": (case_hsig_explicit, (H, H, C)),
    "hsig ops.hard_sigmoid": (case_hsig_keras, (H, H, C)),
    "SE block": (case_se, (H, H, C)),
    "dense 288->10": (case_dense, (6, 6, C)),
    "conv +FQ+relu+FQ": (case_conv_relu_fqbetween, (H, H, C)),
}


def weight_check(tfl, model):
    """Q3: int8 weights == round(w / (max|w|/127)) per output channel? bias scale/rounding."""
    it = interp(tfl)
    td = it.get_tensor_details()
    keras_w = [l for l in model.layers if getattr(l, "kernel", None) is not None]
    lines = []
    for d in td:
        if d["dtype"] == np.int8 and d["name"].find("serving") < 0:
            sc, zp, ax = qparams(d)
            if len(sc) <= 1 and len(d["shape"]) < 2:
                continue
            try:
                w = it.get_tensor(d["index"])
            except ValueError:
                continue
            if w.ndim >= 2 and len(sc) > 1 or (len(sc) == 1 and d["shape"].size == 2):
                lines.append((d["name"], d["shape"].tolist(), len(sc), ax, w, sc))
    return lines, it


def fix_biases(model, it):
    """Simulation B: every Keras bias replaced by its int32-rounded value q_b * (s_in * s_w),
    read off the .tflite's bias tensors (ops matched to layers in graph order)."""
    from repghost_tf.fusion import walk_layers

    td = tensors(it)
    biases = []
    for o in it._get_ops_details():
        if o["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(o["inputs"]) > 2:
            bi = o["inputs"][2]
            if bi >= 0:
                sb, _, _ = qparams(td[bi])
                biases.append(it.get_tensor(bi).astype(np.float64) * sb)
    ls = [l for l in walk_layers(model)
          if isinstance(l, (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)) and l.use_bias]
    assert len(ls) == len(biases), (len(ls), len(biases))
    for l, b in zip(ls, biases):
        k, b0 = l.get_weights()
        assert b0.shape == b.shape
        l.set_weights([k, b.astype(np.float32)])


def run_case(name, build, shape, verbose=False):
    inp = keras.Input(shape)
    out = build(inp)
    model = keras.Model(inp, out)
    calib = rng.normal(0.3, 1.0, (16, *shape)).astype(np.float32)
    calibrate(model, calib)
    tfl = convert_int8(model, calib, io_type="int8")
    opl = ops_list(tfl)
    it0 = interp(tfl)
    idet, odet = it0.get_input_details()[0], it0.get_output_details()[0]
    si, zi = idet["quantization"]
    so, zo = odet["quantization"]
    # inputs on the input grid
    q_in = rng.integers(-128, 128, (40, *shape)).astype(np.int8)
    x = ((q_in.astype(np.float32) - zi) * np.float32(si)).astype(np.float32)
    ref = model.predict(x, verbose=0, batch_size=40)
    expect_a = np.round(ref / so) + zo
    fix_biases(model, it0)
    ref_b = model.predict(x, verbose=0, batch_size=40)
    expect_b = np.round(ref_b / so) + zo
    res = {}
    for mode, expect in (("A", expect_a), ("B", expect_b)):
      for kind in ("builtin", "ref", "xnnpack"):
        it = interp(tfl, kind=kind, preserve=False)
        outs = []
        for q in q_in:
            it.set_tensor(idet["index"], q[None])
            it.invoke()
            outs.append(it.get_tensor(odet["index"])[0].astype(np.int32))
        d = np.abs(np.stack(outs) - expect)
        res[mode + " " + kind] = (int(np.sum(d > 0)), d.size, int(d.max()))
    return res, opl, tfl, model


if __name__ == "__main__":
    sel = sys.argv[1:] or list(CASES)
    print(f"{'case':28s} | {'ops':45s} | A=float bias, B=int32-rounded bias: diff/n max")
    for name in sel:
        build, shape = CASES[name]
        res, opl, tfl, model = run_case(name, build, shape)
        cells = " | ".join(f"{k} {res[k][0]}/{res[k][1]} max {res[k][2]}" for k in res)
        print(f"{name:28s} | {str(opl)[:45]:45s} | {cells}", flush=True)
