"""The export pipeline behind export_tflite.py, and its verification report.

`export` finds the model (a .keras file, the latest training run, or random weights of a named
architecture or a width), fuses it, converts it once per quantization, checks each flatbuffer
against the Keras model on a labelled split, and writes the .tflite, a JSON report and a labels
file next to each other, atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Iterable, Iterator

import keras
import numpy as np

from repghost_tf import data
from repghost_tf.atomic_files import write_bytes, write_json, write_text
from repghost_tf.deploy import fuse
from repghost_tf.layers import FusableLayer, walk_layers
from repghost_tf.models import MODELS, GhostNet, RepGhostNet
from repghost_tf.tflite import (
    QUANTIZATIONS,
    ExportError,
    convert,
    make_interpreter,
    op_histogram,
    run_interpreter,
)

_DEFAULT_IMAGE_SIZE = 224
_RANDOM_MODEL_DIR = os.path.join("runs", "export")
_LIST_MODELS = "python -c 'import repghost_tf; print(*repghost_tf.MODELS)'"


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """Everything the export needs; the flags of the same names fill it in."""

    model: str | None = None
    width: float | None = None
    family: str = "repghostnet"
    classes: int = 1000
    runs_dir: str = "runs"
    quantize: tuple[str, ...] = ("none",)
    io_type: str = "uint8"
    image_size: int | None = None
    fuse: bool = True
    calibration_dataset: str | None = None
    calibration_split: str = "train"
    calibration_steps: int = 50
    calibration_ranges: str = "mse"
    eval_dataset: str | None = None
    eval_split: str = "test"
    eval_examples: int = 1000
    verify: bool = True
    data_dir: str | None = None
    output_dir: str | None = None
    num_threads: int = 1


def export(options: ExportOptions, log: Callable[[str], None] = print) -> list[str]:
    """Converts, verifies and writes one .tflite (with its JSON report and labels) per quantization;
    returns the paths written. Raises ExportError before writing anything on bad input."""
    unknown = [q for q in options.quantize if q not in QUANTIZATIONS]
    if unknown or not options.quantize:
        raise ExportError(
            f"unknown --quantize {','.join(unknown)!r}; choose from {', '.join(QUANTIZATIONS)}"
        )
    model_path = find_model(options)
    model = load_model(model_path) if model_path else random_model(options)
    run = run_summary(model_path)
    options = dataclasses.replace(
        options,
        calibration_dataset=options.calibration_dataset or run.get("dataset"),
        eval_dataset=options.eval_dataset or run.get("dataset"),
    )
    image_size = (
        options.image_size or _static_size(model) or run.get("image_size") or _DEFAULT_IMAGE_SIZE
    )
    exported = deploy_form(model) if options.fuse else model
    output_dir = options.output_dir or (
        os.path.dirname(os.path.abspath(model_path)) if model_path else _RANDOM_MODEL_DIR
    )
    try:
        calibration = _calibration_data(options, image_size) if "int8" in options.quantize else None
        evaluation = _evaluation_data(options, model, image_size) if options.verify else None
        class_names = evaluation["class_names"] if evaluation else None
        results = []
        for quantize in dict.fromkeys(options.quantize):
            io_type = options.io_type if quantize == "int8" else "float32"
            flatbuffer = convert(
                exported, quantize, image_size=image_size, io_type=io_type,
                representative_data=calibration, ranges=options.calibration_ranges,
            )
            report = {
                "model_name": model.name,
                "source": model_path or f"random {_architecture(options)}",
                "form": "deploy" if is_fused_deep(exported) else "training",
                "quantize": quantize,
                "io_type": io_type,
                "image_size": image_size,
                "model": describe(flatbuffer),
                "preprocessing": preprocessing_info(model),
            }
            if quantize == "int8":
                report["calibration"] = {
                    "dataset": _dataset_name(options.calibration_dataset),
                    "split": options.calibration_split,
                    "images": options.calibration_steps,
                    "activation_ranges": options.calibration_ranges,
                    "weights": "int8, per output channel",
                }
            if evaluation:
                report["verification"] = {
                    "dataset": evaluation["name"],
                    "split": options.eval_split,
                    **compare(
                        flatbuffer, evaluation["images"](), evaluation["keras_logits"],
                        evaluation["labels"] if class_names else None,
                        num_threads=options.num_threads,
                    ),
                }
            stem = _file_stem(model.name, report["form"], quantize, io_type)
            results.append((stem, flatbuffer, report))
    except data.DatasetError as error:
        raise ExportError(str(error)) from error
    return [path for stem, flatbuffer, report in results
            for path in _write(output_dir, stem, flatbuffer, report, class_names, log)]


def _write(output_dir, stem, flatbuffer, report, labels, log) -> list[str]:
    """Writes the model, its labels and its report, each atomically; returns their paths."""
    model_path = os.path.join(output_dir, f"{stem}.tflite")
    report["file"] = os.path.basename(model_path)
    written = [model_path]
    if labels:
        labels_path = os.path.join(output_dir, f"{stem}_labels.txt")
        write_text(labels_path, "\n".join(labels) + "\n")
        report["labels_file"] = os.path.basename(labels_path)
        written.append(labels_path)
    write_bytes(model_path, flatbuffer)
    report_path = os.path.join(output_dir, f"{stem}.json")
    write_report(report_path, report)
    written.append(report_path)
    log(format_report(report))
    return written


def _file_stem(name: str, form: str, quantize: str, io_type: str) -> str:
    """repghostnet_050_int8, repghostnet_050_unfused_float32, repghostnet_050_int8_float32io."""
    parts = [name] + (["unfused"] if form != "deploy" else [])
    parts.append("float32" if quantize == "none" else quantize)
    if quantize == "int8" and io_type != "uint8":
        parts.append(f"{io_type}io")
    return "_".join(parts)


def find_model(options: ExportOptions) -> str | None:
    """The .keras file to export: --model when it is a file, else the latest run's; None for a
    random-weight model (--width, or --model naming an architecture of `repghost_tf.MODELS`)."""
    if options.model and options.width is not None:
        raise ExportError("pass either --model or --width, not both")
    if options.width is not None:
        return None
    if options.model:
        if os.path.isfile(options.model):
            return options.model
        if options.model in MODELS:
            return None
        raise ExportError(
            f"--model={options.model} is neither a file nor a model name; "
            f"list the names with: {_LIST_MODELS}"
        )
    return latest_model(
        options.runs_dir,
        hint="train one first (python train.py --width=0.5), "
        "or pass --model=PATH.keras, --model=NAME or --width=0.5",
    )


def latest_model(runs_dir: str, hint: str) -> str:
    """The .keras file of the run that runs_dir/LATEST names (deploy form first); an ExportError
    ending with `hint` when there is none."""
    latest = os.path.join(runs_dir, "LATEST")
    if not os.path.isfile(latest):
        raise ExportError(f"no trained model: {latest} does not exist; {hint}")
    with open(latest, encoding="utf-8") as file:
        run_dir = file.read().strip()
    project = os.path.dirname(os.path.abspath(runs_dir))
    candidates = [run_dir, os.path.join(project, run_dir)]
    for directory in candidates:
        for name in ("deploy.keras", "best.keras"):
            if os.path.isfile(os.path.join(directory, name)):
                return os.path.join(directory, name)
    raise ExportError(
        f"{latest} names {run_dir!r}, which holds no deploy.keras or best.keras; {hint}"
    )


def load_model(path: str) -> keras.Model:
    """Loads a .keras file in safe mode (no arbitrary code)."""
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file; all end up here.
        lines = [line for line in str(error).splitlines() if line.strip()]
        reason = lines[0] if lines else type(error).__name__
        raise ExportError(f"cannot load {path}: {reason}") from error


def random_model(options: ExportOptions) -> keras.Model:
    """A randomly initialised logits model, for latency work: the architecture --model names,
    else --family at --width."""
    if options.width is None:
        return MODELS[options.model](classes=options.classes, classifier_activation=None)
    constructor = RepGhostNet if options.family == "repghostnet" else GhostNet
    try:
        return constructor(width=options.width, classes=options.classes, classifier_activation=None)
    except ValueError as error:
        raise ExportError(f"--width={options.width}: {error}") from error


def _architecture(options: ExportOptions) -> str:
    """The random-weight model's architecture, as the report's source names it."""
    if options.width is None:
        return options.model
    return f"{options.family} width {options.width}"


def is_fused_deep(model: keras.Model) -> bool:
    """True when no layer, nested models included, is still in training form."""
    return not any(
        isinstance(layer, FusableLayer) and not layer.deploy for layer in walk_layers(model)
    )


def deploy_form(model: keras.Model) -> keras.Model:
    """`model` fused to its deploy form (as it is when already fused)."""
    if is_fused_deep(model):
        return model
    try:
        deployed = fuse(model)
    except Exception as error:  # fuse() rebuilds from config; any failure means "cannot fuse".
        message = f"model {model.name!r} cannot be fused: {error}"
        raise ExportError(message.splitlines()[0]) from error
    if not is_fused_deep(deployed):
        raise ExportError(
            f"model {model.name!r} cannot be fused: it nests RepGhost layers inside another model; "
            "fuse the inner model and save that, or pass --nofuse"
        )
    return deployed


def run_summary(model_path: str | None) -> dict:
    """The summary.json train.py leaves next to its models ({} if none): the run's dataset (and
    image size, where recorded) are the export's defaults for calibration and verification."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_path or ".")), "summary.json")
    if not model_path or not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as file:
            summary = json.load(file)
    except (OSError, ValueError) as error:
        raise ExportError(f"cannot read {path}: {error}") from error
    return summary if isinstance(summary, dict) else {}


def _static_size(model: keras.Model) -> int | None:
    height, width = model.inputs[0].shape[1:3]
    return height if height is not None and height == width else None


def _dataset_name(name: str | None) -> str:
    return name or data.BUILTIN_DATASET


def _calibration_data(options: ExportOptions, image_size: int):
    """Calibration images with the eval preprocessing, re-iterable for the converter."""
    dataset = data.make_dataset(
        _dataset_name(options.calibration_dataset), options.calibration_split,
        image_size=image_size, batch_size=1, training=False, data_dir=options.data_dir,
    )
    return lambda: dataset.take(options.calibration_steps).as_numpy_iterator()


def _evaluation_data(options: ExportOptions, model: keras.Model, image_size: int) -> dict:
    """The verification split: its name, class names (when they are the model's classes), labels,
    the Keras model's logits (computed once for all quantizations) and its images, re-iterable."""
    name = _dataset_name(options.eval_dataset)
    dataset = data.make_dataset(
        name, options.eval_split, image_size=image_size, batch_size=32, training=False,
        data_dir=options.data_dir,
    )
    classes = data.builder(name, options.data_dir).info.features["label"].names
    same_classes = len(classes) == model.outputs[0].shape[-1]
    max_examples = options.eval_examples or None
    keras_logits, labels = keras_outputs(model, _take(dataset, max_examples))
    return {
        "name": name,
        "class_names": classes if same_classes else None,
        "labels": labels,
        "keras_logits": keras_logits,
        "images": lambda: (images for images, _ in _take(dataset, max_examples)),
    }


def _take(dataset: Iterable, max_examples: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(images, labels) batches as float32 and label arrays, cut off after `max_examples`."""
    seen = 0
    for images, labels in dataset:
        images, labels = np.asarray(images, np.float32), np.asarray(labels)
        if max_examples:
            images, labels = images[:max_examples - seen], labels[:max_examples - seen]
        yield images, labels
        seen += len(images)
        if max_examples and seen >= max_examples:
            return


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


def compare(
    model_bytes: bytes,
    images: Iterable[np.ndarray],
    expected: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    num_threads: int = 1,
) -> dict:
    """The TFLite model's outputs on batches of `images` against the Keras model's logits on them.

    Returns examples, top1_agreement, and the logit error: max_abs_logit_error and
    relative_logit_error (||tflite - keras|| / ||keras|| over all examples). With `labels`, also
    keras_top1 and tflite_top1 (accuracy) and accuracy_drop_points.
    """
    interpreter = make_interpreter(model_bytes, num_threads=num_threads)
    actual = np.concatenate([run_interpreter(interpreter, batch) for batch in images])
    keras_top1, tflite_top1 = expected.argmax(-1), actual.argmax(-1)
    difference = actual.astype(np.float64) - expected
    result = {
        "examples": len(expected),
        "top1_agreement": float(np.mean(keras_top1 == tflite_top1)),
        "max_abs_logit_error": float(np.abs(difference).max()),
        "relative_logit_error": float(np.linalg.norm(difference) / np.linalg.norm(expected)),
    }
    if labels is not None:
        keras_accuracy = float(np.mean(keras_top1 == labels))
        tflite_accuracy = float(np.mean(tflite_top1 == labels))
        result.update(
            keras_top1=keras_accuracy,
            tflite_top1=tflite_accuracy,
            accuracy_drop_points=100 * (keras_accuracy - tflite_accuracy),
        )
    return result


def preprocessing_info(model: keras.Model) -> dict:
    """What the model expects as input: raw RGB pixels when a Normalization layer is inside
    (with its mean and std in pixel units), which is what an app needs to feed it."""
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.Normalization):
            mean = np.asarray(layer.mean, np.float64).reshape(-1)
            std = np.sqrt(np.asarray(layer.variance, np.float64).reshape(-1))
            return {
                "input": "RGB pixels in [0, 255], no normalisation outside the model",
                "inside_model": "(pixels - mean) / std",
                "mean": mean.round(4).tolist(),
                "std": std.round(4).tolist(),
            }
    return {"input": "as the Keras model's input; no Normalization layer inside the model"}


def format_report(report: dict) -> str:
    """A few human-readable lines: file, size, ops, input quantization, verification."""
    info = report["model"]
    lines = [
        f"{report['file']}: {info['size_bytes'] / 2**20:.2f} MiB, {report['quantize']}, "
        f"input {_format_tensor(info['input'])}, output {_format_tensor(info['output'])}",
        f"  ops ({info['op_count']}): "
        + ", ".join(f"{name} {count}" for name, count in info["op_histogram"].items()),
    ]
    check = report.get("verification")
    if check:
        line = f"  vs Keras on {check['dataset']}:{check['split']} ({check['examples']} images): "
        if "keras_top1" in check:
            line += (
                f"top-1 {100 * check['tflite_top1']:.2f}% (Keras {100 * check['keras_top1']:.2f}%, "
                f"drop {check['accuracy_drop_points']:.2f} points), "
            )
        line += (
            f"agreement {100 * check['top1_agreement']:.2f}%, "
            f"logit error max {check['max_abs_logit_error']:.3g} / "
            f"relative {check['relative_logit_error']:.3g}"
        )
        lines.append(line)
    return "\n".join(lines)


def _format_tensor(summary: dict) -> str:
    text = f"{summary['dtype']}{summary['shape']}"
    if "scale" in summary:
        text += f" (scale {summary['scale']:.6g}, zero point {summary['zero_point']})"
    return text


def write_report(path: str | os.PathLike, report: dict) -> None:
    """Saves the report as indented JSON, atomically."""
    write_json(path, report)
