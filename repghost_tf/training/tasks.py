"""What differs between training a classifier and a detector, behind one interface that the
training loop calls: the network, its trainer, its input pipelines, the validation number that
picks `best.keras`, the epoch's summary line and the test-split score."""

from __future__ import annotations

import math
from typing import Callable

import keras
import tensorflow as tf

from repghost_tf import data, runs
from repghost_tf.models.registry import create_model
from repghost_tf.training.config import ConfigError, TrainConfig, augmentation
from repghost_tf.training.trainer import EmaClassifier, EmaDetector, EmaTrainer


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

    def network(self, classes: int) -> Callable[[], keras.Model]:
        """Builds a fresh network of the run."""
        raise NotImplementedError

    def trainer(self, network, ema_network, classes: int, **kwargs) -> EmaTrainer:
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

    def trainer(self, network, ema_network, classes: int, **kwargs) -> EmaTrainer:
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
        model.compile(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[
                keras.metrics.SparseTopKCategoricalAccuracy(1, name="top1"),
                keras.metrics.SparseTopKCategoricalAccuracy(min(5, classes), name="top5"),
            ],
        )
        test = self.dataset(split, training=False, batch_size=self.config.batch_size)
        scores = model.evaluate(test, verbose=0, return_dict=True)
        return {"test_top1": float(scores["top1"]), "test_top5": float(scores["top5"])}

    def describe(self, scores: dict[str, float]) -> str:
        return f"top-1 {100 * scores['test_top1']:.2f}% (top-5 {100 * scores['test_top5']:.2f}%)"


class Detection(Task):
    """A `repghost_tf.hub.RepGhostNetDetector` on the named backbone; best.keras is the epoch of
    lowest validation loss of the EMA weights, and the test split is scored in COCO mAP."""

    monitor, higher_is_better = "val_ema_loss", False

    def network(self, classes: int) -> Callable[[], keras.Model]:
        """The detector; with `init_from`, its backbone starts from that classifier's weights."""
        from repghost_tf.hub import RepGhostNetBackbone, RepGhostNetDetector

        config = self.config
        shape = (config.image_size, config.image_size, 3)
        source = _load_classifier(config.init_from) if config.init_from else None

        def build() -> keras.Model:
            if source is None:
                backbone = RepGhostNetBackbone(config.model, image_shape=shape)
            else:
                backbone = RepGhostNetBackbone.from_model(source, image_shape=shape)
            return RepGhostNetDetector(backbone, num_classes=classes)

        return build

    def trainer(self, network, ema_network, classes: int, **kwargs) -> EmaTrainer:
        return EmaDetector(network, ema_network, **kwargs)

    def dataset(self, split: str, *, training: bool, batch_size: int, **kwargs) -> tf.data.Dataset:
        config = self.config
        return data.make_detection_dataset(
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
        from repghost_tf import detection

        test = list(self.dataset(split, training=False, batch_size=self.config.batch_size))
        truth = detection.ground_truth(test)
        found = detection.keras_detections(model, test, self.config.image_size)
        scores = detection.coco_map(truth, found)
        return {"test_map": scores["map"], "test_map50": scores["map50"]}

    def describe(self, scores: dict[str, float]) -> str:
        return (f"COCO mAP@[.5:.95] {scores['test_map']:.3f}, "
                f"mAP@.5 {scores['test_map50']:.3f}")


def _load_classifier(path: str) -> keras.Model:
    from repghost_tf.fusion import is_fused

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad file.
        raise ConfigError(f"cannot load --init_from={path}: {error}") from error
    if is_fused(model):
        raise ConfigError(f"--init_from={path} is in deploy form (no BatchNorm to train); give "
                          f"the training form ({runs.BEST_MODEL})")
    return model


def task_of(config: TrainConfig) -> Task:
    return Detection(config) if config.task == "detection" else Classification(config)
