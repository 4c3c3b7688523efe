"""Q2 (g): 1 vs 2 threads, float32 and shipped int8, RepGhostNet050/100, interleaved in one
process. Prefix with `import noamx_guard` for AMX blocked."""
from common import *
runners = {}
for w in ("050", "100"):
    for p in ("f32", "i8"):
        fb = open(f"rg{w}_{p}.tflite", "rb").read()
        for t in (1, 2):
            runners[f"rg{w} {p} {t}thr"] = interp(fb, t).invoke
res = interleaved(runners, rounds=20, per_round=10)
print(fmt(res))
