"""Q3: cheaper forms of the (x - mean) / std normalisation on 224x224x3, single-op models,
float32 vs int8 (int8 io), interleaved, 1 thread. Cost = median - median(tiny baseline).
Run with `import noamx_guard` first for the AMX-blocked numbers."""
from common import *
from micro_lib import conv_fb
from keras import layers, ops

mean = np.array([0.485, 0.456, 0.406], np.float32) * 255
std = np.array([0.229, 0.224, 0.225], np.float32) * 255


def dw_1x1(x):  # the project's ImageNormalization form
    k = ops.convert_to_tensor((1 / std).reshape(1, 1, 3, 1))
    return ops.depthwise_conv(x, k, 1, "valid") + (-mean / std)


def dw_1x1_wide(x):  # same maths on a (1, 224, 1, 672) view: 672 channels, 1 pixel per row
    y = ops.reshape(x, (1, 224, 1, 672))
    k = ops.convert_to_tensor(np.tile(1 / std, 224).reshape(1, 1, 672, 1))
    y = ops.depthwise_conv(y, k, 1, "valid") + np.tile(-mean / std, 224)
    return ops.reshape(y, (1, 224, 224, 3))


def mul_add(x):  # broadcast MUL + ADD
    return x * (1 / std) + (-mean / std)


cases = {
    "baseline ADD (1,8)": (lambda a, b: a + b, [(8,), (8,)]),
    "DW1x1 224x224x3 (current)": (dw_1x1, [(224, 224, 3)]),
    "RESHAPE->DW1x1 224x1x672->RESHAPE": (dw_1x1_wide, [(224, 224, 3)]),
    "MUL+ADD broadcast (3,)": (mul_add, [(224, 224, 3)]),
}
its, info = {}, {}
for name, (b, shapes) in cases.items():
    for prec in ("f32", "i8"):
        fb = conv_fb(b, shapes, prec)
        it = interp(fb, 1)
        its[(name, prec)] = it.invoke
        info[(name, prec)] = (tflite.op_histogram(fb), delegation(it)[1])
res = interleaved(its, rounds=30, per_round=20)
base = {p: res[("baseline ADD (1,8)", p)][0] for p in ("f32", "i8")}
print("| form | f32 us | i8 us | f32 ops | i8 ops | i8 outside XNNPACK |\n|---|---|---|---|---|---|")
for name in list(cases)[1:]:
    print(f"| {name} | {(res[(name,'f32')][0]-base['f32'])*1000:.1f} | "
          f"{(res[(name,'i8')][0]-base['i8'])*1000:.1f} | {info[(name,'f32')][0]} | "
          f"{info[(name,'i8')][0]} | {info[(name,'i8')][1] or '-'} |")
