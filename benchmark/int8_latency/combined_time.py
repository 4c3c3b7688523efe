"""Times comb_*.tflite interleaved, 1 thread; prefix `import noamx_guard` for AMX blocked.
Also checks widenorm outputs match base (same random weights? no: separate builds) -> only
checks the normalisation maths on its own in check_widenorm.py."""
import glob
from common import *
for width in ("050", "100"):
    files = sorted(glob.glob(f"comb_{width}_*.tflite"))
    its = {f[5:-7]: interp(open(f, "rb").read(), 1) for f in files}
    print({n: delegation(it) for n, it in its.items()})
    runners = {n: it.invoke for n, it in its.items()}
    res = interleaved(runners, rounds=25, per_round=10)
    print(fmt(res, f"{width}_f32_base"), "\n")
