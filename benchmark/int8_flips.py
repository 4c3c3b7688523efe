"""Which images a full-int8 export misclassifies relative to its float model, and why.

Every activation of a full-int8 model shares one scale per tensor, fixed at calibration. When the
magnitude of a network's features varies widely from image to image, that one grid is coarse for
the images with the weakest features: relative to their logits, the int8 noise is largest on
them, and they are also the images the float model is least certain of. This script measures
that on a trained model: the flip rate (int8 top-1 != float top-1) by quartile of the per-image
maximum of the last feature map (the input of `global_pool`), the spread of that maximum over
images, and the float model's margin (top-1 logit minus runner-up) on flipped and unflipped
images. To separate weights from activations, it also counts the flips of the Keras model with
int8-rounded kernels and float activations, and of TensorFlow's 16x8 mode (int16 activations).

The int8 model is the one `export_tflite.py --quantize int8 --logits` writes (same converter,
calibration split, preprocessing and range method; logits, whose margins are what flips); the
float reference is the Keras model, fused.

Usage: python -m benchmark.int8_flips [--model=PATH.keras | --runs_dir=runs] [--dataset=NAME]
           [--split=test] [--calibration_steps=50] [--calibration_ranges=mse] [--output=PATH.json]
"""

from __future__ import annotations

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from repghost_tf import data, litert, native_logs, quantization, runs
from repghost_tf.export import pipeline, tflite
from repghost_tf.atomic_files import write_text
from repghost_tf.fusion import walk_layers

FEATURE_LAYER = "global_pool"


def flip_statistics(
    float_logits: np.ndarray,
    int8_logits: np.ndarray,
    feature_max: np.ndarray,
    labels: np.ndarray,
    bins: int = 4,
) -> dict:
    """Flip rate and float top-1 by quantile bin of `feature_max` (weakest features first), the
    spread of `feature_max` (99th percentile over median), and the float model's median margin on
    flipped and unflipped images."""
    float_top1 = float_logits.argmax(-1)
    flipped = float_top1 != int8_logits.argmax(-1)
    ordered = np.sort(float_logits, axis=-1)
    margin = ordered[:, -1] - ordered[:, -2]
    inner_edges = np.quantile(feature_max, np.linspace(0, 1, bins + 1)[1:-1])
    bin_of = np.searchsorted(inner_edges, feature_max, side="right")
    by_bin = [
        {
            "images": int(np.sum(bin_of == b)),
            "feature_max_median": float(np.median(feature_max[bin_of == b])),
            "flip_rate": float(np.mean(flipped[bin_of == b])),
            "float_top1": float(np.mean(float_top1[bin_of == b] == labels[bin_of == b])),
        }
        for b in range(bins)
    ]
    return {
        "examples": len(flipped),
        "flips": int(flipped.sum()),
        "top1_agreement": float(1 - flipped.mean()),
        "feature_max_p99_over_median": float(
            np.percentile(feature_max, 99) / np.median(feature_max)
        ),
        "median_margin_flipped": float(np.median(margin[flipped])) if flipped.any() else None,
        "median_margin_unflipped": float(np.median(margin[~flipped])),
        "by_feature_max": by_bin,
    }


def with_int8_weights(model: keras.Model) -> keras.Model:
    """A copy of `model` whose conv and dense kernels are rounded to int8 as the converter rounds
    them (symmetric, one scale per output channel) and whose activations stay in float: the part
    of the int8 error that weights alone cause."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in walk_layers(copy):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                              keras.layers.Dense)):
            kernel = layer.kernel.numpy()
            # Output channels: the last axis, except for a depthwise kernel (kh, kw, channels, 1).
            per_channel = kernel.reshape(-1, *kernel.shape[2:]) if isinstance(
                layer, keras.layers.DepthwiseConv2D) else kernel.reshape(-1, kernel.shape[-1])
            scale = np.abs(per_channel).max(axis=0) / 127
            scale = np.where(scale > 0, scale, 1.0)
            layer.kernel.assign(np.round(kernel / scale) * scale)
    return copy


def convert_16x8(model: keras.Model, image_size: int, calibration_images) -> bytes:
    """TensorFlow's 16x8 mode: int8 weights, int16 activations (not full int8; XNNPACK does not
    run it); float32 input and output."""
    with native_logs.silenced():
        converter = tf.lite.TFLiteConverter.from_keras_model(
            tflite.fixed_input_model(model, image_size)
        )
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        converter.representative_dataset = lambda: (
            [images] for images, _ in calibration_images.as_numpy_iterator()
        )
        return converter.convert()


def measure(
    model: keras.Model,
    dataset: str,
    *,
    image_size: int,
    split: str = "test",
    calibration_split: str = "train",
    calibration_steps: int = 50,
    ranges: str = "mse",
    data_dir: str | None = None,
) -> dict:
    """Exports `model` (fused) to int8 as `export_tflite.py --logits` does (uint8 in and out) and
    compares it with the Keras model on `split`; returns `flip_statistics`, plus the flips of int8
    weights with float activations (`with_int8_weights`) and of 16x8 (`convert_16x8`)."""
    model = pipeline.deploy_form(model)
    if FEATURE_LAYER not in {layer.name for layer in model.layers}:
        raise tflite.ExportError(
            f"{model.name} has no {FEATURE_LAYER!r} layer (RepGhostNet and GhostNet classifiers do)"
        )
    probe = keras.Model(model.inputs, [model.get_layer(FEATURE_LAYER).input, model.outputs[0]])
    calibration_images = data.make_dataset(
        dataset, calibration_split, image_size=image_size, batch_size=1, training=False,
        data_dir=data_dir,
    ).take(calibration_steps)
    int8 = litert.make_interpreter(tflite.convert(
        model, "int8", image_size=image_size, io_type="uint8",
        representative_data=calibration_images, ranges=ranges,
    ))
    evaluation = data.make_dataset(
        dataset, split, image_size=image_size, batch_size=32, training=False, data_dir=data_dir,
    )
    int16x8 = litert.make_interpreter(convert_16x8(model, image_size, calibration_images))
    int8_weights = with_int8_weights(model)
    features, float_logits, int8_logits, labels = [], [], [], []
    weights_only_top1, int16x8_top1 = [], []
    for images, batch_labels in evaluation.as_numpy_iterator():
        feature_map, logits = probe.predict_on_batch(images)
        features.append(np.abs(feature_map).max(axis=(1, 2, 3)))
        float_logits.append(logits)
        int8_logits.append(litert.run_interpreter(int8, images))
        labels.append(batch_labels)
        weights_only_top1.append(int8_weights.predict_on_batch(images).argmax(-1))
        int16x8_top1.append(litert.run_interpreter(int16x8, images).argmax(-1))
    statistics = flip_statistics(*(np.concatenate(parts) for parts in
                                   (float_logits, int8_logits, features, labels)))
    float_top1 = np.concatenate(float_logits).argmax(-1)
    return {
        **statistics,
        "flips_int8_weights_only": int(np.sum(np.concatenate(weights_only_top1) != float_top1)),
        "flips_16x8": int(np.sum(np.concatenate(int16x8_top1) != float_top1)),
    }


def format_table(statistics: dict) -> str:
    lines = [
        f"int8 vs float top-1: {statistics['flips']} flips in {statistics['examples']} images "
        f"({statistics['top1_agreement']:.2%} agreement); last feature map's per-image max: "
        f"99th percentile {statistics['feature_max_p99_over_median']:.1f}x the median",
        f"float margin, median: flipped {statistics['median_margin_flipped'] or 0:.2f}, "
        f"unflipped {statistics['median_margin_unflipped']:.2f}",
        f"flips with int8 weights and float activations: "
        f"{statistics['flips_int8_weights_only']}; with 16x8 (int16 activations): "
        f"{statistics['flips_16x8']}",
        "feature-max quartile | median max | flip rate | float top-1",
        "---|---|---|---",
    ]
    lines += [
        f"{b + 1} | {row['feature_max_median']:.2f} | {row['flip_rate']:.2%} | "
        f"{row['float_top1']:.2%}"
        for b, row in enumerate(statistics["by_feature_max"])
    ]
    return "\n".join(lines)


def define_flags() -> None:
    """The command line's flags; defined only when run as a script, so that importing this module
    (tests do) leaves absl's global flags to the other benchmark scripts."""
    flags.DEFINE_string("model", None, "A trained .keras file; default: the latest run's.")
    flags.DEFINE_string("runs_dir", "runs", "Where train.py wrote its runs (and LATEST).")
    flags.DEFINE_string("dataset", None, "TFDS dataset to measure on; default: the run's.")
    flags.DEFINE_string("split", "test", "Labelled split to measure on.")
    flags.DEFINE_string("calibration_split", "train", "Split to calibrate on.")
    flags.DEFINE_integer("calibration_steps", 50, "Calibration images.", lower_bound=1)
    flags.DEFINE_enum(
        "calibration_ranges", "mse", list(quantization.RANGES), "Activation range method."
    )
    flags.DEFINE_integer("image_size", None, "Input size; default: the run's.")
    flags.DEFINE_string("data_dir", None, "TFDS data directory.")
    flags.DEFINE_string(
        "output", None, "JSON file for the numbers; default: int8_flips.json next to the model."
    )


def main(argv: list[str]) -> None:
    del argv
    options = flags.FLAGS
    try:
        if options.model and not os.path.isfile(options.model):
            raise tflite.ExportError(f"--model={options.model} is not a file")
        path = options.model or runs.latest_model(
            options.runs_dir,
            hint="train one first (python train.py --width=0.5) or pass --model=PATH.keras",
        )
        model = pipeline.load_model(path)
        run = runs.summary_of_model(path)
        dataset = options.dataset or (run and run.dataset) or data.BUILTIN_DATASET
        image_size = options.image_size or (run and run.image_size) or 224
        statistics = {"model": path, "dataset": dataset, "split": options.split,
                      "calibration_ranges": options.calibration_ranges,
                      **measure(model, dataset, image_size=image_size, split=options.split,
                                calibration_split=options.calibration_split,
                                calibration_steps=options.calibration_steps,
                                ranges=options.calibration_ranges, data_dir=options.data_dir)}
    except (tflite.ExportError, runs.RunError, data.DatasetError) as error:
        sys.exit(f"error: {error}")
    print(format_table(statistics))
    output = options.output or os.path.join(os.path.dirname(path), "int8_flips.json")
    write_text(output, json.dumps(statistics, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
