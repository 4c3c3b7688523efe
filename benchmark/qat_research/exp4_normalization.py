"""Q4: the input Normalization under int8 export (uint8 input, scale 1, zero point 0).

Variant "norm": raw -> Normalization -> FQ -> pad 1 -> conv3x3 s2 (+b) -> relu -> FQ
    How are SUB/MUL (or DIV) and their constants quantized? Does the FQ'd normalised tensor match
    the Keras FakeQuant simulation, and can a simulation reproduce it?
Variant "norm_sim": same, but the Keras model simulates the converter's quantized constants and
    intermediate SUB output (FakeQuant after SUB at the converter's range).
Variant "fold_mean": Normalization folded into the conv (w / std per input channel, bias - w.mean/std);
    raw input padded with the per-channel mean pixel (exactly equivalent in float).
Variant "fold_scalar": folded, raw input padded with a scalar pixel value (128), changing the
    border semantics slightly (QAT fine-tunes with it).
"""
from qsim import *  # noqa
from repghost_tf.export import tflite as T

rng = np.random.default_rng(4)
S, C = 16, 8
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
conv_k = rng.normal(0, 0.3, (3, 3, 3, C)).astype(np.float32)
conv_b = rng.normal(0, 0.2, C).astype(np.float32)


def pad1(x, value=0.0):
    return ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=value)


class PadMean(layers.Layer):
    """Pads the raw image with the per-channel mean pixel: pad(x - mean) + mean."""

    def call(self, x):
        return pad1(x - MEAN) + MEAN


def build(variant, sub_range=None, consts=None):
    inp = keras.Input((S, S, 3))
    conv = layers.Conv2D(C, 3, strides=2, padding="valid")
    if variant in ("norm", "norm_sim"):
        if variant == "norm":
            x = layers.Normalization(mean=list(MEAN), variance=list(STD ** 2))(inp)
        else:  # the converter's arithmetic: FQ(SUB(x, q(mean))) then FQ(MUL(., q(1/std)))
            qmean, qinv = consts
            x = FQ(*sub_range)(inp - qmean)
            x = x * qinv
        x = FQR()(x)
        y = conv(pad1(x))
        k, b = conv_k, conv_b
    else:
        x = FQR()(inp)  # the raw input: range pinned to [0, 255] below
        if variant == "fold_mean":
            x = PadMean()(x)
        else:
            x = pad1(x, 128.0)
        y = conv(x)
        k = conv_k / STD[None, None, :, None]
        b = conv_b - np.einsum("hwio,i->o", conv_k, MEAN / STD)
    kq, _, _ = quantize_kernel(k, -1)
    conv.set_weights([kq, b.astype(np.float32)])
    y = FQR()(ops.relu(y))
    return keras.Model(inp, y), conv


def images(n, seed):
    r = np.random.default_rng(seed)
    im = r.integers(0, 256, (n, S, S, 3)).astype(np.float32)
    im[0, 0, 0], im[0, 0, 1] = 0.0, 255.0  # the calibration covers 0..255
    return im


def dump(tfl, title):
    it = interp(tfl)
    td = tensors(it)
    print(f"== {title}: ops {T.op_histogram(tfl)}")
    for o in it._get_ops_details():
        ins = []
        for i in o["inputs"]:
            if i < 0:
                continue
            t = td[i]
            sc, zp, _ = qparams(t)
            desc = f"{t['dtype'].__name__}{list(t['shape'])} s={np.round(sc[:3], 6).tolist()} zp={zp[:3].tolist()}"
            if t["name"].find("serving") < 0 and len(t["shape"]) <= 4 and np.prod(t["shape"]) <= 3:
                try:
                    desc += f" val={it.get_tensor(i).tolist()}"
                except ValueError:
                    pass
            ins.append(desc)
        t = td[o["outputs"][0]]
        print(f"   {o['op_name']:12s} in: {' | '.join(ins)}  -> out s={t['quantization'][0]:.6g} "
              f"zp={t['quantization'][1]}")
    return it


def compare(model, tfl, title):
    test = images(100, 99)
    ref = model.predict(test, verbose=0, batch_size=50)
    res = []
    for kind in ("builtin", "xnnpack"):
        it = interp(tfl, kind=kind, preserve=False)
        od = it.get_output_details()[0]
        so, zo = od["quantization"]
        got = np.stack([run_raw(it, t[None])[0] for t in test]).astype(np.int32)
        d = np.abs(got - (np.round(ref / so) + zo))
        res.append(f"{kind}: {int((d > 0).sum())}/{d.size} differ, max {int(d.max())}")
    print(f"   {title} TFLite vs Keras sim: " + "; ".join(res))


calib = images(32, 1)
for variant in ("norm", "fold_mean", "fold_scalar"):
    model, conv = build(variant)
    calibrate(model, calib)
    if variant != "norm":
        fqr_layers(model)[0].rng = (0.0, 255.0)
    tfl = T.convert(model, "int8", image_size=S, io_type="uint8", representative_data=calib,
                    ranges="minmax")
    it = dump(tfl, variant)
    compare(model, tfl, variant)
    if variant == "norm":
        # read the converter's constants and SUB output range, then simulate them
        td = tensors(it)
        opd = it._get_ops_details()
        sub = [o for o in opd if o["op_name"] == "SUB"][0]
        mul = [o for o in opd if o["op_name"] in ("MUL", "DIV")][0]
        cm = sub["inputs"][1]
        sm, zm = td[cm]["quantization"]
        qmean = ((it.get_tensor(cm).astype(np.float32) - zm) * sm).reshape(-1)
        ci = mul["inputs"][1]
        si_, zi_ = td[ci]["quantization"]
        qinv = ((it.get_tensor(ci).astype(np.float32) - zi_) * si_).reshape(-1)
        so_, zo_ = td[sub["outputs"][0]]["quantization"]
        sub_range = ((-128 - zo_) * so_, (127 - zo_) * so_)
        print(f"   mean {MEAN.tolist()} -> int8 {qmean.tolist()};  1/std {(1 / STD).tolist()} -> "
              f"{qinv.tolist()}; SUB out range {sub_range}")
        norm_fqr = fqr_layers(model)
        sim, conv2 = build("norm_sim", sub_range, (qmean, qinv))
        for a, b in zip(fqr_layers(sim), norm_fqr):
            a.rng = b.rng
        conv2.set_weights(conv.get_weights())
        compare(sim, tfl, "norm_sim (quantized constants + FQ after SUB)")
