"""The paper's ImageNet recipe under tf.distribute: SGD with linear-scaled, warmed-up cosine LR,
L2 weight decay on conv/dense kernels only, label smoothing, an EMA of all weights evaluated next
to the raw ones, mixed precision, per-epoch checkpoints and resume.

`train.py` turns flags into a `TrainConfig` and calls `train`; tests call `train` directly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from repghost_tf import data
from repghost_tf.deploy import fuse
from repghost_tf.models import MODELS, REPGHOSTNET_WIDTHS, create_model, width_tag
from repghost_tf.atomic_files import save_model, write_json, write_text
from repghost_tf.training_state import Checkpoints

DTYPES = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
LR_REFERENCE_BATCH = 1024
RANDAUGMENT_MIN_WIDTH = 1.3
# The built-in dataset's short schedule, in place of the paper's 300 ImageNet epochs: RepGhostNet
# 0.5x reached 81.3% test top-1 on synthetic_shapes in 8 epochs at 48 px (8.5 minutes on 2 CPU
# cores). The regularisation meant for ImageNet is off: in so few steps it only slows learning.
BUILTIN_RECIPE = dict(
    image_size=48, batch_size=64, epochs=8, warmup_epochs=1.0, base_lr=3.2, min_crop_scale=1.0,
    color_jitter=0.0, random_erasing=0.0, label_smoothing=0.0, dropout=0.0,
)


@dataclasses.dataclass
class TrainConfig:
    """One training run; the defaults are the paper's recipe for RepGhostNet 1.0x."""

    model: str = "repghostnet_100"
    dataset: str = data.BUILTIN_DATASET
    data_dir: str | None = None
    manual_dir: str | None = None
    output_dir: str | None = None
    latest_file: str = "runs/LATEST"
    image_size: int = 224
    batch_size: int = 128
    epochs: int = 300
    steps_per_epoch: int = 0
    base_lr: float = 0.6
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-4
    min_lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 1e-5
    label_smoothing: float = 0.1
    dropout: float = 0.2
    ema_decay: float = 0.9999
    randaugment: bool | None = None
    randaugment_magnitude: float = 9.0
    randaugment_std: float = 0.5
    min_crop_scale: float = 0.08
    color_jitter: float = 0.4
    random_erasing: float = 0.2
    dtype: str = "float32"
    xla: bool = False
    strategy: str = "auto"
    tpu: str = ""
    logical_cpus: int = 0
    resume: bool | None = None
    seed: int = 0
    shuffle_buffer: int = 10_000
    verbose: int = 1

    def resolved_output_dir(self) -> str:
        return self.output_dir or os.path.join("runs", self.model)


class ConfigError(ValueError):
    """A setting the run cannot use; the message (one line) says which and why."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN; the last good checkpoint is kept."""


def recipe(dataset: str) -> dict:
    """The settings in which `dataset`'s default recipe differs from TrainConfig's (the paper's)."""
    return dict(BUILTIN_RECIPE) if dataset.split("/")[0] == data.BUILTIN_DATASET else {}


def model_name(model: str | None, width: float | None) -> str:
    """The model name from --model and/or the RepGhostNet --width shorthand."""
    if width is not None:
        if not any(math.isclose(width, w) for w in REPGHOSTNET_WIDTHS):
            raise ConfigError(
                f"--width must be one of {', '.join(map(str, REPGHOSTNET_WIDTHS))}, got {width}."
            )
        from_width = f"repghostnet_{width_tag(width)}"
        if model and model != from_width:
            raise ConfigError(f"--model={model} and --width={width} disagree; give one of them.")
        return from_width
    return model or "repghostnet_100"


def default_randaugment(model: str) -> bool:
    """The paper's choice: RandAugment for RepGhostNet (and GhostNet) from width 1.3."""
    family, _, tag = model.rpartition("_")
    return family in ("repghostnet", "ghostnet") and int(tag) / 100 >= RANDAUGMENT_MIN_WIDTH


def validate(config: TrainConfig) -> None:
    """Raises ConfigError (one line) for any invalid setting, before any work starts."""
    if config.model not in MODELS:
        raise ConfigError(f"Unknown model {config.model!r}; choose one of {', '.join(MODELS)}.")
    if config.dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {config.dtype!r}.")
    if config.strategy not in STRATEGIES:
        raise ConfigError(
            f"--strategy must be one of {', '.join(STRATEGIES)}, got {config.strategy!r}."
        )
    if config.strategy == "multi_worker" and not _tf_config_workers():
        raise ConfigError("--strategy=multi_worker needs TF_CONFIG with a cluster (see README).")
    if config.strategy == "tpu" and config.dtype == "mixed_float16":
        raise ConfigError("TPUs train in --dtype=mixed_bfloat16 (or float32), not mixed_float16.")
    if config.logical_cpus and config.strategy in ("multi_worker", "tpu"):
        raise ConfigError("--logical_cpus only applies to --strategy=auto|one_device|mirrored.")
    if config.image_size < 32:
        raise ConfigError(f"--image_size must be at least 32, got {config.image_size}.")
    if not 0 <= config.ema_decay < 1:
        raise ConfigError(f"--ema_decay must be in [0, 1), got {config.ema_decay}.")
    if not 0 < config.min_crop_scale <= 1:
        raise ConfigError(f"--min_crop_scale must be in (0, 1], got {config.min_crop_scale}.")
    if config.warmup_epochs >= config.epochs:
        raise ConfigError("--warmup_epochs must be smaller than --epochs.")
    positive = ("batch_size", "epochs", "base_lr")
    for name in positive:
        if getattr(config, name) <= 0:
            raise ConfigError(f"--{name} must be positive, got {getattr(config, name)}.")
    try:
        data.check_dataset(config.dataset, config.data_dir, config.manual_dir)
    except data.DatasetError as error:
        raise ConfigError(str(error)) from error


def _tf_config_workers() -> int:
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def make_strategy(name: str, tpu: str = "", logical_cpus: int = 0) -> tf.distribute.Strategy:
    """The tf.distribute strategy for --strategy; "auto" picks from TF_CONFIG, TPUs and GPUs."""
    if logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus
        )
    if name == "auto":
        gpus = tf.config.list_physical_devices("GPU")
        if _tf_config_workers() > 1:
            name = "multi_worker"
        elif tpu:
            name = "tpu"
        elif len(gpus) > 1 or logical_cpus > 1:
            name = "mirrored"
        else:
            name = "one_device"
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "local")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes the outputs (the only one outside multi-worker training)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


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


class EmaClassifier(keras.Model):
    """Trains `network` and keeps `ema_network` as an exponential moving average of all its
    weights (BatchNorm statistics included); evaluation reports both, the EMA as `ema_*`.

    The EMA decay warms up as min(decay, (1 + step) / (10 + step)), so short runs get a useful
    average while long ones reach the full decay. Weight decay is PyTorch-style L2 (added to the
    gradient, so momentum sees it) on kernels only: BatchNorm parameters and biases are exempt.
    """

    def __init__(self, network: keras.Model, ema_network: keras.Model, *, classes: int,
                 ema_decay: float, weight_decay: float, label_smoothing: float,
                 multi_worker: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.multi_worker = multi_worker
        self.network = network
        self.ema_network = ema_network
        self.ema_network.trainable = False
        self.classes = classes
        self.ema_decay = ema_decay
        self.weight_decay = weight_decay
        self.cross_entropy = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing
        )
        top_k = min(5, classes)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.top1 = keras.metrics.SparseTopKCategoricalAccuracy(1, name="top1")
        self.top5 = keras.metrics.SparseTopKCategoricalAccuracy(top_k, name="top5")
        self.ema_loss_tracker = keras.metrics.Mean(name="ema_loss")
        self.ema_top1 = keras.metrics.SparseTopKCategoricalAccuracy(1, name="ema_top1")
        self.ema_top5 = keras.metrics.SparseTopKCategoricalAccuracy(top_k, name="ema_top5")
        self.built = True

    def call(self, images, training=False):
        return self.network(images, training=training)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Skipped: both networks are built already, and Keras's symbolic build all-reduces a
        data batch, which fails under MultiWorkerMirroredStrategy."""

    def _loss(self, labels, logits):
        """Label-smoothed cross-entropy, scaled by Keras for the number of replicas."""
        return self.cross_entropy(tf.one_hot(labels, self.classes), tf.cast(logits, tf.float32))

    def train_step(self, batch):
        images, labels = batch
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        decayed = [v for v in self.network.trainable_weights if len(v.shape) > 1]
        with tf.GradientTape() as tape:
            logits = self.network(images, training=True)
            loss = self._loss(labels, logits)
            l2 = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in decayed])
            total = loss + 0.5 * self.weight_decay * l2 / replicas
            scaled = self.optimizer.scale_loss(total)
        gradients = tape.gradient(scaled, self.network.trainable_weights)
        self.optimizer.apply(gradients, self.network.trainable_weights)
        tf.distribute.get_replica_context().merge_call(self._update_ema)
        self.loss_tracker.update_state(loss * replicas)
        self.top1.update_state(labels, logits)
        self.top5.update_state(labels, logits)
        return self._outputs((self.loss_tracker, self.top1, self.top5))

    def _update_ema(self, strategy: tf.distribute.Strategy) -> None:
        step = tf.cast(self.optimizer.iterations, tf.float32)
        decay = tf.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))

        def update(average, value):
            return average.assign(decay * average + (1.0 - decay) * tf.cast(value, average.dtype))

        for average, value in zip(self.ema_network.weights, self.network.weights):
            strategy.extended.update(average.value, update, args=(value.value,), group=False)

    def test_step(self, batch):
        images, labels = batch
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        logits = self.network(images, training=False)
        ema_logits = self.ema_network(images, training=False)
        self.loss_tracker.update_state(self._loss(labels, logits) * replicas)
        self.ema_loss_tracker.update_state(self._loss(labels, ema_logits) * replicas)
        for metric, predictions in ((self.top1, logits), (self.top5, logits),
                                    (self.ema_top1, ema_logits), (self.ema_top5, ema_logits)):
            metric.update_state(labels, predictions)
        return self._outputs(self.metrics)

    def _outputs(self, metrics) -> dict:
        """Metric results; of shape [1] under multi-worker training, where Keras mean-reduces
        step outputs along axis 0 (scalars would fail there)."""
        if self.multi_worker:
            return {m.name: tf.reshape(m.result(), [1]) for m in metrics}
        return {m.name: m.result() for m in metrics}


def weights_fingerprint(model: keras.Model) -> str:
    """sha256 of the trainable weights: equal on workers that ended with the same model.

    BatchNorm running statistics are left out: each worker averages its own batches (as with
    PyTorch DDP without SyncBatchNorm); the chief's are the ones saved.
    """
    digest = hashlib.sha256()
    for weight in model.trainable_weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


class EpochEnd(keras.callbacks.Callback):
    """Per epoch: adds lr and images/s to the logs, saves best/last models and the checkpoint,
    prints a summary line; per batch: stops the run at the first NaN loss."""

    def __init__(self, run: "_Run"):
        super().__init__()
        self.run = run
        self.nan_at: tuple[int, int] | None = None
        self.epoch = 0
        self.started = self.evaluation_started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.started = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if logs and "loss" in logs and not math.isfinite(float(logs["loss"])):
            self.nan_at = (self.epoch + 1, batch + 1)
            self.model.stop_training = True

    def on_test_begin(self, logs=None):
        self.evaluation_started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_at is not None:
            return
        logs = logs if logs is not None else {}
        seconds = max(self.evaluation_started - self.started, 1e-9)
        logs["lr"] = float(self.run.schedule(self.run.optimizer.iterations))
        logs["images_per_sec"] = self.run.steps_per_epoch * self.run.global_batch / seconds
        self.run.end_epoch(epoch + 1, logs, time.time() - self.started)


@dataclasses.dataclass
class _Run:
    """The objects of one run that the epoch-end callback works on."""

    config: TrainConfig
    output_dir: str
    chief: bool
    network: keras.Model
    ema_network: keras.Model
    best_model: keras.Model
    export_model: keras.Model
    optimizer: keras.optimizers.Optimizer
    schedule: WarmupCosine
    checkpoints: Checkpoints
    steps_per_epoch: int
    global_batch: int
    best_top1: float = -1.0
    best_epoch: int = 0
    history: list = dataclasses.field(default_factory=list)

    def end_epoch(self, epoch: int, logs: dict, seconds: float) -> None:
        top1 = float(logs.get("val_ema_top1", 0.0))
        ema_weights = self.ema_network.get_weights()
        if top1 > self.best_top1:
            self.best_top1, self.best_epoch = top1, epoch
            self.best_model.set_weights(ema_weights)
            save_model(self.best_model, os.path.join(self.output_dir, "best.keras"),
                       publish=self.chief)
        self.export_model.set_weights(ema_weights)
        save_model(self.export_model, os.path.join(self.output_dir, "last.keras"),
                   publish=self.chief)
        self.export_model.set_weights(self.network.get_weights())
        save_model(self.export_model, os.path.join(self.output_dir, "last_raw.keras"),
                   publish=self.chief)
        self.history.append({k: float(v) for k, v in logs.items()})
        self.checkpoints.save(epoch, {
            "step": int(self.optimizer.iterations.numpy()),
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "history": self.history,
        })
        if self.chief:
            print(
                f"epoch {epoch}/{self.config.epochs}: loss {logs.get('loss', math.nan):.4f}, "
                f"top-1 {100 * logs.get('top1', math.nan):.1f}%, "
                f"val top-1 {100 * logs.get('val_top1', math.nan):.1f}%, "
                f"val EMA top-1 {100 * top1:.1f}% (best {100 * self.best_top1:.1f}% at epoch "
                f"{self.best_epoch}), lr {logs['lr']:.3g}, {logs['images_per_sec']:.0f} images/s, "
                f"{seconds:.0f} s",
                flush=True,
            )


def _float32_model(config: TrainConfig, classes: int) -> keras.Model:
    """A float32 copy of the architecture: what is saved, whatever the training dtype."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        return _build(config, classes)
    finally:
        keras.config.set_dtype_policy(policy)


def _build(config: TrainConfig, classes: int) -> keras.Model:
    return create_model(
        config.model,
        classes=classes,
        input_shape=(config.image_size, config.image_size, 3),
        classifier_activation=None,
        dropout_rate=config.dropout,
    )


def augmentation_for(config: TrainConfig) -> data.Augmentation:
    """The training augmentation of `config`."""
    randaugment = config.randaugment
    if randaugment is None:
        randaugment = default_randaugment(config.model)
    return data.Augmentation(
        min_crop_scale=config.min_crop_scale,
        color_jitter=config.color_jitter,
        randaugment_magnitude=config.randaugment_magnitude if randaugment else 0.0,
        randaugment_std=config.randaugment_std,
        random_erasing=config.random_erasing,
    )


def train(config: TrainConfig) -> dict:
    """Runs (or resumes) training and returns the run's summary (also written to summary.json).

    Raises TrainingDiverged on a NaN loss, after which the last good checkpoint is intact, and
    ConfigError when the data or the checkpoints do not fit the configuration.
    """
    strategy = make_strategy(config.strategy, config.tpu, config.logical_cpus)
    chief = is_chief(strategy)
    output_dir = config.resolved_output_dir()
    keras.utils.set_random_seed(config.seed)
    keras.config.set_dtype_policy(config.dtype)

    data.prepare(config.dataset, config.data_dir, config.manual_dir)
    classes = data.num_classes(config.dataset, config.data_dir)
    train_split, val_split, test_split = data.default_splits(config.dataset, config.data_dir)
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    train_examples = data.num_examples(config.dataset, train_split, config.data_dir)
    steps_per_epoch = config.steps_per_epoch or train_examples // global_batch
    if steps_per_epoch < 1:
        raise ConfigError(
            f"{train_examples} training images make no batch of {global_batch}; lower --batch_size."
        )
    val_examples = data.num_examples(config.dataset, val_split, config.data_dir)
    # Several replicas validate on whole global batches only (see data.make_dataset).
    validation_steps = max(1, val_examples // global_batch) if replicas > 1 else None
    total_steps = steps_per_epoch * config.epochs
    peak_lr = config.base_lr * global_batch / LR_REFERENCE_BATCH
    schedule = WarmupCosine(
        peak_lr, total_steps, round(config.warmup_epochs * steps_per_epoch),
        config.warmup_lr, config.min_lr,
    )

    with strategy.scope():
        network = _build(config, classes)
        ema_network = _build(config, classes)
        ema_network.set_weights(network.get_weights())
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum)
        trainer = EmaClassifier(
            network, ema_network, classes=classes, ema_decay=config.ema_decay,
            weight_decay=config.weight_decay, label_smoothing=config.label_smoothing,
            multi_worker=isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
        )
        trainer.compile(optimizer=optimizer, jit_compile=config.xla)
        trainer.optimizer.build(network.trainable_variables)
    best_model = _float32_model(config, classes)
    export_model = _float32_model(config, classes)
    checkpoints = Checkpoints(
        output_dir, chief, network=network, ema=ema_network, best=best_model,
        optimizer=trainer.optimizer,
    )
    run = _Run(config, output_dir, chief, network, ema_network, best_model, export_model,
               trainer.optimizer, schedule, checkpoints, steps_per_epoch, global_batch)

    initial_epoch = 0
    state = checkpoints.state()
    if config.resume is False:
        checkpoints.clear()
    elif state is not None:
        state = checkpoints.restore()
        initial_epoch = state["epoch"]
        run.best_top1, run.best_epoch = state["best_top1"], state["best_epoch"]
        run.history = state["history"]
        if chief:
            print(f"Resuming {output_dir} after epoch {initial_epoch} (step {state['step']}).")
    elif config.resume:
        raise ConfigError(f"--resume: {output_dir} has no checkpoint to resume from.")

    augmentation = augmentation_for(config)

    def train_input(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return data.make_dataset(
            config.dataset, train_split, image_size=config.image_size,
            batch_size=context.get_per_replica_batch_size(global_batch), training=True,
            data_dir=config.data_dir, manual_dir=config.manual_dir, augmentation=augmentation,
            input_context=context, shuffle_buffer=config.shuffle_buffer,
            seed=config.seed + initial_epoch,
        )

    def eval_input(split: str):
        def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
            return data.make_dataset(
                config.dataset, split, image_size=config.image_size,
                batch_size=context.get_per_replica_batch_size(global_batch), training=False,
                data_dir=config.data_dir, manual_dir=config.manual_dir, input_context=context,
                repeat=validation_steps is not None,
            )
        return strategy.distribute_datasets_from_function(make)

    epoch_end = EpochEnd(run)
    callbacks = [epoch_end]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "logs")))
    if initial_epoch < config.epochs:
        if chief:
            print(
                f"Training {config.model} on {config.dataset} ({train_split}: {train_examples} "
                f"images, {classes} classes) with {type(strategy).__name__} x{replicas}: global "
                f"batch {global_batch}, peak lr {peak_lr:.4g}, {steps_per_epoch} steps/epoch, "
                f"epochs {initial_epoch + 1}-{config.epochs}, dtype {config.dtype}.",
                flush=True,
            )
            if validation_steps is not None:
                print(f"Validating on {validation_steps * global_batch} of the {val_examples} "
                      f"{val_split} images (whole global batches).", flush=True)
        trainer.fit(
            strategy.distribute_datasets_from_function(train_input),
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_data=eval_input(val_split),
            validation_steps=validation_steps,
            callbacks=callbacks,
            verbose=config.verbose if chief else 0,
            shuffle=False,
        )
    if epoch_end.nan_at is not None:
        epoch, batch = epoch_end.nan_at
        raise TrainingDiverged(
            f"Loss became NaN at epoch {epoch}, batch {batch}; stopped. The last good checkpoint "
            f"is kept in {checkpoints.directory} (try a lower --base_lr)."
        )

    summary = _finish(config, run, test_split, classes)
    print(f"final weights sha256: {summary['trainable_weights_sha256']}", flush=True)
    return summary


def _finish(config: TrainConfig, run: _Run, test_split: str | None, classes: int) -> dict:
    """Writes deploy.keras and summary.json, scores the best model on the test split, and
    points the latest-run file at this run."""
    output_dir, chief = run.output_dir, run.chief
    save_model(fuse(run.best_model), os.path.join(output_dir, "deploy.keras"), publish=chief)
    state = run.checkpoints.state() or {}
    summary = {
        "model": config.model,
        "dataset": config.dataset,
        "image_size": config.image_size,
        "epochs": state.get("epoch", 0),
        "step": int(run.optimizer.iterations.numpy()),
        "best_epoch": run.best_epoch,
        "best_val_ema_top1": run.best_top1,
        "history": state.get("history", []),
        "trainable_weights_sha256": weights_fingerprint(run.network),
    }
    if test_split is not None:
        run.best_model.compile(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[
                keras.metrics.SparseTopKCategoricalAccuracy(1, name="top1"),
                keras.metrics.SparseTopKCategoricalAccuracy(min(5, classes), name="top5"),
            ],
        )
        test = data.make_dataset(
            config.dataset, test_split, image_size=config.image_size, batch_size=config.batch_size,
            training=False, data_dir=config.data_dir, manual_dir=config.manual_dir,
        )
        scores = run.best_model.evaluate(test, verbose=0, return_dict=True)
        summary["test_top1"], summary["test_top5"] = float(scores["top1"]), float(scores["top5"])
        if chief:
            print(f"{test_split} top-1 of best.keras: {100 * summary['test_top1']:.2f}% "
                  f"(top-5 {100 * summary['test_top5']:.2f}%)", flush=True)
    write_json(os.path.join(output_dir, "summary.json"), summary, publish=chief)
    if config.latest_file:
        write_text(config.latest_file, os.path.abspath(output_dir) + "\n", publish=chief)
    return summary
