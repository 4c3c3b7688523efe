"""Q2 (a,b,c,d,e): full-model A/B variants, all interleaved, 1 thread.
 io_*      : int8 model with uint8 / int8 / float32 input+output (a: the input QUANTIZE)
 noprep    : include_preprocessing=False (b: the 1x1 depthwise normalisation on 224x224x3)
 avgpool   : SE MEAN and global MEAN -> AVERAGE_POOL_2D (c)
 nose      : squeeze-excite removed entirely (c+d: MEAN + 2 tiny convs + MUL gate)
 samepad   : strided convs with 'same' padding, no PAD op (e)"""
import sys
from variants import *

width = sys.argv[1] if len(sys.argv) > 1 else "050"
mean, std = prep_stats()
cal_norm = (CAL - mean) / std
fbs = {
    "f32 base": convert_variant("base", "f32", width),
    "i8 base io=uint8 (shipped)": convert_variant("base", "i8", width, io="uint8"),
    "i8 base io=int8": convert_variant("base", "i8", width, io="int8"),
    "i8 base io=float32": convert_variant("base", "i8", width, io="float32"),
    "f32 noprep": convert_variant("base", "f32", width, prep=False),
    "i8 noprep io=int8": convert_variant("base", "i8", width, prep=False, io="int8", cal=cal_norm,
                                         pixel_range=None),
    "f32 avgpool": convert_variant("avgpool", "f32", width),
    "i8 avgpool": convert_variant("avgpool", "i8", width),
    "f32 nose": convert_variant("nose", "f32", width),
    "i8 nose": convert_variant("nose", "i8", width),
    "f32 samepad": convert_variant("samepad", "f32", width),
    "i8 samepad": convert_variant("samepad", "i8", width),
}
its = {}
for n, fb in fbs.items():
    its[n] = interp(fb, 1)
    print(f"{n:30s} ops={tflite.op_histogram(fb)}\n{'':30s} xnnpack partitions/outside={delegation(its[n])}")
res = interleaved({n: it.invoke for n, it in its.items()}, rounds=40, per_round=10)
print(f"\nRepGhostNet{width}, 1 thread, 400 runs each, interleaved")
print(fmt(res, "f32 base"))
