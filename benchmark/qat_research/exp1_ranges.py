"""Q1: FakeQuant (min, max) -> (scale, zero_point) in the int8 .tflite, and the value grid.

Model: x -> FQ(lo, hi) -> 1x1 identity conv -> FQ(lo, hi), float io: the first op is a QUANTIZE
(float -> int8) with the FakeQuant's range; the identity conv requantizes with multiplier exactly 1,
so the float output is (q - zp) * scale of the quantized input. We compare it with TF FakeQuant(x)
for random x, and (for power-of-two scales, where they are exact in float32) for x on half-steps.
"""
from common import *  # noqa

rng = np.random.default_rng(0)
C = 4
ranges = [(0.0, 6.0), (-1.3, 2.7), (-3.1, 0.2), (0.5, 4.0), (-5.0, -1.0), (-0.0123, 0.9871),
          (-2.0, 2.0), (-1.0, 1.0), (-3.0, 3.0), (-0.75, 0.75), (-0.3, 0.3), (0.0, 1.0),
          (-128.0, 127.0), (-128 / 64, 127 / 64), (-100.5 / 64, 154.5 / 64),
          (-0.5 * 3 / 255 * 7, 3.0 - 0.5 * 3 / 255 * 7)]
ranges += [tuple(sorted(rng.normal(0, 3, 2))) for _ in range(6)]


def converter_qparams(lo, hi):
    """Matches every row: scale = (max - min) / 255 (double, stored as float32);
    uint8 zero point = round_half_up(-min / scale) clamped to [0, 255]; int8 zp = that - 128."""
    lo, hi = float(lo), float(hi)
    scale = (hi - lo) / 255.0
    z = int(np.clip(np.floor(-lo / scale + 0.5), 0, 255))
    return scale, z - 128


def rule_of(r, q, z):
    """Which rounding of r = x/scale reproduces q (int8 incl. zp), among exact half-steps."""
    cands = {"half_away": np.sign(r) * np.floor(np.abs(r) + 0.5), "half_up": np.floor(r + 0.5),
             "half_even": np.round(r)}
    ok = [k for k, c in cands.items() if np.all(np.clip(c + z, -128, 127) == q)]
    return "/".join(ok) or "none"


print(f"{'min':>8} {'max':>8} | {'tfl scale':>11} {'zp':>4} | {'formula':>11} {'zp':>4} | "
      f"{'TF-f32 zp':>9} | FQ!=TFL rand (builtin,ref,xnn) | ties: FQ!=TFL; TFL rule builtin,ref,xnn")
for lo, hi in ranges:
    inp = keras.Input((8, 8, C))
    conv = layers.Conv2D(C, 1, use_bias=False)
    y = conv(FQ(lo, hi)(inp))
    conv.set_weights([np.eye(C, dtype=np.float32)[None, None]])
    m = keras.Model(inp, FQ(lo, hi)(y))
    rep = rng.uniform(lo - 1, hi + 1, (4, 8, 8, C)).astype(np.float32)
    tfl = convert_int8(m, rep, io_type="float32")
    it0 = interp(tfl)
    deq = [o for o in it0._get_ops_details() if o["op_name"] == "DEQUANTIZE"][0]
    s, z = tensors(it0)[deq["inputs"][0]]["quantization"]
    pow2 = s == 2.0 ** np.round(np.log2(s))
    ties = ((np.arange(-128, 128) + 0.5 - z) * s).astype(np.float32).reshape(1, 8, 8, C)
    rand = rng.uniform(lo - 1, hi + 1, (10, 8, 8, C)).astype(np.float32)
    mism, rules, tie_m = [], [], 0
    for kind in ("builtin", "ref", "xnnpack"):
        it = interp(tfl, kind=kind, preserve=False)
        n = 0
        for v in rand:
            out = run_raw(it, v[None])[0]
            n += int(np.sum(np.round((fq(v[None], lo, hi).numpy()[0] - out) / s) != 0))
        mism.append(n)
        if pow2:
            out = run_raw(it, ties)[0]
            q = np.round(out / s + z)
            rules.append(rule_of(ties[0].astype(np.float64) / s, q, z))
            tie_m = int(np.sum(np.round((fq(ties, lo, hi).numpy()[0] - out) / s) != 0))
    fs, fz = converter_qparams(lo, hi)
    # TF's own zero point: where does FakeQuant put 0.0 relative to min?  q(0) = zp
    tf_zp = int(np.round(-fq(np.array([-1e9], np.float32), lo, hi).numpy()[0] / s)) - 128
    tie_txt = f"{tie_m}/256; {','.join(rules)}" if pow2 else "-"
    print(f"{lo:8.4f} {hi:8.4f} | {s:11.8g} {z:4d} | {fs:11.8g} {fz:4d} | {tf_zp:9d} | "
          f"{mism} of {rand.size} | {tie_txt}")
