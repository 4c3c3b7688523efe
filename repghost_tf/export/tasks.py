"""What differs between exporting a classifier, a QAT classifier and a detector: the quantizations
it takes, the form that is converted, its calibration and verification data, how it converts,
and what its report says. `export.pipeline.export` runs the same steps for all of them, as
`training.tasks` does for training.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Iterator

import keras
import numpy as np

from repghost_tf import data, quantization, runs
from repghost_tf.export import metadata
from repghost_tf.export.report import compare, keras_outputs, softmax
from repghost_tf.export.tflite import QUANTIZATIONS, ExportError, convert
from repghost_tf.fusion import fuse, is_fused
from repghost_tf.models.registry import ModelSpec

DEFAULT_IMAGE_SIZE = 224
LABELS_FILE = "labels.txt"  # the name of the labels inside a .tflite file (its metadata's)
_QUANTIZED = {"none": "float32", "float16": "float16 weights",
              "dynamic": "int8 weights, float activations", "int8": "int8"}


class ExportTask:
    """One model to export. The pipeline checks the quantizations asked for (`check`), builds
    the task (image size, the form to convert), reads its data (`prepare`), then converts,
    reports and verifies once per quantization."""

    quantizations: tuple[str, ...] = QUANTIZATIONS

    def __init__(self, options, model: keras.Model, model_path: str | None,
                 run: runs.RunSummary | None, spec: ModelSpec | None):
        self.options, self.model, self.model_path, self.run, self.spec = (
            options, model, model_path, run, spec)
        self.image_size = self._image_size()
        self.exported = self._exported()
        self.class_names: list[str] | None = None
        self.calibration = None

    @classmethod
    def check(cls, quantizations: tuple[str, ...], model_path: str | None) -> None:
        """Raises ExportError (one line) when the model cannot be exported as asked."""
        unsupported = [q for q in quantizations if q not in cls.quantizations]
        if unsupported or not quantizations:
            raise ExportError(cls._unsupported(unsupported, model_path))

    @classmethod
    def _unsupported(cls, quantizations: list[str], model_path: str | None) -> str:
        return (f"unknown --quantize {','.join(quantizations)!r}; "
                f"choose from {', '.join(cls.quantizations)}")

    @property
    def form(self) -> str:
        """"deploy" (fused), "training" (--nofuse) or "qat"; it names the file."""
        return "deploy" if is_fused(self.exported) else "training"

    @property
    def calibration_dataset(self) -> str | None:
        return self.options.calibration_dataset or (self.run and self.run.dataset)

    def _image_size(self) -> int | None:
        return self.options.image_size or _static_size(self.model) or (
            self.run and self.run.image_size)

    def _exported(self) -> keras.Model:
        return deploy_form(self.model) if self.options.fuse else self.model

    def prepare(self, int8: bool) -> None:
        """Reads the calibration images (when `int8`) and the verification split."""

    def convert(self, quantize: str, io_type: str) -> bytes:
        raise NotImplementedError

    def report(self, quantize: str) -> dict:
        """The task's entries of the report; "calibration" ones for int8."""
        return {}

    def calibration_report(self) -> dict:
        options = self.options
        return {"dataset": self.calibration_dataset, "split": options.calibration_split,
                "images": options.calibration_steps,
                "activation_ranges": options.calibration_ranges,
                "weights": "int8, per output channel"}

    def verify(self, flatbuffer: bytes) -> dict | None:
        """How the file's outputs compare with the Keras model's (None: not verified)."""
        return None

    def eval_split(self, dataset: str) -> str:
        """--eval_split, else the split `dataset`'s runs are scored on (test, else validation)."""
        split = self.options.eval_split
        if split:
            data.check_split(dataset, split, self.options.data_dir, self.data_task)
            return split
        data.prepare(dataset, self.options.data_dir, task=self.data_task)
        _, validation, test = data.default_splits(dataset, self.options.data_dir)
        return test or validation

    def verification_lines(self, check: dict) -> list[str]:
        return []

    kind = "model"
    data_task = "classification"  # what its datasets hold (repghost_tf.data's task)

    def output_metadata(self, labels_file: str | None) -> list:
        raise NotImplementedError

    def metadata(self, quantize: str) -> tuple[bytes, dict[str, bytes]]:
        """The file's TFLite metadata (`export.metadata`) and the files it names (the labels)."""
        options = self.options
        labels = self.class_names
        check_labels(labels)
        dataset = self.run.dataset if self.run else None
        description = options.metadata_description or (
            f"{self.model.name} {self.kind}"
            + (f", {len(labels)} classes" if labels else "")
            + (f" of {dataset}" if dataset else "")
            + f"; {self.image_size}x{self.image_size} RGB input, pixels 0-255; "
            + _QUANTIZED[quantize]
        )
        info = metadata.ModelInfo(
            name=self.model.name, description=description, version=options.metadata_version,
            author=options.metadata_author, license=options.metadata_license,
        )
        block = metadata.model_metadata(
            info, [metadata.image_input(self.image_size)],
            self.output_metadata(LABELS_FILE if labels else None),
        )
        return block, ({LABELS_FILE: ("\n".join(labels) + "\n").encode()} if labels else {})


class Classification(ExportTask):
    """A classifier: any quantization; int8 calibrated on --calibration_split, verified in top-1
    and logits on --eval_split."""

    kind = "image classifier"

    def __init__(self, options, model: keras.Model, *args):
        super().__init__(options, model, *args)
        # The file outputs probabilities unless --logits, or the model has its own softmax.
        self.probabilities = not options.logits and not _ends_in_softmax(model)
        if self.probabilities:
            self.exported = with_softmax(self.exported)

    def _image_size(self) -> int:
        return super()._image_size() or (self.spec.input_size if self.spec else DEFAULT_IMAGE_SIZE)

    def output_metadata(self, labels_file: str | None) -> list:
        return metadata.classifier_outputs(labels_file, self.probabilities)

    def report(self, quantize: str) -> dict:
        return {"output": "probabilities" if self.probabilities else "logits"}

    def _dataset(self, name: str | None) -> str:
        return name or (self.run and self.run.dataset) or data.BUILTIN_DATASET

    @property
    def calibration_dataset(self) -> str:
        return self._dataset(self.options.calibration_dataset)

    def prepare(self, int8: bool) -> None:
        options = self.options
        if int8:
            data.check_split(self.calibration_dataset, options.calibration_split,
                             options.data_dir)
            dataset = data.make_dataset(
                self.calibration_dataset, options.calibration_split,
                image_size=self.image_size, batch_size=1, training=False,
                data_dir=options.data_dir,
            )
            self.calibration = lambda: dataset.take(options.calibration_steps).as_numpy_iterator()
        self.evaluation = self._evaluation_data() if options.verify else None
        if self.evaluation:
            self.class_names = self.evaluation["class_names"]

    def _reference(self) -> keras.Model:
        """The Keras model the file is compared with."""
        return self.model

    def _evaluation_data(self) -> dict:
        """The verification split: its name, class names (when they are the model's classes),
        labels, the Keras model's logits (computed once for all quantizations) and its images,
        re-iterable."""
        options = self.options
        name = self._dataset(options.eval_dataset)
        self.split = self.eval_split(name)
        dataset = data.make_dataset(
            name, self.split, image_size=self.image_size, batch_size=32, training=False,
            data_dir=options.data_dir,
        )
        classes = data.class_names(name, options.data_dir)
        reference = self._reference()
        max_examples = options.eval_examples or None
        logits, labels = keras_outputs(reference, _take(dataset, max_examples))
        return {
            "name": name,
            "class_names": classes if len(classes) == reference.outputs[0].shape[-1] else None,
            "labels": labels,
            "keras_logits": logits,
            "images": lambda: (images for images, _ in _take(dataset, max_examples)),
            "dataset": dataset,
        }

    def convert(self, quantize: str, io_type: str) -> bytes:
        return convert(
            self.exported, quantize, image_size=self.image_size, io_type=io_type,
            representative_data=self.calibration, ranges=self.options.calibration_ranges,
        )

    def verify(self, flatbuffer: bytes) -> dict | None:
        evaluation = self.evaluation
        if not evaluation:
            return None
        logits = evaluation["keras_logits"]
        expected = softmax(logits) if self.probabilities else logits
        return {
            "dataset": evaluation["name"],
            "split": self.split,
            **compare(
                flatbuffer, evaluation["images"](), expected,
                evaluation["labels"] if self.class_names else None,
                float_logits=evaluation.get("float_logits"),
                num_threads=self.options.num_threads,
            ),
        }

    def verification_lines(self, check: dict) -> list[str]:
        line = f"  vs Keras on {check['dataset']}:{check['split']} ({check['examples']} images): "
        if "keras_top1" in check:
            line += (
                f"top-1 {100 * check['tflite_top1']:.2f}% (Keras {100 * check['keras_top1']:.2f}%, "
                f"drop {check['accuracy_drop_points']:.2f} points), "
            )
        line += (
            f"agreement {100 * check['top1_agreement']:.2f}%, "
            f"{'probability' if self.probabilities else 'logit'} error max "
            f"{check['max_abs_error']:.3g} / relative {check['relative_error']:.3g}"
        )
        if check["top1_ties"]:
            line += f", {check['top1_ties']} top-1 ties"
        lines = [line]
        versus = check.get("vs_float_model")
        if versus:
            line = "  vs the float model before QAT: "
            if "float_top1" in versus:
                line += (f"top-1 {100 * versus['float_top1']:.2f}%, drop "
                         f"{versus['accuracy_drop_points']:.2f} points, ")
            lines.append(line + f"agreement {100 * versus['top1_agreement']:.2f}%")
        return lines


class QatClassification(Classification):
    """A quantization-aware (QAT) classifier: int8 only, its own learned ranges (the converter
    takes each FakeQuant op's), compared with the finalized QAT model and with the float model
    the QAT run started from."""

    quantizations = ("int8",)
    form = "qat"

    @classmethod
    def _unsupported(cls, quantizations: list[str], model_path: str | None) -> str:
        return f"{model_path} is a quantization-aware (QAT) model: export it with --quantize int8"

    def _exported(self) -> keras.Model:
        try:
            return quantization.finalize(self.model)
        except quantization.UncalibratedModelError as error:
            raise ExportError(f"{self.model_path}: {error}") from error

    def _reference(self) -> keras.Model:
        return self.exported

    def _evaluation_data(self) -> dict:
        evaluation = super()._evaluation_data()
        float_model = self._float_model()
        if float_model is not None:
            evaluation["float_logits"], _ = keras_outputs(
                float_model, _take(evaluation["dataset"], self.options.eval_examples or None))
        return evaluation

    def _float_model(self) -> keras.Model | None:
        """The float model the QAT run fine-tuned; None when the run does not say or the file is
        gone."""
        run = self.run
        if run is None or not run.init_from or not os.path.isfile(run.init_from):
            return None
        return load_model(run.init_from)

    def report(self, quantize: str) -> dict:
        return {**super().report(quantize), "qat_from": self.run.init_from if self.run else None}

    def calibration_report(self) -> dict:
        return {**super().calibration_report(),
                "activation_ranges": "learned by quantization-aware training"}


class Detection(ExportTask):
    """A detector (`repghost_tf.detection.detector.RepGhostNetDetector`): float32 and int8 files
    with their post-processing, each checked in COCO mAP against the Keras model."""

    quantizations = ("none", "int8")
    kind = "object detector"
    data_task = "detection"

    def __init__(self, options, *args):
        if options.logits:
            raise ExportError("--logits applies to classifiers; a detector's file outputs boxes, "
                              "classes, scores and a count")
        super().__init__(options, *args)

    def output_metadata(self, labels_file: str | None) -> list:
        return metadata.detector_outputs(labels_file)

    @classmethod
    def _unsupported(cls, quantizations: list[str], model_path: str | None) -> str:
        return ("a detector exports as --quantize none (float32) or int8, not "
                f"{','.join(quantizations)}")

    def _image_size(self) -> int:
        size = super()._image_size()
        if not size or size % 32:
            raise ExportError(f"a detector needs an --image_size divisible by 32, got {size}")
        return size

    def _batches(self, name: str, split: str, batch_size: int, count: int):
        from repghost_tf.detection import make_detection_dataset

        return make_detection_dataset(
            name, split, image_size=self.image_size, batch_size=batch_size, training=False,
            data_dir=self.options.data_dir,
        ).unbatch().take(count or -1).batch(batch_size)

    def prepare(self, int8: bool) -> None:
        from repghost_tf import detection

        options = self.options
        self.dataset = options.eval_dataset or (self.run and self.run.dataset)
        if int8:
            if not self.calibration_dataset:
                raise ExportError("int8 needs --calibration_dataset (a detection dataset)")
            images = [np.asarray(image) for image, _ in self._batches(
                self.calibration_dataset, options.calibration_split, 1, options.calibration_steps
            )]
            self.calibration = lambda: iter(images)  # read twice by the converter
        self.evaluation = None
        if options.verify and self.dataset:
            self.split = self.eval_split(self.dataset)
            test = [(np.asarray(x), {k: np.asarray(v) for k, v in y.items()})
                    for x, y in self._batches(self.dataset, self.split, 32,
                                              options.eval_examples)]
            self.evaluation = (test, detection.ground_truth(test),
                               detection.keras_detections(self.model, test, self.image_size))
        if self.dataset:
            self.class_names = data.class_names(self.dataset, options.data_dir)

    def convert(self, quantize: str, io_type: str) -> bytes:
        from repghost_tf.detection.export import convert_detector

        return convert_detector(
            self.exported, self.image_size, quantize=quantize, input_type=io_type,
            representative_images=self.calibration, ranges=self.options.calibration_ranges,
        )

    def report(self, quantize: str) -> dict:
        from repghost_tf.detection import PostProcessing
        from repghost_tf.detection.export import OUTPUTS

        return {"outputs": list(OUTPUTS),
                "boxes": "ymin, xmin, ymax, xmax as fractions of the image",
                "postprocessing": dataclasses.asdict(PostProcessing())}

    def calibration_report(self) -> dict:
        return {**super().calibration_report(), "float": "post-processing (decoding, scores, NMS)"}

    def verify(self, flatbuffer: bytes) -> dict | None:
        from repghost_tf.detection.export import compare_detections, tflite_detections

        if not self.evaluation:
            return None
        test, truth, keras_found = self.evaluation
        return {
            "dataset": self.dataset, "split": self.split,
            **compare_detections(truth, keras_found, tflite_detections(
                flatbuffer, (x for x, _ in test), self.options.num_threads)),
        }

    def verification_lines(self, check: dict) -> list[str]:
        return [
            f"  vs Keras on {check['dataset']}:{check['split']} ({check['examples']} images): "
            f"mAP@.5 {check['tflite_map50']:.4f} (Keras {check['keras_map50']:.4f}), "
            f"mAP@[.5:.95] {check['tflite_map']:.4f} (Keras {check['keras_map']:.4f}), "
            f"same number of detections on {100 * check['same_count']:.1f}% of images"
        ]


def task_for(model: keras.Model) -> type[ExportTask]:
    """The export task of `model`; raises ExportError for a model that does not take one RGB
    image batch."""
    shape = tuple(model.inputs[0].shape) if len(model.inputs) == 1 else None
    if shape is None or len(shape) != 4 or shape[-1] != 3:
        inputs = [tuple(x.shape) for x in model.inputs]
        raise ExportError(f"{model.name} is not an image model: it takes {inputs}, not "
                          "(batch, height, width, 3)")
    if hasattr(model, "anchor_generator"):  # a RepGhostNetDetector
        return Detection
    return QatClassification if quantization.is_quantized(model) else Classification


def load_model(path: str) -> keras.Model:
    """Loads a .keras file in safe mode (no arbitrary code)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        raise ExportError(f"cannot load {path}: it is not a .keras model (not a zip archive)")
    if runs.keras_class_name(path) == "RepGhostNetDetector":
        try:
            import repghost_tf.detection.detector  # noqa: F401  (registers the detector's classes)
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


def deploy_form(model: keras.Model) -> keras.Model:
    """`model` fused to its deploy form (as it is when already fused)."""
    try:
        return fuse(model)
    except Exception as error:  # fuse() rebuilds from config; any failure means "cannot fuse".
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ExportError(f"cannot fuse: {reason} (or pass --nofuse)") from error


def check_labels(labels: list[str] | None) -> None:
    """Raises ExportError for labels an app could not tell apart: an empty or a repeated one."""
    if not labels:
        return
    empty = [i for i, name in enumerate(labels) if not name.strip()]
    if empty:
        raise ExportError(f"class {empty[0]} has an empty label; name every class")
    seen = set()
    for name in labels:
        if name in seen:
            raise ExportError(f"the label {name!r} names two classes; labels must differ")
        seen.add(name)


def with_softmax(model: keras.Model) -> keras.Model:
    """`model` (logits out) with a softmax after it, sharing its weights."""
    outputs = keras.layers.Softmax(name="probability")(model.outputs[0])
    return keras.Model(model.inputs, outputs, name=model.name)


def _ends_in_softmax(model: keras.Model) -> bool:
    last = model.layers[-1]
    return isinstance(last, keras.layers.Softmax) or (
        getattr(last, "activation", None) is keras.activations.softmax)


def _static_size(model: keras.Model) -> int | None:
    height, width = model.inputs[0].shape[1:3]
    return height if height is not None and height == width else None


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
