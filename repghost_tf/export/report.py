"""What the export report says about a flatbuffer: its size, ops and input/output types, the
preprocessing the model expects, and how its outputs compare with the Keras model's."""

from __future__ import annotations

from typing import Iterable

import keras
import numpy as np

from repghost_tf.export.tflite import ExportError, op_histogram
from repghost_tf.fusion import walk_layers
from repghost_tf.litert import make_interpreter, run_interpreter
from repghost_tf.models.applications import ImageNormalization


def describe(model_bytes: bytes) -> dict:
    """Size, op histogram and input/output types and quantization of a flatbuffer."""
    interpreter = make_interpreter(model_bytes)
    histogram = op_histogram(model_bytes)
    return {
        "size_bytes": len(model_bytes),
        "op_count": sum(histogram.values()),
        "op_histogram": histogram,
        "input": _tensor_summary(interpreter.get_input_details()[0]),
        "output": _tensor_summary(interpreter.get_output_details()[0]),
    }


def _tensor_summary(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    summary = {"dtype": np.dtype(detail["dtype"]).name, "shape": detail["shape"].tolist()}
    if scale:
        summary.update(scale=float(scale), zero_point=int(zero_point))
    return summary


def keras_outputs(
    model: keras.Model, batches: Iterable[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """The Keras model's logits and the labels over (images, labels) batches, in inference mode
    through the model's compiled predict step."""
    logits, labels = [], []
    for images, batch_labels in batches:
        logits.append(np.asarray(model.predict_on_batch(images), np.float32))
        labels.append(np.asarray(batch_labels))
    if not logits:
        raise ExportError("the verification split is empty")
    return np.concatenate(logits), np.concatenate(labels)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities of `logits` over the last axis, in float64."""
    shifted = np.exp(logits - logits.max(-1, keepdims=True).astype(np.float64))
    return shifted / shifted.sum(-1, keepdims=True)


def compare(
    model_bytes: bytes,
    images: Iterable[np.ndarray],
    expected: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    float_logits: np.ndarray | None = None,
    num_threads: int = 1,
) -> dict:
    """The TFLite model's outputs on batches of `images` against the Keras model's (`expected`:
    logits, or probabilities for a file that outputs them).

    Returns examples, top1_agreement, the output error: max_abs_error and relative_error
    (||tflite - keras|| / ||keras|| over all examples), and top1_ties: examples whose largest
    output the file gives two or more classes (int8 outputs can round them equal; argmax takes
    the first). With `labels`, also
    keras_top1 and tflite_top1 (accuracy) and accuracy_drop_points. With `float_logits` (those of
    the float model a QAT model started from), also `vs_float_model`: top1_agreement and, with
    labels, float_top1 and accuracy_drop_points against it.
    """
    interpreter = make_interpreter(model_bytes, num_threads=num_threads)
    actual = np.concatenate([run_interpreter(interpreter, batch) for batch in images])
    keras_top1, tflite_top1 = expected.argmax(-1), actual.argmax(-1)
    difference = actual.astype(np.float64) - expected
    result = {
        "examples": len(expected),
        "top1_agreement": float(np.mean(keras_top1 == tflite_top1)),
        "max_abs_error": float(np.abs(difference).max()),
        "relative_error": float(np.linalg.norm(difference) / np.linalg.norm(expected)),
        "top1_ties": int(np.sum(np.sum(actual == actual.max(-1, keepdims=True), -1) > 1)),
    }
    if labels is not None:
        keras_accuracy = float(np.mean(keras_top1 == labels))
        tflite_accuracy = float(np.mean(tflite_top1 == labels))
        result.update(
            keras_top1=keras_accuracy,
            tflite_top1=tflite_accuracy,
            accuracy_drop_points=100 * (keras_accuracy - tflite_accuracy),
        )
    if float_logits is not None:
        float_top1 = float_logits.argmax(-1)
        versus = {"top1_agreement": float(np.mean(float_top1 == tflite_top1))}
        if labels is not None:
            float_accuracy = float(np.mean(float_top1 == labels))
            versus.update(float_top1=float_accuracy,
                          accuracy_drop_points=100 * (float_accuracy - result["tflite_top1"]))
        result["vs_float_model"] = versus
    return result


def preprocessing_info(model: keras.Model) -> dict:
    """What the model expects as input: raw RGB pixels when it normalises them itself (with the
    mean and std in pixel units), which is what an app needs to feed it."""
    for layer in walk_layers(model):
        if isinstance(layer, ImageNormalization):
            mean, std = np.asarray(layer.mean), np.asarray(layer.std)
        elif isinstance(layer, keras.layers.Normalization):  # models saved before ImageNormalization
            mean = np.asarray(layer.mean, np.float64).reshape(-1)
            std = np.sqrt(np.asarray(layer.variance, np.float64).reshape(-1))
        else:
            continue
        return {
            "input": "RGB pixels in [0, 255], no normalisation outside the model",
            "inside_model": "(pixels - mean) / std",
            "mean": mean.round(4).tolist(),
            "std": std.round(4).tolist(),
        }
    return {"input": "as the Keras model's input; the model does not normalise it"}


def format_report(report: dict, verification: list[str] = ()) -> str:
    """A few human-readable lines: file, size, ops, input quantization, then the task's
    `verification` lines."""
    info = report["model"]
    lines = [
        f"{report['file']}: {info['size_bytes'] / 2**20:.2f} MiB, {report['quantize']}, "
        f"input {_format_tensor(info['input'])}, output {_format_tensor(info['output'])}",
        f"  ops ({info['op_count']}): "
        + ", ".join(f"{name} {count}" for name, count in info["op_histogram"].items()),
    ]
    return "\n".join([*lines, *verification])


def _format_tensor(summary: dict) -> str:
    text = f"{summary['dtype']}{summary['shape']}"
    if "scale" in summary:
        text += f" (scale {summary['scale']:.6g}, zero point {summary['zero_point']})"
    return text
