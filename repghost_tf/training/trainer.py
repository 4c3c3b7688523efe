"""The optimisation pieces of the paper's recipe: the warmed-up cosine learning rate, and a
Keras model that trains a network while keeping an EMA of its weights."""

from __future__ import annotations

import hashlib
import math

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="repghost_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `warmup_lr` to `peak_lr`, then cosine to `min_lr` at `total_steps`."""

    def __init__(
        self, peak_lr: float, total_steps: int, warmup_steps: int, warmup_lr: float, min_lr: float
    ):
        self.peak_lr = peak_lr
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.warmup_lr = warmup_lr
        self.min_lr = min_lr

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = max(self.warmup_steps, 1)
        warm = self.warmup_lr + (self.peak_lr - self.warmup_lr) * step / warmup
        progress = tf.clip_by_value(
            (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0
        )
        cosine = self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warm, cosine)

    def get_config(self) -> dict:
        return {
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "warmup_lr": self.warmup_lr,
            "min_lr": self.min_lr,
        }


class EmaTrainer(keras.Model):
    """Trains `network` and keeps `ema_network` as an exponential moving average of all its
    weights (BatchNorm statistics included); evaluation reports both, the EMA's as `ema_*`.
    Subclasses give the task's loss (`task_loss`) and metrics.

    The EMA decay warms up as min(decay, (1 + step) / (10 + step)), so short runs get a useful
    average while long ones reach the full decay. Weight decay is PyTorch-style L2 (added to the
    gradient, so momentum sees it) on kernels only: BatchNorm parameters and biases are exempt.

    With `head_only_steps`, only the weights of the layers named in `head` move during the first
    that many steps (fine-tuning: a new classifier learns before the pretrained features move);
    the others' gradients are zeroed, so that SGD leaves them exactly as they were.
    """

    def __init__(self, network: keras.Model, ema_network: keras.Model, *, ema_decay: float,
                 weight_decay: float, multi_worker: bool = False, head_only_steps: int = 0,
                 head: frozenset[str] = frozenset(), **kwargs):
        super().__init__(**kwargs)
        self.head_only_steps = head_only_steps
        self.head_weights = {w.path for name in head for w in network.get_layer(name).weights}
        self.multi_worker = multi_worker
        self.network = network
        self.ema_network = ema_network
        self.ema_network.trainable = False
        self.ema_decay = ema_decay
        self.weight_decay = weight_decay
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ema_loss_tracker = keras.metrics.Mean(name="ema_loss")
        self.task_metrics: tuple = ()  # each updated with (targets, network outputs)
        self.ema_task_metrics: tuple = ()  # each updated with (targets, EMA network outputs)
        self.built = True

    def call(self, images, training=False):
        return self.network(images, training=training)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Skipped: both networks are built already, and Keras's symbolic build all-reduces a
        data batch, which fails under MultiWorkerMirroredStrategy."""

    def task_loss(self, images, targets, outputs):
        """The loss of `outputs` for one replica's batch, divided by the number of replicas (as
        Keras's own losses are under tf.distribute, whose gradients add up)."""
        raise NotImplementedError

    def training_loss(self, images, targets, outputs):
        """What the training step minimises; the task loss unless a subclass distils."""
        return self.task_loss(images, targets, outputs)

    def train_step(self, batch):
        images, targets = batch
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        decayed = [v for v in self.network.trainable_weights if len(v.shape) > 1]
        with tf.GradientTape() as tape:
            outputs = self.network(images, training=True)
            loss = self.training_loss(images, targets, outputs)
            l2 = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in decayed])
            total = loss + 0.5 * self.weight_decay * l2 / replicas
            scaled = self.optimizer.scale_loss(total)
        gradients = tape.gradient(scaled, self.network.trainable_weights)
        if self.head_only_steps:
            gradients = self._head_only(gradients)
        self.optimizer.apply(gradients, self.network.trainable_weights)
        tf.distribute.get_replica_context().merge_call(self._update_ema)
        self.loss_tracker.update_state(loss * replicas)
        for metric in self.task_metrics:
            metric.update_state(targets, outputs)
        return self._outputs((self.loss_tracker, *self.task_metrics))

    def _head_only(self, gradients: list) -> list:
        """`gradients` with those of the weights outside the head zeroed before step
        `head_only_steps`."""
        moving = self.optimizer.iterations >= self.head_only_steps
        return [
            g if w.path in self.head_weights else g * tf.cast(moving, g.dtype)
            for g, w in zip(gradients, self.network.trainable_weights)
        ]

    def _update_ema(self, strategy: tf.distribute.Strategy) -> None:
        step = tf.cast(self.optimizer.iterations, tf.float32)
        decay = tf.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))

        def update(average, value):
            return average.assign(decay * average + (1.0 - decay) * tf.cast(value, average.dtype))

        for average, value in zip(self.ema_network.weights, self.network.weights):
            strategy.extended.update(average.value, update, args=(value.value,), group=False)

    def test_step(self, batch):
        images, targets = batch
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        outputs = self.network(images, training=False)
        ema_outputs = self.ema_network(images, training=False)
        self.loss_tracker.update_state(self.task_loss(images, targets, outputs) * replicas)
        self.ema_loss_tracker.update_state(self.task_loss(images, targets, ema_outputs) * replicas)
        for metric in self.task_metrics:
            metric.update_state(targets, outputs)
        for metric in self.ema_task_metrics:
            metric.update_state(targets, ema_outputs)
        return self._outputs(self.metrics)

    def _outputs(self, metrics) -> dict:
        """Metric results; of shape [1] under multi-worker training, where Keras mean-reduces
        step outputs along axis 0 (scalars would fail there)."""
        if self.multi_worker:
            return {m.name: tf.reshape(m.result(), [1]) for m in metrics}
        return {m.name: m.result() for m in metrics}


def classification_metrics(classes: int, prefix: str = "") -> tuple[keras.metrics.Metric, ...]:
    """Top-1 and top-5 accuracy. Top-1 is the argmax, the first of tied maxima, as the TFLite file
    and the export's report count it; in_top_k would count every tied class as a hit, and a QAT
    network's quantized outputs tie (all tied: 100%)."""
    return (keras.metrics.SparseCategoricalAccuracy(name=f"{prefix}top1"),
            keras.metrics.SparseTopKCategoricalAccuracy(min(5, classes), name=f"{prefix}top5"))


class EmaClassifier(EmaTrainer):
    """An `EmaTrainer` for classification: label-smoothed cross-entropy, or with a `teacher`,
    distillation of its softened predictions; top-1 and top-5."""

    def __init__(self, network: keras.Model, ema_network: keras.Model, *, classes: int,
                 label_smoothing: float, teacher: keras.Model | None = None,
                 temperature: float = 1.0, **kwargs):
        super().__init__(network, ema_network, **kwargs)
        self.teacher = teacher
        if teacher is not None:
            teacher.trainable = False
        self.temperature = temperature
        self.kl_divergence = keras.losses.KLDivergence()
        self.classes = classes
        self.cross_entropy = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing
        )
        self.task_metrics = classification_metrics(classes)
        self.ema_task_metrics = classification_metrics(classes, prefix="ema_")

    def task_loss(self, images, labels, logits):
        """Label-smoothed cross-entropy, scaled by Keras for the number of replicas."""
        return self.cross_entropy(tf.one_hot(labels, self.classes), tf.cast(logits, tf.float32))

    def training_loss(self, images, labels, logits):
        """With a teacher: KL(teacher || network) of the softened predictions, times temperature
        squared."""
        if self.teacher is None:
            return self.task_loss(images, labels, logits)
        t = self.temperature
        teacher_logits = self.teacher(images, training=False)
        targets = tf.nn.softmax(tf.cast(teacher_logits, tf.float32) / t)
        predictions = tf.nn.softmax(tf.cast(logits, tf.float32) / t)
        return self.kl_divergence(targets, predictions) * (t * t)


class EmaDetector(EmaTrainer):
    """An `EmaTrainer` for a keras-hub RetinaNet-style detector (`repghost_tf.hub`): targets are
    {"boxes", "labels"} padded with -1, encoded on the anchors by the detector's label encoder;
    the loss is RetinaNet's (focal, alpha 0.25 and gamma 2, on every anchor not ignored; Huber on
    the box deltas of positive anchors), summed and divided by the positive anchors."""

    def __init__(self, network: keras.Model, ema_network: keras.Model, **kwargs):
        super().__init__(network, ema_network, **kwargs)
        self.box_loss = keras.losses.Huber(reduction="sum")
        self.classification_loss = keras.losses.BinaryFocalCrossentropy(
            apply_class_balancing=True, alpha=0.25, gamma=2.0, from_logits=True, reduction="sum"
        )

    def task_loss(self, images, targets, outputs):
        box_targets, class_targets = self.network.label_encoder(
            images=images, gt_boxes=targets["boxes"], gt_classes=targets["labels"]
        )
        positive = tf.cast(class_targets > -1.0, tf.float32)
        normalizer = tf.maximum(tf.reduce_sum(positive), 1.0)
        box_loss = self.box_loss(
            box_targets, tf.cast(outputs["bbox_regression"], tf.float32),
            sample_weight=positive / normalizer,
        )
        class_loss = self.classification_loss(
            tf.one_hot(tf.cast(class_targets, tf.int32), self.network.num_classes),
            tf.cast(outputs["cls_logits"], tf.float32),
            sample_weight=tf.cast(tf.not_equal(class_targets, -2.0), tf.float32) / normalizer,
        )
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return (box_loss + class_loss) / replicas


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 of the trainable weights: equal on workers that ended with the same model.

    BatchNorm running statistics are left out: each worker averages its own batches (as with
    PyTorch DDP without SyncBatchNorm); the chief's are the ones saved.
    """
    digest = hashlib.sha256()
    for weight in model.trainable_weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()
