"""A/B latency of TFLite files in LiteRT (XNNPACK on), interleaved: every round times each file
in turn, in a rotated order, so that a shared machine's slow spells fall on all of them alike.
For before/after comparisons of a graph change, where benchmark.latency's one-file-at-a-time
runs would drift apart.

Usage: python -m benchmark.interleaved --files=before.tflite,after.tflite [--labels=before,after]
           [--threads=1] [--rounds=30] [--runs_per_round=20] [--output=ab.json]
Prints one line per file (median, p25, p75, ratio to the first file); --output also writes them
as JSON with the machine's description.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

from benchmark import export, results_io
from repghost_tf import litert
from repghost_tf.atomic_files import write_text

_FILES = flags.DEFINE_list("files", None, "TFLite files to compare; the first is the reference.")
_LABELS = flags.DEFINE_list("labels", None, "A name per file (default: the file names).")
_THREADS = flags.DEFINE_integer("threads", 1, "Interpreter threads.", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 30, "Rounds; each times every file.", lower_bound=1)
_RUNS = flags.DEFINE_integer("runs_per_round", 20, "Timed runs of a file per round.", lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup_runs", 20, "Untimed runs of each file first.", lower_bound=0)
_OUTPUT = flags.DEFINE_string("output", None, "Also write the results to this JSON file.")


def interleaved(runs: dict, rounds: int, runs_per_round: int) -> dict[str, dict[str, float]]:
    """name -> {median_ms, p25_ms, p75_ms} of `runs` (name -> callable), timed in rounds."""
    names = list(runs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        order = names[shift:] + names[:shift]
        for name in order[::-1] if index % 2 else order:
            for _ in range(runs_per_round):
                start = time.perf_counter_ns()
                runs[name]()
                samples[name].append((time.perf_counter_ns() - start) / 1e6)
    return {
        name: {"median_ms": float(np.median(values)), "p25_ms": float(np.percentile(values, 25)),
               "p75_ms": float(np.percentile(values, 75))}
        for name, values in samples.items()
    }


def main(argv: list[str]) -> None:
    del argv
    files = _FILES.value or []
    labels = _LABELS.value or [os.path.basename(path) for path in files]
    if len(files) < 2:
        sys.exit("error: --files needs at least two .tflite files")
    if len(labels) != len(files) or len(set(labels)) != len(labels):
        sys.exit("error: --labels needs one distinct name per file")
    missing = [path for path in files if not os.path.isfile(path)]
    if missing:
        sys.exit(f"error: no such file: {missing[0]}")
    interpreters = {label: litert.make_interpreter(path, num_threads=_THREADS.value)
                    for label, path in zip(labels, files)}
    for interpreter in interpreters.values():
        export.set_random_image(interpreter)
        for _ in range(_WARMUP.value):
            interpreter.invoke()
    load_before = os.getloadavg()[0]
    results = interleaved({label: it.invoke for label, it in interpreters.items()},
                          _ROUNDS.value, _RUNS.value)
    reference = results[labels[0]]["median_ms"]
    for label, path in zip(labels, files):
        row = results[label]
        row.update(file=path, ratio=row["median_ms"] / reference)
        print(f"{label}: median {row['median_ms']:.3f} ms (p25 {row['p25_ms']:.3f}, "
              f"p75 {row['p75_ms']:.3f}), x{row['ratio']:.2f} vs {labels[0]}")
    if _OUTPUT.value:
        environment = results_io.host_environment()
        environment["load_average"] = f"{load_before:.2f} / {os.getloadavg()[0]:.2f}"
        document = {"environment": environment, "threads": _THREADS.value,
                    "rounds": _ROUNDS.value, "runs_per_round": _RUNS.value, "results": results}
        write_text(_OUTPUT.value, json.dumps(document, indent=2) + "\n")
        print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
