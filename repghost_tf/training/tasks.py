"""What differs between training a classifier, fine-tuning a pretrained one, quantization-aware
training of one, and training a detector, behind one interface that the training loop calls: the
network, its trainer and callbacks, its input pipelines, the validation number that picks
`best.keras`, the epoch's summary line, the deploy form and the test-split score."""

from __future__ import annotations

import math
import os
from typing import Callable

import keras
import tensorflow as tf

from repghost_tf import data, detection, quantization, runs
from repghost_tf.training import pretrained
from repghost_tf.fusion import fuse, walk_layers
from repghost_tf.models.registry import create_model
from repghost_tf.training.config import ConfigError, TrainConfig, augmentation, pretrained_source
from repghost_tf.training.trainer import (
    EmaClassifier,
    EmaDetector,
    EmaTrainer,
    classification_metrics,
)


class Task:
    """The task-specific half of a training run (`Classification`, `Detection`)."""

    # The validation log entry that picks best.keras, and whether higher is better.
    monitor: str
    higher_is_better: bool

    def __init__(self, config: TrainConfig):
        self.config = config

    def improved(self, value: float, best: float | None) -> bool:
        if best is None or math.isnan(best):
            return True
        return value > best if self.higher_is_better else value < best

    def title(self) -> str:
        """What the run does, for its first line."""
        return f"Training {self.config.model}"

    def network(self, classes: int) -> Callable[[], keras.Model]:
        """Builds a fresh network of the run (called under the strategy's scope)."""
        raise NotImplementedError

    def callbacks(self, network: keras.Model) -> list[keras.callbacks.Callback]:
        return []

    def deploy_form(self, best: keras.Model) -> keras.Model:
        """What deploy.keras holds."""
        return fuse(best)

    def scored(self, best: keras.Model, deploy: keras.Model) -> tuple[keras.Model, str]:
        """The model the test split scores, and its file name."""
        return best, runs.BEST_MODEL

    def summary_fields(self) -> dict[str, str]:
        """What summary.json records of the model the run started from."""
        return {}

    def trainer(self, network, ema_network, classes: int, steps_per_epoch: int,
                **kwargs) -> EmaTrainer:
        raise NotImplementedError

    def dataset(self, split: str, *, training: bool, batch_size: int, **kwargs) -> tf.data.Dataset:
        raise NotImplementedError

    def epoch_line(self, logs: dict, best: float, best_epoch: int) -> str:
        raise NotImplementedError

    def evaluate(self, model: keras.Model, split: str) -> dict[str, float]:
        """The test scores of `model` on `split`, every image counted, keyed as in RunSummary."""
        raise NotImplementedError

    def describe(self, scores: dict[str, float]) -> str:
        raise NotImplementedError


class Classification(Task):
    monitor, higher_is_better = "val_ema_top1", True

    def network(self, classes: int) -> Callable[[], keras.Model]:
        config = self.config
        return lambda: create_model(
            config.model,
            classes=classes,
            input_shape=(config.image_size, config.image_size, 3),
            classifier_activation=None,
            dropout_rate=config.dropout,
        )

    def trainer(self, network, ema_network, classes: int, steps_per_epoch: int,
                **kwargs) -> EmaTrainer:
        config = self.config
        return EmaClassifier(network, ema_network, classes=classes,
                             label_smoothing=config.label_smoothing, **kwargs)

    def dataset(self, split: str, *, training: bool, batch_size: int, **kwargs) -> tf.data.Dataset:
        config = self.config
        if training:
            kwargs["augmentation"] = augmentation(config)
        return data.make_dataset(
            config.dataset, split, image_size=config.image_size, batch_size=batch_size,
            training=training, data_dir=config.data_dir, manual_dir=config.manual_dir, **kwargs
        )

    def epoch_line(self, logs: dict, best: float, best_epoch: int) -> str:
        return (
            f"loss {logs.get('loss', math.nan):.4f}, "
            f"top-1 {100 * logs.get('top1', math.nan):.1f}%, "
            f"val top-1 {100 * logs.get('val_top1', math.nan):.1f}%, "
            f"val EMA top-1 {100 * logs.get(self.monitor, math.nan):.1f}% (best "
            f"{100 * best:.1f}% at epoch {best_epoch})"
        )

    def evaluate(self, model: keras.Model, split: str) -> dict[str, float]:
        classes = model.outputs[0].shape[-1]
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=list(classification_metrics(classes)))
        test = self.dataset(split, training=False, batch_size=self.config.batch_size)
        scores = model.evaluate(test, verbose=0, return_dict=True)
        return {"test_top1": float(scores["top1"]), "test_top5": float(scores["top5"])}

    def describe(self, scores: dict[str, float]) -> str:
        return f"top-1 {100 * scores['test_top1']:.2f}% (top-5 {100 * scores['test_top5']:.2f}%)"


class Detection(Task):
    """A `repghost_tf.detection.detector.RepGhostNetDetector` on the named backbone; best.keras is
    the epoch of lowest validation loss of the EMA weights, and the test split is scored in COCO
    mAP."""

    monitor, higher_is_better = "val_ema_loss", False

    def title(self) -> str:
        return (f"{super().title()} as a detector (backbone from "
                f"{self.config.init_from or 'scratch'})")

    def network(self, classes: int) -> Callable[[], keras.Model]:
        """The detector; with `init_from`, its backbone starts from that classifier's weights."""
        from repghost_tf.detection.detector import RepGhostNetDetector
        from repghost_tf.hub import RepGhostNetBackbone

        config = self.config
        shape = (config.image_size, config.image_size, 3)
        source = pretrained.load_source(config.init_from) if config.init_from else None

        def build() -> keras.Model:
            if source is None:
                backbone = RepGhostNetBackbone(config.model, image_shape=shape)
            else:
                backbone = RepGhostNetBackbone.from_model(source, image_shape=shape)
            return RepGhostNetDetector(backbone, num_classes=classes)

        return build

    def trainer(self, network, ema_network, classes: int, steps_per_epoch: int,
                **kwargs) -> EmaTrainer:
        return EmaDetector(network, ema_network, **kwargs)

    def dataset(self, split: str, *, training: bool, batch_size: int, **kwargs) -> tf.data.Dataset:
        config = self.config
        return detection.make_detection_dataset(
            config.dataset, split, image_size=config.image_size, batch_size=batch_size,
            training=training, max_boxes=config.max_boxes, data_dir=config.data_dir, **kwargs
        )

    def epoch_line(self, logs: dict, best: float, best_epoch: int) -> str:
        return (
            f"loss {logs.get('loss', math.nan):.4f}, "
            f"val loss {logs.get('val_loss', math.nan):.4f}, "
            f"val EMA loss {logs.get(self.monitor, math.nan):.4f} (best {best:.4f} at epoch "
            f"{best_epoch})"
        )

    def evaluate(self, model: keras.Model, split: str) -> dict[str, float]:
        test = list(self.dataset(split, training=False, batch_size=self.config.batch_size))
        truth = detection.ground_truth(test)
        found = detection.keras_detections(model, test, self.config.image_size)
        scores = detection.coco_map(truth, found)
        return {"test_map": scores["map"], "test_map50": scores["map50"]}

    def describe(self, scores: dict[str, float]) -> str:
        return (f"COCO mAP@[.5:.95] {scores['test_map']:.3f}, "
                f"mAP@.5 {scores['test_map50']:.3f}")


class FineTune(Classification):
    """`--init_from` a pretrained classifier or backbone: the classifier of the dataset's classes
    starts from its weights (a new head where the class count differs); the head trains alone
    for the first `head_epochs`, or for the whole run with `freeze_backbone`; with
    `freeze_batchnorm`, the pretrained BatchNorm layers stay in inference mode."""

    def title(self) -> str:
        config = self.config
        how = ("the head alone" if config.freeze_backbone else
               f"the head alone for {config.head_epochs:g} epochs, then all layers"
               if config.head_epochs else "all layers")
        batchnorm = ", BatchNorm frozen" if config.freeze_batchnorm else ""
        fresh = f", new {' and '.join(self.fresh)}" if self.fresh else ""
        return f"Fine-tuning {config.model} from {config.init_from} ({how}{batchnorm}{fresh})"

    def network(self, classes: int) -> Callable[[], keras.Model]:
        config = self.config
        origin = pretrained_source(config.init_from)
        source = pretrained.load_source(origin)
        self.fresh: list[str] = []
        build_fresh = super().network(classes)

        def build() -> keras.Model:
            model = build_fresh()
            self.fresh = pretrained.copy_pretrained(model, source, origin)
            return model

        return build

    def trainer(self, network, ema_network, classes: int, steps_per_epoch: int,
                **kwargs) -> EmaTrainer:
        config = self.config
        head = pretrained.head_layers(config.model)
        for layer in network.layers:
            if config.freeze_backbone and layer.name not in head:
                layer.trainable = False
            if config.freeze_batchnorm and layer.name not in head:
                for inner in (layer, *walk_layers(layer)):
                    if isinstance(inner, keras.layers.BatchNormalization):
                        inner.trainable = False
        if config.head_epochs and not config.freeze_backbone:
            kwargs.update(head=head, head_only_steps=round(config.head_epochs * steps_per_epoch))
        return super().trainer(network, ema_network, classes, steps_per_epoch, **kwargs)

    def summary_fields(self) -> dict[str, str]:
        return {"pretrained_from": os.path.abspath(self.config.init_from)}


class QuantizationAware(Classification):
    """`--qat`: the QAT form of a float classifier (`--init_from`), distilled from it unless
    `--nodistill`; its activation ranges freeze for the last epochs, every epoch replaces
    best.keras (the last one trained against the ranges it ships with), and deploy.keras is the
    finalized QAT model, which the test split scores."""

    def title(self) -> str:
        config = self.config
        teacher = (f"distilled at temperature {config.temperature:g}" if config.distill
                   else "on the labels")
        return f"Quantization-aware training of {config.init_from} ({teacher})"

    def improved(self, value: float, best: float | None) -> bool:
        return True

    def network(self, classes: int) -> Callable[[], keras.Model]:
        self.source = _float_source(self.config, classes)
        return lambda: quantization.quantize_model(self.source)

    def trainer(self, network, ema_network, classes: int, steps_per_epoch: int,
                **kwargs) -> EmaTrainer:
        config = self.config
        if config.distill:
            kwargs.update(teacher=self.source, temperature=config.temperature)
        return super().trainer(network, ema_network, classes, steps_per_epoch, **kwargs)

    def callbacks(self, network: keras.Model) -> list[keras.callbacks.Callback]:
        config = self.config
        return [FreezeRanges(network, round(config.freeze_ranges_at * config.epochs))]

    def deploy_form(self, best: keras.Model) -> keras.Model:
        return quantization.finalize(best)

    def scored(self, best: keras.Model, deploy: keras.Model) -> tuple[keras.Model, str]:
        return deploy, runs.DEPLOY_MODEL

    def summary_fields(self) -> dict[str, str]:
        """The float model, which the export compares the int8 file with."""
        return {"init_from": os.path.abspath(self.config.init_from)}


class FreezeRanges(keras.callbacks.Callback):
    """Stops the activation ranges of a QAT network from following the data from epoch
    `first_epoch` (0-based) on, so that the last epochs train against the ranges it will ship."""

    def __init__(self, network: keras.Model, first_epoch: int):
        super().__init__()
        self.network = network
        self.first_epoch = first_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= self.first_epoch:
            quantization.freeze_ranges(self.network)


def _float_source(config: TrainConfig, classes: int) -> keras.Model:
    """The deploy form of the float model a QAT run fine-tunes (and distils from)."""
    try:
        source = keras.saving.load_model(config.init_from, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file.
        raise ConfigError(f"cannot load --init_from={config.init_from}: {error}") from error
    if quantization.is_quantized(source):
        raise ConfigError(f"--init_from={config.init_from} is a QAT model already; give the "
                          "float model it started from")
    if source.outputs[0].shape[-1] != classes:
        raise ConfigError(f"--init_from={config.init_from} has {source.outputs[0].shape[-1]} "
                          f"classes, {config.dataset} has {classes}")
    return fuse(source)


def task_of(config: TrainConfig) -> Task:
    if config.task == "detection":
        return Detection(config)
    if config.qat:
        return QuantizationAware(config)
    return FineTune(config) if config.finetune else Classification(config)
