"""Q5: end to end. RepGhostNet050 deploy form (48x48, 4 classes, randomized BN before fuse) rebuilt
as a flat functional fake-quant model that shares the deploy layers' weights, with a FakeQuant on
every tensor that becomes a TFLite tensor (none between a conv and its ReLU; none after PAD or
Flatten), Normalization folded into the stem conv (raw input padded with a scalar pixel value),
kernels rounded to the per-channel int8 grid, biases rounded to int32 (scale s_in * s_w),
explicit hard-sigmoid relu6(x + 3) * (1/6) with FakeQuants after relu6 and after the MUL.

Usage: python exp5_e2e.py [--no-bias-round] [--no-nudge] [--norm-dw]
--norm-dw: keep the normalisation as the project's ImageNormalization does it (a 1x1 depthwise conv
with per-channel weight 1/std and bias -mean/std) with a FakeQuant after it, zero-padded stem.
"""
import sys

from qsim import *  # noqa
import repghost_tf
from repghost_tf.export import tflite as T
from repghost_tf.models.layers import ConvBN, RepGhostBottleneck, RepGhostModule, SqueezeExcite
from helpers import randomize_batchnorms

BIAS_ROUND = "--no-bias-round" not in sys.argv
NUDGE = "--no-nudge" not in sys.argv
NORM_DW = "--norm-dw" in sys.argv
S = 48
PAD_PIXEL = 115.0  # ~ the mean pixel (123.7, 116.3, 103.5) averaged; exact on the uint8 grid

keras.utils.set_random_seed(0)
train_form = repghost_tf.RepGhostNet050(input_shape=(S, S, 3), classes=4,
                                        classifier_activation=None)
randomize_batchnorms(train_form, seed=0)
deploy = repghost_tf.fuse(train_form)

pairs = []  # (layer with kernel, FQR feeding it)


class Net:
    def __init__(self):
        self.fqrs = []

    def fq(self, x, name):
        l = FQR(name=f"fq_{len(self.fqrs):03d}_{name}")
        self.fqrs.append(l)
        return l(x)

    def conv(self, layer, x, xin_fq, pad=0, name="", relu=False, pad_value=0.0):
        if pad:
            x = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], constant_values=pad_value)
        y = layer(x)
        pairs.append((layer, xin_fq))
        if relu:
            y = ops.relu(y)
        return y

    def convbn(self, l, x, xin_fq, relu=False, name=""):
        y = self.conv(l.conv, x, xin_fq, pad=l._explicit_padding, relu=relu)
        return self.fq(y, name or l.name)

    def ghost(self, m, x, xin_fq):
        x1 = self.convbn(m.primary_conv, x, xin_fq, relu=m.relu, name=m.name + ".pw")
        f1 = self.fqrs[-1]
        y = self.conv(m.cheap_operation, x1, f1, relu=m.relu)
        return self.fq(y, m.name + ".dw"), self.fqrs[-1]

    def se(self, s, x, xin_fq):
        z = self.fq(ops.mean(x, axis=(1, 2), keepdims=True), s.name + ".mean")
        z = self.fq(self.conv(s.conv_reduce, z, self.fqrs[-1], relu=True), s.name + ".reduce")
        z = self.fq(self.conv(s.conv_expand, z, self.fqrs[-1]), s.name + ".expand")
        z = self.fq(ops.relu6(z + 3.0), s.name + ".relu6")
        g = self.fq(z * (1.0 / 6.0), s.name + ".gate")
        return self.fq(x * g, s.name + ".mul"), self.fqrs[-1]

    def bottleneck(self, b, x, xin_fq):
        inputs, in_fq = x, xin_fq
        x, f = self.ghost(b.ghost1, x, xin_fq)
        if b.conv_dw is not None:
            x = self.convbn(b.conv_dw, x, f)
            f = self.fqrs[-1]
        if b.se is not None:
            x, f = self.se(b.se, x, f)
        x, f = self.ghost(b.ghost2, x, f)
        if not b.identity_shortcut:
            sc = self.convbn(b.shortcut_dw, inputs, in_fq)
            sc = self.convbn(b.shortcut_pw, sc, self.fqrs[-1])
            return self.fq(x + sc, b.name + ".add"), self.fqrs[-1]
        return self.fq(x + inputs, b.name + ".add"), self.fqrs[-1]


def build_flat():
    net = Net()
    inp = keras.Input((S, S, 3), name="image")
    x = net.fq(inp, "input")  # range pinned to [0, 255]
    f = net.fqrs[-1]
    norm = deploy.get_layer("preprocessing")
    mean = np.array(norm.mean, np.float64).reshape(-1)
    std = (np.array(norm.std, np.float64).reshape(-1) if hasattr(norm, "std")
           else np.sqrt(np.array(norm.variance, np.float64).reshape(-1)))
    stem = deploy.get_layer("stem")
    k, b = stem.conv.get_weights()
    if NORM_DW:
        nconv = layers.DepthwiseConv2D(1, name="norm_dw")
        nconv.build((None, None, None, 3))
        nconv.set_weights([(1 / std).reshape(1, 1, 3, 1).astype(np.float32),
                           (-mean / std).astype(np.float32)])
        x = net.fq(net.conv(nconv, x, f), "normalised")
        x = net.convbn(stem, x, net.fqrs[-1], relu=True, name="stem")
        return finish(net, inp, x)
    stem_conv = layers.Conv2D(k.shape[-1], 3, strides=2, padding="valid", name="stem_folded")
    stem_conv.build((None, None, None, 3))
    stem_conv.set_weights([(k / std[None, None, :, None]).astype(np.float32),
                           (b - np.einsum("hwio,i->o", k, mean / std)).astype(np.float32)])
    x = net.fq(net.conv(stem_conv, x, f, pad=1, relu=True, pad_value=PAD_PIXEL), "stem")
    return finish(net, inp, x)


def finish(net, inp, x):
    f = net.fqrs[-1]
    for layer in deploy.layers:
        if isinstance(layer, RepGhostBottleneck):
            x, f = net.bottleneck(layer, x, f)
    last = deploy.get_layer("blocks.9.0")
    x = net.convbn(last, x, f, relu=True)
    x = net.fq(ops.mean(x, axis=(1, 2), keepdims=True), "pool")
    x = net.fq(net.conv(deploy.get_layer("conv_head"), x, net.fqrs[-1], relu=True), "head")
    f = net.fqrs[-1]
    x = layers.Flatten()(x)
    x = net.fq(net.conv(deploy.get_layer("classifier"), x, f), "logits")
    return keras.Model(inp, x), net


def float_reference(images):
    """The deploy model with the padding change of the folded stem, float (no quantization)."""
    return deploy.predict(images, verbose=0)


def images(n, seed):
    r = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:S, 0:S] / S
    for i in range(n):
        kind = i % 3
        if kind == 0:
            im = r.uniform(0, 255, (S, S, 3))
        elif kind == 1:  # smooth, structured
            a = r.uniform(-1, 1, (3, 3))
            im = 127.5 + 127.5 * np.sin(np.pi * (a[:, 0] * 3 * yy[..., None] + a[:, 1] * 3 *
                                                 xx[..., None] + a[:, 2]))
        else:  # blocks + noise
            im = np.kron(r.uniform(0, 255, (6, 6, 3)), np.ones((8, 8, 1))) + r.normal(0, 20, (S, S, 3))
        out.append(np.clip(np.round(im), 0, 255))
    return np.stack(out).astype(np.float32)


model, net = build_flat()
# kernels to the per-channel int8 grid
for layer, _ in pairs:
    k, b = layer.get_weights()
    axis = 2 if isinstance(layer, layers.DepthwiseConv2D) else -1
    layer.set_weights([quantize_kernel(k, axis)[0], b])
calib = images(32, 1)
calib[0, 0, 0], calib[0, 0, 1] = 0.0, 255.0
test = images(200, 2)
calibrate(model, calib, nudged=NUDGE)
net.fqrs[0].rng = (0.0, 255.0)


def s_of(fqr):
    lo, hi = fqr.rng
    return float(np.float32((hi - lo) / 255.0))


if BIAS_ROUND:
    for layer, fqr in pairs:
        k, b = layer.get_weights()
        axis = 2 if isinstance(layer, layers.DepthwiseConv2D) else -1
        sw = quantize_kernel(k, axis)[2].astype(np.float64)
        sb = s_of(fqr) * sw
        layer.set_weights([k, (np.round(b / sb) * sb).astype(np.float32)])

tfl = T.convert(model, "int8", image_size=S, io_type="uint8", representative_data=calib,
                ranges="minmax")
hist = T.op_histogram(tfl)
print("ops:", hist)
print("FakeQuants:", len(net.fqrs), " QUANTIZE/DEQUANTIZE:", hist.get("QUANTIZE", 0),
      hist.get("DEQUANTIZE", 0))
ref = model.predict(test, verbose=0, batch_size=50)
flt = float_reference(test)
it0 = interp(tfl)
od = it0.get_output_details()[0]
so, zo = od["quantization"]
exp_codes = np.round(ref / so) + zo
print(f"output scale {so:.5g} zp {zo};  fake-quant vs float deploy top-1 agreement "
      f"{np.mean(ref.argmax(1) == flt.argmax(1)):.3f}")
for kind in ("xnnpack", "builtin", "ref"):
    it = interp(tfl, kind=kind, preserve=False)
    got = np.stack([run_raw(it, t[None])[0] for t in test]).astype(np.int32)
    d = np.abs(got - exp_codes)
    deq = (got - zo) * so
    top1 = np.mean(deq.argmax(1) == ref.argmax(1))
    # ties in quantized logits: compare argmax sets
    print(f"[{kind:8s}] top-1 agreement {top1:.3f} | logits within 1 step {np.mean(d <= 1):.4f}"
          f" | exact {np.mean(d == 0):.4f} | max step diff {int(d.max())}")

# first divergence, layer by layer (builtin kernels; XNNPACK hides intermediates)
it = interp(tfl, kind="builtin", preserve=True)
td = it.get_tensor_details()
probe = keras.Model(model.inputs, [l.output for l in net.fqrs])
acts = probe.predict(test[:20], verbose=0, batch_size=20)
rows = []
matched = 0
outs_idx = [o["outputs"][0] for o in it._get_ops_details()]
tdi = {t["index"]: t for t in td}
used = set()
for l, a in zip(net.fqrs, acts):
    lo, hi = l.rng
    sf = float(np.float32((hi - lo) / 255.0))
    zf = int(np.floor(-lo / sf + 0.5)) - 128
    cands = [tdi[i] for i in outs_idx if i not in used and tdi[i]["dtype"] == np.int8
             and tuple(tdi[i]["shape"][1:]) == tuple(a.shape[1:])
             and abs(tdi[i]["quantization"][0] - sf) <= 1e-5 * sf
             and tdi[i]["quantization"][1] == zf]
    if l is net.fqrs[0]:  # the model input after QUANTIZE uint8 -> int8
        cands = [tdi[outs_idx[0]]]
    tt = cands[0] if cands else None
    if tt is not None:
        used.add(tt["index"])
    rows.append((l, a, tt))
    matched += tt is not None
print(f"matched {matched}/{len(net.fqrs)} FakeQuants to TFLite tensors by name")
diffs = {l.name: [] for l in net.fqrs}
for i, t in enumerate(test[:20]):
    run_raw(it, t[None])
    for l, a, tt in rows:
        if tt is None:
            continue
        s, z = tt["quantization"]
        q = it.get_tensor(tt["index"])[0].astype(np.int32)
        diffs[l.name].append(np.abs(q - (np.round(a[i] / s) + z)))
print(f"{'FakeQuant':40s} {'frac !=':>8s} {'max':>4s}")
first = None
for l, a, tt in rows:
    if tt is None:
        print(f"{l.name:40s} (no tensor)")
        continue
    d = np.stack(diffs[l.name])
    frac, mx = float(np.mean(d > 0)), int(d.max())
    if first is None and frac > 0:
        first = l.name
    print(f"{l.name:40s} {frac:8.4f} {mx:4d}")
print("first diverging tensor (builtin kernels):", first)
