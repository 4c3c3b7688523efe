"""Q2: where do the conv/depthwise off-by-one codes come from?

For one CONV_2D / DEPTHWISE_CONV_2D (+bias +ReLU) export we compute the int32 accumulator exactly
from the .tflite's own int8 weights / int32 bias and compare four simulations with each kernel:
  A  float fake-quant Keras model (float bias)
  B  float, but bias rounded to int32 with scale s_in * s_w[c]     (cheap to do in QAT)
  C  integer acc, requantized in double: round_half_away(acc * s_in*s_w/s_out) (exact real)
  D  TFLite fixed-point: QuantizeMultiplier + SaturatingRoundingDoublingHighMul + RoundingDivideByPOT
  E  XNNPACK-style fp32: rint(float32(acc) * float32(s_in*s_w/s_out))  (round half even)
"""
import sys

from exp2_ops import *  # noqa


def quantize_multiplier(m):
    """TFLite QuantizeMultiplier: m = q * 2^(shift-31), q in [2^30, 2^31)."""
    if m == 0:
        return 0, 0
    frac, shift = np.frexp(m)
    q = int(np.round(frac * (1 << 31)))
    if q == (1 << 31):
        q //= 2
        shift += 1
    return q, int(shift)


def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul (int64 numpy)."""
    ab = a.astype(np.int64) * np.int64(b)
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    return ((ab + nudge) // (1 << 31)).astype(np.int64) if False else _div_trunc(ab + nudge, 1 << 31)


def _div_trunc(a, b):
    q = np.abs(a) // b
    return np.where(a < 0, -q, q)


def rdbpot(x, exponent):
    """RoundingDivideByPOT: round half away from zero of x / 2^exponent."""
    if exponent == 0:
        return x
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> exponent) + (remainder > threshold).astype(np.int64)


def tflite_requant(acc, m):
    q, shift = quantize_multiplier(m)
    left = max(shift, 0)
    right = max(-shift, 0)
    return rdbpot(srdhm(acc * (1 << left), q), right)


def analyse(name):
    build, shape = CASES[name]
    inp = keras.Input(shape)
    model = keras.Model(inp, build(inp))
    calib = rng.normal(0.3, 1.0, (16, *shape)).astype(np.float32)
    calibrate(model, calib)
    tfl = convert_int8(model, calib, io_type="int8")
    it = interp(tfl)
    td = tensors(it)
    op = [o for o in it._get_ops_details() if o["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")][0]
    xi, wi, bi = op["inputs"]
    w = it.get_tensor(wi).astype(np.float64)
    b = it.get_tensor(bi).astype(np.float64)
    sw, _, wax = qparams(td[wi])
    sb, _, _ = qparams(td[bi])
    si, zi = td[xi]["quantization"]
    so, zo = td[op["outputs"][0]]["quantization"]
    idet, odet = it.get_input_details()[0], it.get_output_details()[0]
    q_in = rng.integers(-128, 128, (40, *shape)).astype(np.int8)
    x = ((q_in.astype(np.float32) - zi) * np.float32(si)).astype(np.float32)
    keras_out = model.predict(x, verbose=0, batch_size=40)
    # Keras weights -> bias-rounded variant
    conv = [l for l in model.layers if isinstance(l, (layers.Conv2D, layers.DepthwiseConv2D))][0]
    kw, kb = conv.get_weights()
    bscale = si * sw
    # weights check (Q3)
    axis = 2 if op["op_name"] == "DEPTHWISE_CONV_2D" else -1
    _, qk, kscale = quantize_kernel(kw, axis)
    tfl_w = it.get_tensor(wi)
    qk_t = qk.transpose(3, 0, 1, 2) if op["op_name"] == "CONV_2D" else qk.transpose(3, 0, 1, 2)
    if op["op_name"] == "DEPTHWISE_CONV_2D":  # keras (kh, kw, C, 1) -> tflite (1, kh, kw, C)
        qk_t = qk.transpose(3, 0, 1, 2)
    wt_equal = np.array_equal(qk_t, tfl_w)
    print(f"[{name}] weights: tflite {tfl_w.shape} axis {wax}, int8 == round(w/(max|w|/127)): "
          f"{wt_equal}; scale rel diff {np.max(np.abs(sw - kscale) / kscale):.1e}; "
          f"bias scale == s_in*s_w: {np.allclose(sb, bscale, rtol=1e-6)}; "
          f"bias rounding |b - q*s| max = {np.max(np.abs(kb - b * sb) / sb):.3f} bias steps")
    kb_r = (np.round(kb / bscale) * bscale).astype(np.float32)
    conv.set_weights([kw, kb_r])
    keras_out_b = model.predict(x, verbose=0, batch_size=40)
    conv.set_weights([kw, kb])
    # exact integer accumulator (float64 on integers is exact here)
    xin = q_in.astype(np.float64) - zi
    has_pad = any(o["op_name"] == "PAD" for o in it._get_ops_details())
    if has_pad:
        xin = np.pad(xin, [[0, 0], [1, 1], [1, 1], [0, 0]])  # pad value = zp -> 0 after -zi
    stride = 2 if has_pad else 1
    pad = "VALID" if has_pad else "SAME"
    if op["op_name"] == "CONV_2D":
        k = w.transpose(1, 2, 3, 0)  # (O,kh,kw,I) -> HWIO
        acc = tf.nn.conv2d(xin, k, stride, pad).numpy()
    else:
        k = w.transpose(1, 2, 3, 0)  # (1,kh,kw,C) -> (kh,kw,C,1)
        acc = tf.nn.depthwise_conv2d(xin, k, [1, stride, stride, 1], pad).numpy()
    acc = np.round(acc + b).astype(np.int64)
    M = (si * sw.astype(np.float64)) / so
    relu = odet  # relu fused: clamp at zo (activation min)
    outs = {}
    # C: exact real
    v = acc * M
    outs["C exact"] = np.sign(v) * np.floor(np.abs(v) + 0.5) + zo
    outs["D tflite fixed"] = np.stack([tflite_requant(acc[..., c], M[c]) for c in range(len(M))], -1) + zo
    outs["E fp32 rint"] = np.rint((acc.astype(np.float32) * M.astype(np.float32))) + zo
    outs["A float keras"] = np.round(keras_out / so) + zo
    outs["B float, int32 bias"] = np.round(keras_out_b / so) + zo
    is_relu = "+relu" in name
    lo = zo if is_relu else -128
    got = {}
    for kind in ("builtin", "ref", "xnnpack"):
        iti = interp(tfl, kind=kind, preserve=False)
        o = []
        for q in q_in:
            iti.set_tensor(idet["index"], q[None])
            iti.invoke()
            o.append(iti.get_tensor(odet["index"])[0].astype(np.int64))
        got[kind] = np.stack(o)
    print(f"  {'simulation':22s} " + " ".join(f"{k:>16s}" for k in got))
    for sname, s in outs.items():
        s = np.clip(s, lo, 127)
        cells = []
        for k, g in got.items():
            d = np.abs(g - s)
            cells.append(f"{int((d > 0).sum()):5d} max {int(d.max())}")
        print(f"  {sname:22s} " + " ".join(f"{c:>16s}" for c in cells) + f"   (n={s.size})")


if __name__ == "__main__":
    for name in sys.argv[1:] or ["conv3x3 s1 +b +relu", "conv3x3 s2 pad +b +relu",
                                 "conv3x3 s1 +b (no relu)", "dw3x3 s1 +b +relu",
                                 "dw3x3 s2 pad +b +relu"]:
        analyse(name)
