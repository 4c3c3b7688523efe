"""Flags shared by the host (latency.py) and phone (device.py) benchmarks, so that both time the
same list of models the same way."""

from __future__ import annotations

import datetime
import os
from typing import Any

from absl import flags

from benchmark import results_io

DEFAULT_MODELS = ["repghostnet_050", "repghostnet_100", "ghostnet_050", "ghostnet_100", "ghostnet_130"]

MODELS = flags.DEFINE_list(
    "models", DEFAULT_MODELS,
    "Models to time: names of repghost_tf.MODELS (every RepGhostNet width, GhostNet, ...) and "
    "mobilenetv3_{large,small}_<alpha x 100> from keras.applications.",
)
MOBILENETV3 = flags.DEFINE_enum(
    "mobilenetv3", "closest", ["closest", "none"],
    "closest: add, for each RepGhostNet in --models, the published MobileNetV3 width closest in "
    "multiply-adds; none: only --models.",
)
FORMS = flags.DEFINE_list(
    "forms", list(results_io.FORMS),
    "Model forms: unfused (the training form; measured only where a re-parameterization branch "
    "makes it differ) and fused (the deploy form).",
)
PRECISIONS = flags.DEFINE_list(
    "precisions", list(results_io.PRECISIONS),
    "float32, and int8 (full-integer, calibrated on random images: right for latency only).",
)
THREADS = flags.DEFINE_list("threads", ["1", "4"], "Thread counts to time each model with.")
WARMUP_RUNS = flags.DEFINE_integer("warmup_runs", 20, "Untimed runs before timing.", lower_bound=0)
NUM_RUNS = flags.DEFINE_integer("num_runs", 200, "Timed runs per model and thread count.", lower_bound=1)
IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Square input size.", lower_bound=32)
OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None,
    "Run directory for results.json, results.csv and results.md; defaults to "
    "runs/<host|device>/<UTC time>.",
)
MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Where to write the exported .tflite/.onnx files; defaults to <output_dir>/models."
)
MERGE = flags.DEFINE_boolean(
    "merge", False,
    "Add this run's results to the results.json already in --output_dir (e.g. one more model "
    "in a committed table), replacing those of the same model, form, precision, runtime and "
    "threads, instead of overwriting it.",
)
REUSE_EXPORTS = flags.DEFINE_boolean(
    "reuse_exports", False,
    "Time the files already in --model_dir instead of exporting again (e.g. to re-time the same "
    "models when the machine is quiet); stale after any change to the models or the exporter.",
)

for _flag, _allowed in (("forms", results_io.FORMS), ("precisions", results_io.PRECISIONS)):
    flags.register_validator(
        _flag, lambda values, allowed=_allowed: bool(values) and set(values) <= set(allowed),
        message=f"--{_flag} takes a comma-separated subset of {','.join(_allowed)}",
    )


class FlagError(ValueError):
    """A flag value that the flag parser cannot reject by itself."""


def settings() -> dict[str, Any]:
    """The shared flags as plain values, recorded in the results document."""
    try:
        threads = [int(value) for value in THREADS.value]
    except ValueError:
        raise FlagError(f"--threads must be integers, got {','.join(THREADS.value)}") from None
    if not threads or min(threads) < 1:
        raise FlagError(f"--threads must be positive, got {','.join(THREADS.value)}")
    return {
        "models": list(MODELS.value),
        "mobilenetv3": MOBILENETV3.value,
        "forms": [f for f in results_io.FORMS if f in FORMS.value],
        "precisions": [p for p in results_io.PRECISIONS if p in PRECISIONS.value],
        "threads": threads,
        "warmup_runs": WARMUP_RUNS.value,
        "num_runs": NUM_RUNS.value,
        "image_size": IMAGE_SIZE.value,
        "reuse_exports": REUSE_EXPORTS.value,
    }


def output_dir(kind: str) -> str:
    if OUTPUT_DIR.value:
        return OUTPUT_DIR.value
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", kind, stamp)


def merge_base(run_dir: str, kind: str) -> dict | None:
    """The run already in `run_dir` that --merge adds to; None without --merge or where there is
    none. Read before anything is timed, so that a bad file fails first."""
    path = os.path.join(run_dir, "results.json")
    if not MERGE.value or not os.path.isfile(path):
        return None
    try:
        document = results_io.load_document(path)
    except (OSError, results_io.SchemaError) as error:
        raise FlagError(f"--merge: cannot read {path}: {error}") from None
    if document["kind"] != kind:
        raise FlagError(f"--merge: {path} holds a {document['kind']} run, not a {kind} run")
    return document


def model_dir(run_dir: str) -> str:
    return MODEL_DIR.value or os.path.join(run_dir, "models")
