"""Q1: per-stage float32 vs int8 time from prefix models (cut the fused Keras model at stage
boundaries, convert each prefix both ways, time all interleaved; stage = diff of prefixes).
int8 prefixes: uint8 input (as shipped), int8 output (no trailing requantize in the prefix)."""
import sys
from common import *

width = sys.argv[1] if len(sys.argv) > 1 else "050"
m = deploy(width)
names = [l.name for l in m.layers]
cuts = ["preprocessing", "act1"]
for g in range(9):
    cuts.append([n for n in names if n.startswith(f"blocks.{g}.")][-1])
cuts += ["blocks.9.0.act1", "global_pool", "act2", names[-1]]
runners, info = {}, {}
for c in cuts:
    sub = keras.Model(m.input, m.get_layer(c).output)
    f32 = convert_f32(sub)
    i8 = convert_int8(sub, "uint8", "int8")
    for tag, fb in (("f32", f32), ("i8", i8)):
        it = interp(fb, 1)
        runners[(c, tag)] = it.invoke
        info[(c, tag)] = (delegation(it), tflite.op_histogram(fb), tuple(sub.output.shape))
    print("converted", c, info[(c, "i8")][1], flush=True)
res = interleaved({k: v for k, v in runners.items()}, rounds=40, per_round=10)
print(f"\nRepGhostNet{width} prefixes, 1 thread, medians of 400 runs interleaved\n")
print(f"| cut after | output | f32 prefix | i8 prefix | f32 stage | i8 stage | i8/f32 stage | i8 ops outside XNNPACK |")
print("|---|---|---|---|---|---|---|---|")
pf = pi = 0.0
for c in cuts:
    f, i = res[(c, "f32")][0], res[(c, "i8")][0]
    sf, si = f - pf, i - pi
    print(f"| {c} | {info[(c,'f32')][2][1:]} | {f:.3f} | {i:.3f} | {sf:.3f} | {si:.3f} | {si/sf if sf > 0.005 else float('nan'):.2f} | {info[(c,'i8')][0]} |")
    pf, pi = f, i
