"""Driver: alternates processes amx / noamx (6 each) over the same files; pools the samples
of each mode and reports medians. argv[1] = threads."""
import json, subprocess, sys, glob
import numpy as np
threads = sys.argv[1] if len(sys.argv) > 1 else "1"
import os
files = sorted(glob.glob(os.environ.get("AB_GLOB", "rg*_f32.tflite")) + glob.glob(os.environ.get("AB_GLOB2", "rg*_i8.tflite")) + ([] if os.environ.get("AB_GLOB") else glob.glob("micro_*.tflite")))
pool = {m: {f: [] for f in files} for m in ("amx", "noamx")}
for rep in range(6):
    for mode in (("amx", "noamx") if rep % 2 == 0 else ("noamx", "amx")):
        out = subprocess.run([sys.executable, "amx_time.py", mode, threads, *files],
                             capture_output=True, text=True)
        if out.returncode:
            print(mode, "failed rc", out.returncode, out.stderr[-2000:]); sys.exit(1)
        if rep == 0:
            print(mode, "stderr:", [l for l in out.stderr.splitlines() if "arch_prctl" in l])
        res = json.loads(out.stdout.strip().splitlines()[-1])["res"]
        for f in files:
            pool[mode][f] += res[f]
print(f"\n{threads} thread(s); pooled medians over 6 alternating processes per mode (900 runs each)")
print("| file | AMX allowed (ms) | AMX blocked (ms) | blocked/allowed |")
print("|---|---|---|---|")
for f in files:
    a, b = np.median(pool["amx"][f]), np.median(pool["noamx"][f])
    print(f"| {f} | {a:.3f} | {b:.3f} | {b / a:.2f} |")
