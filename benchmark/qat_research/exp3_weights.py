"""Q3: pre-rounded per-channel kernels -> .tflite int8 weights; bias scale and rounding.
Also (Q5): does a per-channel weight FakeQuant in the graph convert?

Model: FQ -> Conv2D 3x3 -> FQ -> DepthwiseConv2D 3x3 -> FQ -> flatten -> Dense -> FQ.
"""
from qsim import *  # noqa
from repghost_tf.export import tflite as T

rng = np.random.default_rng(3)
H, C = 8, 6


def build(weight_fq=None):
    inp = keras.Input((H, H, C))
    conv = layers.Conv2D(C, 3, padding="same")
    dw = layers.DepthwiseConv2D(3, padding="same")
    dense = layers.Dense(5)
    x = FQR()(inp)
    if weight_fq is None:
        x = FQR()(conv(x))
        x = FQR()(dw(x))
        x = FQR()(dense(layers.Flatten()(x)))
        m = keras.Model(inp, x)
    else:
        m = None
    return inp, conv, dw, dense, m


def set_rounded(conv, dw, dense):
    out = {}
    for name, l, axis in (("conv", conv, -1), ("dw", dw, 2), ("dense", dense, -1)):
        k = rng.normal(0, 0.4, l.kernel.shape).astype(np.float32)
        k[..., 0] *= 5  # channels of different magnitude
        b = rng.normal(0, 0.3, l.bias.shape).astype(np.float32)
        kq, q, s = quantize_kernel(k, axis)
        l.set_weights([kq, b])
        out[name] = (q, s, b)
    return out


inp, conv, dw, dense, model = build()
model(np.zeros((1, H, H, C), np.float32))
ref = set_rounded(conv, dw, dense)
calib = rng.normal(0, 1, (16, H, H, C)).astype(np.float32)
calibrate(model, calib)
for label, tfl in (("plain converter", convert_int8(model, calib)),
                   ("project convert()", T.convert(model, "int8", image_size=H, io_type="int8",
                                                   representative_data=calib, pixel_range=None,
                                                   ranges="minmax"))):
    it = interp(tfl)
    td = tensors(it)
    print(f"== {label}: ops {T.op_histogram(tfl)}")
    for o in it._get_ops_details():
        if o["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        name = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "dw", "FULLY_CONNECTED": "dense"}[o["op_name"]]
        q, s, b = ref[name]
        xi, wi, bi = o["inputs"][:3]
        w = it.get_tensor(wi)
        sw, zw, ax = qparams(td[wi])
        sb, zb, _ = qparams(td[bi])
        bq = it.get_tensor(bi)
        si = td[xi]["quantization"][0]
        qk = q.T if name == "dense" else q.transpose(3, 0, 1, 2)
        exact = np.array_equal(qk, w) if qk.shape == w.shape else f"shape {qk.shape} vs {w.shape}"
        berr = np.abs(b - bq * sb)
        print(f"  {o['op_name']:18s} w {td[wi]['dtype'].__name__} {tuple(w.shape)} axis={ax} "
              f"#scales={len(sw)} zp all 0={not np.any(zw)} | int8 == round(w/(max|w|/127)): {exact} |"
              f" max rel scale diff {np.max(np.abs(sw - s) / s):.1e} | range used "
              f"[{w.min()}, {w.max()}]")
        print(f"  {'':18s} bias {td[bi]['dtype'].__name__} scale == s_in*s_w: "
              f"{np.allclose(sb, si * sw, rtol=1e-6, atol=0)} | |b - q_b*s_b| max "
              f"{np.max(berr / sb):.3f} bias-steps = {np.max(berr):.2e} abs; output step "
              f"{td[o['outputs'][0]]['quantization'][0]:.2e}")

# Unrounded kernels: what does the converter itself do (scale from max|w|/127, round)?
for l, axis in ((conv, -1), (dw, 2), (dense, -1)):
    k = rng.normal(0, 0.4, l.kernel.shape).astype(np.float32)
    l.set_weights([k, l.get_weights()[1]])
tfl = convert_int8(model, calib)
it = interp(tfl)
td = tensors(it)
print("== unrounded float kernels, plain converter:")
for o, l, axis in zip([o for o in it._get_ops_details() if o["op_name"] in
                       ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")],
                      (conv, dw, dense), (-1, 2, -1)):
    wi = o["inputs"][1]
    _, q, s = quantize_kernel(l.get_weights()[0], axis)
    qk = q.transpose(3, 0, 1, 2) if q.ndim == 4 else q.T
    w = it.get_tensor(wi)
    sw, _, _ = qparams(td[wi])
    print(f"  {o['op_name']:18s} int8 == round(w/(max|w|/127)): {np.array_equal(qk, w)}  "
          f"(#diff {int(np.sum(qk != w))}), scale rel diff {np.max(np.abs(sw - s) / s):.1e}")
