"""Exports a model to TFLite (float32, float16, dynamic-range or full-int8), verified against Keras.

    python export_tflite.py --quantize int8                  # the latest run of train.py
    python export_tflite.py --model=runs/x/best.keras --quantize none,float16,int8
    python export_tflite.py --width=1.0 --quantize int8      # random weights, for latency only
    python export_tflite.py --model=g_ghost_regnetx_002      # any name of repghost_tf.MODELS, too

Every model is fused to its deploy form first, has batch 1 and only TFLite builtin ops. Next to
each `.tflite` go a JSON verification report and, when the classes are the dataset's, a labels
file. The paths written are printed for `adb push` / `benchmark_model --graph=...`.
"""

from __future__ import annotations

import os

# TensorFlow's C++ logs stay quiet unless the user sets a level (0 shows them all).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import dataclasses  # noqa: E402
import json  # noqa: E402

import tensorflow_datasets as tfds  # noqa: E402
from absl import flags, logging  # noqa: E402

from repghost_tf import cli  # noqa: E402
from repghost_tf.export import ExportError, ExportOptions, export  # noqa: E402

# After repghost_tf, which imports TensorFlow with its native start-up logs filtered.
import tensorflow as tf  # noqa: E402

flags.DEFINE_string(
    "model", None,
    "A .keras model (training or deploy form, or a converted official checkpoint), or, when no "
    "such file exists, a name of repghost_tf.MODELS (repghostnet_050, ghostnet_100, "
    "g_ghost_regnetx_002, ...) built with random weights (latency only). Default: the "
    "deploy.keras (else best.keras) of the run named in <runs_dir>/LATEST.")
flags.DEFINE_float(
    "width", None,
    "Instead of --model: a randomly initialised RepGhostNet of this width (latency only); "
    "--width=0.5 builds what --model=repghostnet_050 does.")
flags.DEFINE_integer(
    "classes", 1000, "Classes of a random-weight model (--width or a model name).", lower_bound=1)
flags.DEFINE_string("runs_dir", "runs", "Where train.py writes runs and LATEST.")
flags.DEFINE_list(
    "quantize", ["none"],
    "Comma-separated: none (float32), float16 (float16 weights), dynamic (int8 weights, float "
    "activations), int8 (full-integer, calibrated). One .tflite per entry.")
flags.DEFINE_enum(
    "io_type", "uint8", ["uint8", "int8", "float32"],
    "Input and output type of int8 models; uint8 takes raw camera pixels (scale 1, zero point "
    "0). Float models always take float32.")
flags.DEFINE_integer(
    "image_size", None,
    "Square input size; default: the model's fixed input size, else the run's (summary.json), "
    "else 224.",
    lower_bound=32)
flags.DEFINE_boolean(
    "fuse", True, "Export the fused deploy form; --nofuse exports the training form as it is.")
flags.DEFINE_string(
    "calibration_dataset", None,
    "TFDS dataset for int8 calibration; default: the run's training dataset (its summary.json), "
    "else the built-in one.")
flags.DEFINE_string("calibration_split", "train", "Calibration split.")
flags.DEFINE_integer(
    "calibration_steps", 50, "Calibration images (one per step).", lower_bound=1)
flags.DEFINE_enum(
    "calibration_ranges", "mse", ["mse", "minmax"],
    "Activation ranges of int8 models: mse clips each tensor where int8 rounding plus clipping "
    "error is least on the calibration images; minmax takes the extremes they reach (the "
    "converter's default), which a few rare values widen for every image.")
flags.DEFINE_string(
    "eval_dataset", None, "Labelled TFDS dataset to verify on; default: as --calibration_dataset.")
flags.DEFINE_string(
    "eval_split", None, "Split to verify on; default: the test split, else the validation split.")
flags.DEFINE_integer(
    "eval_examples", 1000, "Images to verify on; 0 for the whole split.", lower_bound=0)
flags.DEFINE_boolean("verify", True, "Verify against Keras on --eval_dataset.")
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_string(
    "output_dir", None,
    "Where to write; default: next to the model (runs/export for random weights).")
flags.DEFINE_integer(
    "num_threads", 1, "Interpreter threads for verification.", lower_bound=1)
flags.DEFINE_boolean(
    "logits", False,
    "Classifiers: output raw logits; default: probabilities (a softmax inside the file), which "
    "MediaPipe Tasks reports as scores.")
flags.DEFINE_string(
    "metadata_description", None,
    "The file's TFLite metadata description; default: architecture, width, dataset, input.")
flags.DEFINE_string("metadata_version", "1", "The model version in the TFLite metadata.")
flags.DEFINE_string("metadata_author", "repghost-tf", "The author in the TFLite metadata.")
flags.DEFINE_string(
    "metadata_license", "MIT",
    "The license in the TFLite metadata (that of the official RepGhostNet weights and of this "
    "project); set your own for models trained on your data.")


def main() -> None:
    tfds.disable_progress_bar()
    logging.set_verbosity(logging.WARNING)
    options = ExportOptions(**{
        field.name: tuple(value) if isinstance(value, list) else value
        for field in dataclasses.fields(ExportOptions)
        for value in [flags.FLAGS[field.name].value]
    })
    written = export(options)
    print("Wrote:\n" + "\n".join(f"  {path}" for path in written))
    for path in written:
        if path.endswith(".tflite"):
            name = os.path.basename(path)
            print(f"Benchmark: adb push {path} /data/local/tmp/ && adb shell "
                  f"/data/local/tmp/benchmark_model --graph=/data/local/tmp/{name}")
            print(f"In an app: mediapipe.tasks.python.vision.{_mediapipe_task(path)}"
                  f".create_from_model_path({path!r})")


def _mediapipe_task(path: str) -> str:
    """The MediaPipe Tasks class that reads the file: a detector's report lists its outputs."""
    with open(path[: -len(".tflite")] + ".json", encoding="utf-8") as file:
        return "ObjectDetector" if "outputs" in json.load(file) else "ImageClassifier"


if __name__ == "__main__":
    cli.run(main, "export_tflite.py", (ExportError, tf.errors.OpError),
            interrupted="interrupted; every file written so far is whole")
