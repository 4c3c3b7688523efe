"""The pipeline behind export_tflite.py.

`export` finds the model (a .keras file, the latest training run, or random weights of a named
architecture), fuses it, converts it once per quantization, checks each flatbuffer against the
Keras model on a labelled split, and writes the .tflite, a JSON report and a labels file next to
each other, atomically.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Callable, Iterable, Iterator

import keras
import numpy as np

from repghost_tf import data, qat, runs
from repghost_tf.atomic_files import write_bytes, write_json, write_text
from repghost_tf.export.report import (
    compare,
    describe,
    format_report,
    keras_outputs,
    preprocessing_info,
)
from repghost_tf.export.tflite import QUANTIZATIONS, ExportError, convert
from repghost_tf.fusion import fuse, is_fused
from repghost_tf.models.registry import MODELS, ModelSpec, UnknownModelError, resolve

_DEFAULT_IMAGE_SIZE = 224
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
    spec = None if model_path else _random_model_spec(options)
    model = load_model(model_path) if spec is None else spec(
        classes=options.classes, classifier_activation=None
    )
    try:
        run = runs.summary_of_model(model_path)
    except runs.RunError as error:
        raise ExportError(str(error)) from error
    if hasattr(model, "anchor_generator"):  # a repghost_tf.hub.RepGhostNetDetector
        return _export_detector(options, model, model_path, run, log)
    options = dataclasses.replace(
        options,
        calibration_dataset=options.calibration_dataset or (run and run.dataset),
        eval_dataset=options.eval_dataset or (run and run.dataset),
    )
    image_size = (
        options.image_size or _static_size(model) or (run and run.image_size)
        or (spec.input_size if spec else _DEFAULT_IMAGE_SIZE)
    )
    quantized = qat.is_quantized(model)
    if quantized and set(options.quantize) != {"int8"}:
        raise ExportError(
            f"{model_path} is a quantization-aware (QAT) model: export it with --quantize int8"
        )
    if quantized:
        try:
            exported = qat.finalize(model)
        except qat.UncalibratedModelError as error:
            raise ExportError(f"{model_path}: {error}") from error
    else:
        exported = deploy_form(model) if options.fuse else model
    float_model = _qat_source(run) if quantized else None
    output_dir = options.output_dir or (
        os.path.dirname(os.path.abspath(model_path)) if model_path else _RANDOM_MODEL_DIR
    )
    try:
        calibration = _calibration_data(options, image_size) if "int8" in options.quantize else None
        evaluation = (
            _evaluation_data(options, exported if quantized else model, float_model, image_size)
            if options.verify else None
        )
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
                "source": model_path or f"random {options.model or model.name}",
                "form": "qat" if quantized else "deploy" if is_fused(exported) else "training",
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
                    "activation_ranges": (
                        "learned by quantization-aware training" if quantized
                        else options.calibration_ranges
                    ),
                    "weights": "int8, per output channel",
                }
                if quantized:
                    report["qat_from"] = run.init_from if run else None
            if evaluation:
                report["verification"] = {
                    "dataset": evaluation["name"],
                    "split": options.eval_split,
                    **compare(
                        flatbuffer, evaluation["images"](), evaluation["keras_logits"],
                        evaluation["labels"] if class_names else None,
                        float_logits=evaluation["float_logits"],
                        num_threads=options.num_threads,
                    ),
                }
            stem = _file_stem(model.name, report["form"], quantize, io_type)
            results.append((stem, flatbuffer, report))
    except data.DatasetError as error:
        raise ExportError(str(error)) from error
    return [path for stem, flatbuffer, report in results
            for path in _write(output_dir, stem, flatbuffer, report, class_names, log)]


def _export_detector(
    options: ExportOptions,
    model: keras.Model,
    model_path: str,
    run: runs.RunSummary | None,
    log: Callable[[str], None],
) -> list[str]:
    """`export` for a detector: float32 and int8 files with their post-processing, each checked
    in COCO mAP against the Keras model on --eval_split."""
    from repghost_tf import detection
    from repghost_tf.export.detection import (
        OUTPUTS,
        compare_detections,
        convert_detector,
        tflite_detections,
    )

    unsupported = [q for q in options.quantize if q not in ("none", "int8")]
    if unsupported:
        raise ExportError(f"a detector exports as --quantize none (float32) or int8, not "
                          f"{','.join(unsupported)}")
    image_size = options.image_size or _static_size(model) or (run and run.image_size)
    if not image_size or image_size % 32:
        raise ExportError(f"a detector needs an --image_size divisible by 32, got {image_size}")
    exported = deploy_form(model) if options.fuse else model
    dataset = options.eval_dataset or (run and run.dataset)
    calibration_dataset = options.calibration_dataset or (run and run.dataset)
    output_dir = options.output_dir or os.path.dirname(os.path.abspath(model_path))

    def batches(name, split, batch_size, count):
        return data.make_detection_dataset(
            name, split, image_size=image_size, batch_size=batch_size, training=False,
            data_dir=options.data_dir,
        ).unbatch().take(count or -1).batch(batch_size)

    try:
        representative = None
        if "int8" in options.quantize:
            if not calibration_dataset:
                raise ExportError("int8 needs --calibration_dataset (a detection dataset)")
            images = [np.asarray(image) for image, _ in batches(
                calibration_dataset, options.calibration_split, 1, options.calibration_steps
            )]
            representative = lambda: iter(images)  # noqa: E731  (read twice by the converter)
        evaluation = None
        if options.verify and dataset:
            test = [(np.asarray(x), {k: np.asarray(v) for k, v in y.items()})
                    for x, y in batches(dataset, options.eval_split, 32, options.eval_examples)]
            evaluation = (test, detection.ground_truth(test),
                          detection.keras_detections(model, test, image_size))
        class_names = (data.builder(dataset, options.data_dir).info.features["objects"]["label"]
                       .names if dataset else None)
        results = []
        for quantize in dict.fromkeys(options.quantize):
            input_type = options.io_type if quantize == "int8" else "float32"
            flatbuffer = convert_detector(
                exported, image_size, quantize=quantize, input_type=input_type,
                representative_images=representative, ranges=options.calibration_ranges,
            )
            report = {
                "model_name": model.name,
                "source": model_path,
                "form": "deploy" if is_fused(exported) else "training",
                "quantize": quantize,
                "io_type": input_type,
                "image_size": image_size,
                "model": describe(flatbuffer),
                "outputs": list(OUTPUTS),
                "postprocessing": dataclasses.asdict(detection.PostProcessing()),
                "preprocessing": preprocessing_info(model),
            }
            if quantize == "int8":
                report["calibration"] = {
                    "dataset": calibration_dataset, "split": options.calibration_split,
                    "images": options.calibration_steps,
                    "activation_ranges": options.calibration_ranges,
                    "weights": "int8, per output channel",
                    "float": "post-processing (decoding, scores, NMS)",
                }
            if evaluation:
                test, truth, keras_found = evaluation
                report["verification"] = {
                    "dataset": dataset, "split": options.eval_split,
                    **compare_detections(truth, keras_found, tflite_detections(
                        flatbuffer, (x for x, _ in test), options.num_threads)),
                }
            results.append((_file_stem(model.name, report["form"], quantize, input_type),
                            flatbuffer, report))
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
    write_json(report_path, report)
    written.append(report_path)
    log(format_report(report))
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


def load_model(path: str) -> keras.Model:
    """Loads a .keras file in safe mode (no arbitrary code)."""
    if not zipfile.is_zipfile(path):
        raise ExportError(f"cannot load {path}: it is not a .keras model (not a zip archive)")
    if runs.keras_class_name(path) == "RepGhostNetDetector":
        try:
            import repghost_tf.hub  # noqa: F401  (registers the detector's classes)
        except ImportError as error:
            raise ExportError(
                f"{path} is a detector, which needs keras-hub ({error}): pip install -e "
                '".[hub]" && pip install --no-deps keras-hub==0.32.0'
            ) from error
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file; all end up here.
        lines = [line for line in str(error).splitlines() if line.strip()]
        reason = lines[0] if lines else type(error).__name__
        raise ExportError(f"cannot load {path} as a Keras model: {reason}") from error


def _random_model_spec(options: ExportOptions) -> ModelSpec:
    """The architecture that --model or --width names, for a model with random weights."""
    try:
        return resolve(options.model, options.width)
    except UnknownModelError as error:
        raise ExportError(str(error)) from error


def deploy_form(model: keras.Model) -> keras.Model:
    """`model` fused to its deploy form (as it is when already fused)."""
    try:
        return fuse(model)
    except Exception as error:  # fuse() rebuilds from config; any failure means "cannot fuse".
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ExportError(f"cannot fuse: {reason} (or pass --nofuse)") from error


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


def _qat_source(run: runs.RunSummary | None) -> keras.Model | None:
    """The float model a QAT run fine-tuned, to compare the int8 file with; None when the run
    does not say or the file is gone."""
    if run is None or not run.init_from or not os.path.isfile(run.init_from):
        return None
    return load_model(run.init_from)


def _evaluation_data(
    options: ExportOptions, model: keras.Model, float_model: keras.Model | None, image_size: int
) -> dict:
    """The verification split: its name, class names (when they are the model's classes), labels,
    the Keras model's logits (computed once for all quantizations), those of the float model a
    QAT model started from, and its images, re-iterable."""
    name = _dataset_name(options.eval_dataset)
    dataset = data.make_dataset(
        name, options.eval_split, image_size=image_size, batch_size=32, training=False,
        data_dir=options.data_dir,
    )
    classes = data.builder(name, options.data_dir).info.features["label"].names
    same_classes = len(classes) == model.outputs[0].shape[-1]
    max_examples = options.eval_examples or None
    keras_logits, labels = keras_outputs(model, _take(dataset, max_examples))
    float_logits = None
    if float_model is not None:
        float_logits, _ = keras_outputs(float_model, _take(dataset, max_examples))
    return {
        "name": name,
        "class_names": classes if same_classes else None,
        "labels": labels,
        "keras_logits": keras_logits,
        "float_logits": float_logits,
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


