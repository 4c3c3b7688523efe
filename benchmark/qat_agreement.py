"""How well int8 agrees with the float model: post-training int8 (min/max and mse ranges) against
quantization-aware training, on one float run and the QAT run made from it.

For each int8 file, on every image of the test split: top-1 agreement with the float model, the
top-1 drop, how many of the flipped images are float near-ties (top-2 margin below one int8 logit
step of that file), and for QAT also how closely the file reproduces the QAT Keras model (top-1
agreement and the fraction of logits within one output step).

Usage: python -m benchmark.qat_agreement --float_run=runs/repghostnet_050 \
           --qat_run=runs/repghostnet_050_qat [--output=benchmark/results/qat/NAME.json]
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from repghost_tf import data, litert, quantization, runs  # noqa: E402
from repghost_tf.atomic_files import write_text  # noqa: E402
from repghost_tf.export import tflite  # noqa: E402

flags.DEFINE_string("float_run", None, "Run directory of the float model.", required=True)
flags.DEFINE_string("qat_run", None, "Run directory of its QAT fine-tuning.")
flags.DEFINE_integer("calibration_steps", 50, "Calibration images for post-training int8.")
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_string("output", None, "Where to write the JSON results.")
FLAGS = flags.FLAGS


def agreement(float_logits, labels, int8_logits, step: float) -> dict:
    """Agreement, drop and flipped near-ties of int8 logits against the float model's."""
    float_top1, int8_top1 = float_logits.argmax(1), int8_logits.argmax(1)
    top2 = np.sort(float_logits, axis=1)[:, -2:]
    flipped = float_top1 != int8_top1
    return {
        "top1_agreement": float(np.mean(~flipped)),
        "flipped": int(flipped.sum()),
        "flipped_near_ties": int(np.sum(flipped & (top2[:, 1] - top2[:, 0] < step))),
        "float_top1": float(np.mean(float_top1 == labels)),
        "int8_top1": float(np.mean(int8_top1 == labels)),
        "drop_points": 100 * float(np.mean(float_top1 == labels) - np.mean(int8_top1 == labels)),
        "output_step": float(step),
    }


def run_int8(flatbuffer: bytes, images: np.ndarray) -> tuple[np.ndarray, float]:
    interpreter = litert.make_interpreter(flatbuffer)
    logits = np.concatenate([litert.run_interpreter(interpreter, image[None]) for image in images])
    return logits, float(interpreter.get_output_details()[0]["quantization"][0])


def measure(float_run: str, qat_run: str | None, calibration_steps: int, data_dir: str | None):
    summary = runs.RunSummary.read(float_run)
    if summary is None:
        raise ValueError(f"{float_run} has no {runs.SUMMARY}")
    size, dataset = summary.image_size, summary.dataset
    test = data.make_dataset(dataset, "test", image_size=size, batch_size=100, training=False,
                             data_dir=data_dir)
    images, labels = (np.concatenate(parts) for parts in zip(
        *[(np.asarray(x, np.float32), np.asarray(y)) for x, y in test]))
    calibration = data.make_dataset(dataset, "train", image_size=size, batch_size=1,
                                    training=False, data_dir=data_dir)
    calibration_images = [x for x, _ in calibration.take(calibration_steps).as_numpy_iterator()]
    float_model = keras.saving.load_model(os.path.join(float_run, runs.DEPLOY_MODEL),
                                          safe_mode=True, compile=False)
    float_logits = float_model.predict(images, verbose=0, batch_size=100)
    results = {"float_run": float_run, "dataset": dataset, "examples": len(labels)}
    for ranges in ("minmax", "mse"):
        flatbuffer = tflite.convert(float_model, "int8", image_size=size, io_type="uint8",
                                    representative_data=calibration_images, ranges=ranges)
        results[f"post_training_{ranges}"] = agreement(float_logits, labels,
                                                       *run_int8(flatbuffer, images))
    if qat_run:
        qat_model = quantization.finalize(keras.saving.load_model(
            os.path.join(qat_run, runs.DEPLOY_MODEL), safe_mode=True, compile=False))
        flatbuffer = tflite.convert(qat_model, "int8", image_size=size, io_type="uint8",
                                    representative_data=calibration_images)
        int8_logits, step = run_int8(flatbuffer, images)
        qat_logits = qat_model.predict(images, verbose=0, batch_size=100)
        results["qat_run"] = qat_run
        results["qat"] = {
            **agreement(float_logits, labels, int8_logits, step),
            "vs_qat_keras_top1_agreement": float(np.mean(int8_logits.argmax(1)
                                                         == qat_logits.argmax(1))),
            "vs_qat_keras_within_one_step": float(np.mean(
                np.abs(np.round(int8_logits / step) - np.round(qat_logits / step)) <= 1)),
            "qat_keras_vs_float_top1_agreement": float(np.mean(qat_logits.argmax(1)
                                                               == float_logits.argmax(1))),
        }
    return results


def format_table(results: dict) -> str:
    lines = ["| int8 | agreement | flipped (near-ties) | top-1 | drop |", "|---|---|---|---|---|"]
    for key in ("post_training_minmax", "post_training_mse", "qat"):
        if key in results:
            r = results[key]
            lines.append(f"| {key} | {100 * r['top1_agreement']:.2f}% | {r['flipped']} "
                         f"({r['flipped_near_ties']}) | {100 * r['int8_top1']:.2f}% | "
                         f"{r['drop_points']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # TFDS logs every file it opens at INFO.
    try:
        results = measure(FLAGS.float_run, FLAGS.qat_run, FLAGS.calibration_steps, FLAGS.data_dir)
    except (ValueError, OSError, runs.RunError) as error:
        sys.exit(f"qat_agreement: error: {error}")
    print(format_table(results))
    if "qat" in results:
        qat_result = results["qat"]
        print(f"QAT int8 vs QAT Keras: top-1 agreement "
              f"{100 * qat_result['vs_qat_keras_top1_agreement']:.2f}%, logits within one step "
              f"{100 * qat_result['vs_qat_keras_within_one_step']:.2f}%")
    if FLAGS.output:
        write_text(FLAGS.output, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
