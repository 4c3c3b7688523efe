"""Q2 (a-f): single-op models at the shapes RepGhostNet050 uses at 224x224, float32 vs int8
(int8 in/out, so no QUANTIZE), all interleaved, 1 thread. Cost = median - median(baseline
tiny model) (invoke overhead). Also reports whether XNNPACK took the op."""
from micro_lib import *  # noqa: F403 (conv_fb, dw, explicit_pad_dw; common, layers, ops)

cases = {
    "baseline ADD (1,8)": (lambda a, b: a + b, [(8,), (8,)]),
    "DW1x1 224x224x3 (normalisation)": (dw(1), [(224, 224, 3)]),
    "stem PAD+CONV3x3s2 224x224x3->8": (lambda x: layers.Conv2D(8, 3, 2, padding="valid")(
        ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])), [(224, 224, 3)]),
    "stem CONV3x3s2 same 224x224x3->8": (lambda x: layers.Conv2D(8, 3, 2, padding="same")(x),
                                         [(224, 224, 3)]),
    "PAD 224x224x3": (lambda x: ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), [(224, 224, 3)]),
    "PAD 112x112x12": (lambda x: ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), [(112, 112, 12)]),
    "PAD+DW3x3s2 112x112x12": (explicit_pad_dw(3, 2), [(112, 112, 12)]),
    "DW3x3s2 same 112x112x12": (dw(3, 2), [(112, 112, 12)]),
    "DW3x3 112x112x4": (dw(), [(112, 112, 4)]),
    "DW3x3 112x112x8": (dw(), [(112, 112, 8)]),
    "DW3x3 112x112x12": (dw(), [(112, 112, 12)]),
    "DW3x3 112x112x16": (dw(), [(112, 112, 16)]),
    "DW3x3 112x112x24": (dw(), [(112, 112, 24)]),
    "DW3x3 112x112x32": (dw(), [(112, 112, 32)]),
    "DW3x3 56x56x20": (dw(), [(56, 56, 20)]),
    "DW3x3 56x56x64": (dw(), [(56, 56, 64)]),
    "DW3x3 14x14x120": (dw(), [(14, 14, 120)]),
    "CONV1x1 112x112x8->4": (lambda x: layers.Conv2D(4, 1)(x), [(112, 112, 8)]),
    "CONV1x1 112x112x8->12": (lambda x: layers.Conv2D(12, 1)(x), [(112, 112, 8)]),
    "CONV1x1 56x56x12->20": (lambda x: layers.Conv2D(20, 1)(x), [(56, 56, 12)]),
    "CONV1x1 14x14x40->120": (lambda x: layers.Conv2D(120, 1)(x), [(14, 14, 40)]),
    "ADD 112x112x8": (lambda a, b: a + b, [(112, 112, 8), (112, 112, 8)]),
    "ADD 56x56x12": (lambda a, b: a + b, [(56, 56, 12), (56, 56, 12)]),
    "MUL bcast 28x28x32*(1,1,32)": (lambda a, b: a * b, [(28, 28, 32), (1, 1, 32)]),
    "MUL bcast 14x14x120*(1,1,120)": (lambda a, b: a * b, [(14, 14, 120), (1, 1, 120)]),
    "MEAN 28x28x20": (lambda x: ops.mean(x, axis=(1, 2), keepdims=True), [(28, 28, 20)]),
    "MEAN 28x28x32": (lambda x: ops.mean(x, axis=(1, 2), keepdims=True), [(28, 28, 32)]),
    "MEAN 14x14x120": (lambda x: ops.mean(x, axis=(1, 2), keepdims=True), [(14, 14, 120)]),
    "MEAN 7x7x480": (lambda x: ops.mean(x, axis=(1, 2), keepdims=True), [(7, 7, 480)]),
    "AVGPOOL 28x28x32": (lambda x: ops.average_pool(x, (28, 28)), [(28, 28, 32)]),
    "AVGPOOL 14x14x120": (lambda x: ops.average_pool(x, (14, 14)), [(14, 14, 120)]),
    "AVGPOOL 7x7x480": (lambda x: ops.average_pool(x, (7, 7)), [(7, 7, 480)]),
}
its, info = {}, {}
for name, (b, shapes) in cases.items():
    for prec in ("f32", "i8"):
        fb = conv_fb(b, shapes, prec)
        it = interp(fb, 1)
        its[(name, prec)] = it.invoke
        info[(name, prec)] = (tflite.op_histogram(fb), delegation(it))
res = interleaved(its, rounds=30, per_round=20)
base = {p: res[("baseline ADD (1,8)", p)][0] for p in ("f32", "i8")}
print("1 thread; us = median - baseline tiny model; 600 runs each, interleaved\n")
print("| op | f32 us | i8 us | i8/f32 | i8 ops | i8 outside XNNPACK |")
print("|---|---|---|---|---|---|")
for name in cases:
    f = (res[(name, "f32")][0] - base["f32"]) * 1000
    i = (res[(name, "i8")][0] - base["i8"]) * 1000
    print(f"| {name} | {f:.1f} | {i:.1f} | {i / f if f > 1 else float('nan'):.2f} | "
          f"{info[(name, 'i8')][0]} | {info[(name, 'i8')][1][1] or '-'} |")
print(f"\nbaseline medians (ms): f32 {base['f32']:.4f}, i8 {base['i8']:.4f}")
