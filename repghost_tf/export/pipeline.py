"""The pipeline behind export_tflite.py.

`export` finds the model (a .keras file, the latest training run, or random weights of a named
architecture), picks its task (`export.tasks`: classifier, QAT classifier or detector), converts it
once per quantization, adds the TFLite metadata apps read (`export.metadata`: the input, the
outputs, the labels), checks each file against the Keras model, and writes the .tflite, a JSON
report and a labels file next to each other, atomically.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

from repghost_tf import data, runs
from repghost_tf.atomic_files import (
    TargetError,
    check_target,
    write_bytes,
    write_json,
    write_text,
)
from repghost_tf.export import metadata
from repghost_tf.export.report import describe, format_report, preprocessing_info
from repghost_tf.export.tasks import ExportTask, deploy_form, load_model, task_for
from repghost_tf.export.tflite import ExportError
from repghost_tf.models.registry import MODELS, ModelSpec, UnknownModelError, resolve

__all__ = ["ExportOptions", "export", "find_model", "load_model", "deploy_form"]

_RANDOM_MODEL_DIR = os.path.join(runs.RUNS_DIR, "export")
_LIST_MODELS = "python -c 'import repghost_tf; print(*repghost_tf.MODELS)'"


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """Everything the export needs; the flags of the same names fill it in."""

    model: str | None = None
    width: float | None = None
    classes: int = 1000
    runs_dir: str = runs.RUNS_DIR
    quantize: tuple[str, ...] = ("none",)
    io_type: str = "uint8"
    image_size: int | None = None
    fuse: bool = True
    calibration_dataset: str | None = None
    calibration_split: str = "train"
    calibration_steps: int = 50
    calibration_ranges: str = "mse"
    eval_dataset: str | None = None
    eval_split: str | None = None  # the dataset's test split, else its validation split
    eval_examples: int = 1000
    verify: bool = True
    data_dir: str | None = None
    output_dir: str | None = None
    num_threads: int = 1
    logits: bool = False
    metadata_description: str | None = None
    metadata_version: str = "1"
    metadata_author: str = "repghost-tf"
    metadata_license: str = "MIT"


def export(options: ExportOptions, log: Callable[[str], None] = print) -> list[str]:
    """Converts, verifies and writes one .tflite (with its JSON report and labels) per quantization;
    returns the paths written. Raises ExportError before writing anything on bad input."""
    _check_metadata_text(options)
    model_path = find_model(options)
    spec = None if model_path else _random_model_spec(options)
    model = load_model(model_path) if spec is None else spec(
        classes=options.classes, classifier_activation=None
    )
    try:
        run = runs.summary_of_model(model_path)
    except runs.RunError as error:
        raise ExportError(str(error)) from error
    task_class = task_for(model)
    task_class.check(options.quantize, model_path)
    task = task_class(options, model, model_path, run, spec)
    output_dir = options.output_dir or (
        os.path.dirname(os.path.abspath(model_path)) if model_path else _RANDOM_MODEL_DIR
    )
    try:
        check_target(output_dir, folder=True)
    except TargetError as error:
        raise ExportError(f"--output_dir: {error}") from error
    try:
        task.prepare(int8="int8" in options.quantize)
        results = []
        for quantize in dict.fromkeys(options.quantize):
            io_type = options.io_type if quantize == "int8" else "float32"
            flatbuffer = metadata.with_metadata(task.convert(quantize, io_type),
                                                *task.metadata(quantize))
            report = _report(task, quantize, io_type, flatbuffer)
            check = task.verify(flatbuffer)
            if check:
                report["verification"] = check
            stem = _file_stem(model.name, task.form, quantize, io_type)
            results.append((stem, flatbuffer, report))
    except data.DatasetError as error:
        raise ExportError(str(error)) from error
    made = not os.path.isdir(output_dir)
    try:
        return [path for stem, flatbuffer, report in results
                for path in _write(output_dir, stem, flatbuffer, report, task, log)]
    except BaseException:
        if made and os.path.isdir(output_dir) and not os.listdir(output_dir):
            os.rmdir(output_dir)  # made for files that could not be written (a full disk)
        raise


def _check_metadata_text(options: ExportOptions) -> None:
    """The --metadata_* texts go into the file as they are: printable text only."""
    for name in ("metadata_description", "metadata_version", "metadata_author",
                 "metadata_license"):
        value = getattr(options, name)
        if value is not None and not value.isprintable():
            raise ExportError(f"--{name} must be printable text, got {value!r}")


def _report(task: ExportTask, quantize: str, io_type: str, flatbuffer: bytes) -> dict:
    report = {
        "model_name": task.model.name,
        "source": task.model_path or f"random {task.options.model or task.model.name}",
        "form": task.form,
        "quantize": quantize,
        "io_type": io_type,
        "image_size": task.image_size,
        "model": describe(flatbuffer),
        **task.report(quantize),
        "preprocessing": preprocessing_info(task.model),
    }
    if quantize == "int8":
        report["calibration"] = task.calibration_report()
    return report


def _write(output_dir: str, stem: str, flatbuffer: bytes, report: dict, task: ExportTask,
           log: Callable[[str], None]) -> list[str]:
    """Writes the model, its labels and its report, each atomically; returns their paths. When
    one of them fails (a full disk), the others written here are removed: no file goes without
    its model."""
    model_path = os.path.join(output_dir, f"{stem}.tflite")
    labels_path = os.path.join(output_dir, f"{stem}_labels.txt")
    report_path = os.path.join(output_dir, f"{stem}.json")
    report["file"] = os.path.basename(model_path)
    labels = task.class_names
    if labels:
        report["labels_file"] = os.path.basename(labels_path)
    written: list[str] = []
    try:
        write_bytes(model_path, flatbuffer)
        written.append(model_path)
        if labels:
            write_text(labels_path, "\n".join(labels) + "\n")
            written.append(labels_path)
        write_json(report_path, report)
        written.append(report_path)
    except BaseException:
        for path in written:
            os.remove(path)
        raise
    check = report.get("verification")
    log(format_report(report, task.verification_lines(check) if check else []))
    return written


def _file_stem(name: str, form: str, quantize: str, io_type: str) -> str:
    """repghostnet_050_int8, repghostnet_050_unfused_float32, repghostnet_050_int8_float32io."""
    parts = [name] + (["unfused"] if form == "training" else [])
    parts.append("float32" if quantize == "none" else quantize)
    if quantize == "int8" and io_type != "uint8":
        parts.append(f"{io_type}io")
    return "_".join(parts)


def find_model(options: ExportOptions) -> str | None:
    """The .keras file to export: --model when it is a file, else the latest run's; None for a
    random-weight model (--width, or --model naming an architecture of the registry)."""
    if options.model and options.width is not None:
        raise ExportError("give one of --model and --width, not both")
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
    try:
        return runs.latest_model(
            options.runs_dir,
            hint="train one first (python train.py --width=0.5), "
            "or pass --model=PATH.keras, --model=NAME or --width=0.5",
        )
    except runs.RunError as error:
        raise ExportError(str(error)) from error


def _random_model_spec(options: ExportOptions) -> ModelSpec:
    """The architecture that --model or --width names, for a model with random weights."""
    try:
        return resolve(options.model, options.width)
    except UnknownModelError as error:
        raise ExportError(str(error)) from error
