"""An exported classifier as an app loads it: MediaPipe Tasks' ImageClassifier on the images the
export verified the file on, against the export report's top-1 and our LiteRT run of the same
file. MediaPipe reads the file's metadata alone (input normalisation, labels), so a top-1 equal
to the report's says the file drops into an app as it is.

    python train.py --width=0.5
    python export_tflite.py --quantize int8
    python -m benchmark.mediapipe_accuracy --tflite=runs/repghostnet_050/repghostnet_050_int8.tflite

Writes benchmark/results/mediapipe/<file stem>.json. Needs `mediapipe` (the test extra).
"""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np
from absl import flags

from repghost_tf import cli, data, litert
from repghost_tf.atomic_files import write_json

flags.DEFINE_string("tflite", None, "An exported classifier .tflite, its JSON report beside it.",
                    required=True)
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_string("output_dir", "benchmark/results/mediapipe", "Where the JSON goes.")
FLAGS = flags.FLAGS


@contextlib.contextmanager
def _classifier(path: str):
    """MediaPipe's ImageClassifier on `path`: a function from one uint8 RGB image to the scores
    of every class, indexed by class, and the label names it read from the metadata."""
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=path))
    with vision.ImageClassifier.create_from_options(options) as classifier:

        def classify(image: np.ndarray) -> tuple[np.ndarray, list[str]]:
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
            categories = sorted(result.classifications[0].categories, key=lambda c: c.index)
            return (np.array([c.score for c in categories], np.float32),
                    [c.category_name for c in categories])

        yield classify


def measure(path: str, report: dict, data_dir: str | None) -> dict:
    check = report["verification"]
    dataset = data.make_dataset(check["dataset"], check["split"], image_size=report["image_size"],
                                batch_size=32, training=False, data_dir=data_dir)
    names = data.class_names(check["dataset"], data_dir)
    interpreter = litert.make_interpreter(open(path, "rb").read())
    labels, ours, theirs, label_mismatches = [], [], [], 0
    with _classifier(path) as classify:
        for images, batch_labels in dataset:
            # An app hands MediaPipe 8-bit pixels; our run gets the same pixels.
            pixels = np.clip(np.round(np.asarray(images)), 0, 255).astype(np.uint8)
            pixels = pixels[:check["examples"] - len(labels)]
            ours.append(litert.run_interpreter(interpreter, pixels.astype(np.float32)))
            for image, label in zip(pixels, np.asarray(batch_labels)):
                scores, found_names = classify(image)
                label_mismatches += found_names != names
                labels.append(int(label))
                theirs.append(scores)
            if len(labels) == check["examples"]:
                break
    labels, ours, theirs = np.array(labels), np.concatenate(ours), np.stack(theirs)
    return {
        "file": os.path.basename(path),
        "images": len(labels),
        "dataset": check["dataset"],
        "split": check["split"],
        "report_top1": check["tflite_top1"],
        "mediapipe_top1": float(np.mean(theirs.argmax(-1) == labels)),
        "litert_top1_on_uint8_pixels": float(np.mean(ours.argmax(-1) == labels)),
        "mediapipe_vs_litert_max_abs_score_difference": float(np.abs(theirs - ours).max()),
        "images_with_other_label_names": int(label_mismatches),
    }


def main() -> None:
    report_path = os.path.splitext(FLAGS.tflite)[0] + ".json"
    with open(report_path, encoding="utf-8") as file:
        report = json.load(file)
    if "tflite_top1" not in report.get("verification", {}):
        raise ValueError(f"{report_path} has no verified top-1 (a classifier exported with "
                         "--eval_examples > 0)")
    result = measure(FLAGS.tflite, report, FLAGS.data_dir)
    output = os.path.join(FLAGS.output_dir,
                          os.path.splitext(os.path.basename(FLAGS.tflite))[0] + ".json")
    write_json(output, result)
    print(json.dumps(result, indent=1))
    print(f"Wrote {output}")


if __name__ == "__main__":
    cli.run(main, "benchmark.mediapipe_accuracy", (ValueError, data.DatasetError))
