import time
import numpy as np
def interleaved_light(runners, rounds=30, per_round=10):
    names = list(runners)
    samples = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            for _ in range(per_round):
                t = time.perf_counter_ns(); runners[n]()
                samples[n].append((time.perf_counter_ns() - t) / 1e6)
    return {n: s for n, s in samples.items()}
