"""The training loop: builds the run under its strategy, resumes it, fits it epoch by epoch
(saving models and a checkpoint after each), then writes the deploy model and the run summary.

`train.py` turns flags into a `TrainConfig` and calls `train`; tests call `train` directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from typing import Callable

import keras
import tensorflow as tf

from repghost_tf import data, runs
from repghost_tf.atomic_files import save_model
from repghost_tf.training import config as configuration
from repghost_tf.training.checkpoints import Checkpoints, CheckpointsUnreadable
from repghost_tf.training.config import ConfigError, TrainConfig, TrainingDiverged
from repghost_tf.training.distribute import is_chief, make_strategy
from repghost_tf.training.tasks import Task, task_of
from repghost_tf.training.trainer import EmaTrainer, WarmupCosine, weights_fingerprint


@dataclasses.dataclass(frozen=True)
class _Splits:
    """The dataset facts a run is sized by."""

    classes: int
    train: str
    validation: str
    test: str | None
    train_examples: int
    validation_examples: int


@dataclasses.dataclass
class _Run:
    """The objects of one run that the epoch-end callback works on."""

    config: TrainConfig
    task: Task
    output_dir: str
    chief: bool
    network: keras.Model
    ema_network: keras.Model
    best_model: keras.Model
    export_model: keras.Model
    trainer: EmaTrainer
    schedule: WarmupCosine
    checkpoints: Checkpoints
    steps_per_epoch: int
    global_batch: int
    best_score: float | None = None  # of the task's monitored validation entry
    best_epoch: int = 0
    history: list = dataclasses.field(default_factory=list)

    def path(self, name: str) -> str:
        return os.path.join(self.output_dir, name)

    def end_epoch(self, epoch: int, logs: dict, seconds: float) -> None:
        """Saves best.keras (when the task says validation improved), last.keras,
        last_raw.keras and the checkpoint of finished epoch `epoch`, then prints its summary
        line."""
        score = float(logs.get(self.task.monitor, math.nan))
        ema_weights = self.ema_network.get_weights()
        if self.task.improved(score, self.best_score):
            self.best_score, self.best_epoch = score, epoch
            self.best_model.set_weights(ema_weights)
            save_model(self.best_model, self.path(runs.BEST_MODEL), publish=self.chief)
        self.export_model.set_weights(ema_weights)
        save_model(self.export_model, self.path(runs.LAST_MODEL), publish=self.chief)
        self.export_model.set_weights(self.network.get_weights())
        save_model(self.export_model, self.path(runs.LAST_RAW_MODEL), publish=self.chief)
        self.history.append({k: float(v) for k, v in logs.items()})
        self.checkpoints.save(epoch, {
            "step": int(self.trainer.optimizer.iterations.numpy()),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "history": self.history,
        })
        if self.chief:
            # Keras's progress bar (verbose=1) ends its line only after the callbacks.
            print(
                "\n" * (self.config.verbose == 1) + f"epoch {epoch}/{self.config.epochs}: "
                f"{self.task.epoch_line(logs, self.best_score, self.best_epoch)}, "
                f"lr {logs['lr']:.3g}, {logs['images_per_sec']:.0f} images/s, {seconds:.0f} s",
                flush=True,
            )


class EpochEnd(keras.callbacks.Callback):
    """Per epoch: adds lr and images/s to the logs and hands them to `_Run.end_epoch`; per batch:
    stops the run at the first NaN loss."""

    def __init__(self, run: _Run):
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
        logs["lr"] = float(self.run.schedule(self.run.trainer.optimizer.iterations))
        logs["images_per_sec"] = self.run.steps_per_epoch * self.run.global_batch / seconds
        self.run.end_epoch(epoch + 1, logs, time.time() - self.started)


def train(config: TrainConfig) -> runs.RunSummary:
    """Runs (or resumes) training and returns the run's summary (also written to summary.json).

    Raises TrainingDiverged on a NaN loss, after which the last good checkpoint is intact, and
    ConfigError when the data or the checkpoints do not fit the configuration.
    """
    strategy = make_strategy(config.strategy, config.tpu, config.logical_cpus)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.config.set_dtype_policy(config.dtype)
    owner = runs.hold(config.resolved_output_dir()) if is_chief(strategy) else None
    with owner or contextlib.nullcontext():
        # Seeded after the dataset is prepared: generating it the first time draws random
        # numbers, and the first run would start from other weights than the later ones.
        splits = _splits(config)
        keras.utils.set_random_seed(config.seed)
        config, steps_per_epoch = _sized(config, strategy, splits)
        run = _build_run(config, task_of(config), strategy, splits, steps_per_epoch)
        initial_epoch = _resume(run)
        validation_steps = _validation_steps(run, splits)
        if initial_epoch < config.epochs:
            if run.chief:
                _announce(run, strategy, splits, initial_epoch, validation_steps)
            _fit(run, strategy, splits, initial_epoch, validation_steps)
        summary = _finish(run, splits)
    # Every worker prints it: multi-worker runs compare them.
    print(f"final weights sha256: {summary.trainable_weights_sha256}", flush=True)
    return summary


def _sized(
    config: TrainConfig, strategy: tf.distribute.Strategy, splits: _Splits
) -> tuple[TrainConfig, int]:
    """The steps per epoch, and the configuration with as many epochs as --min_steps needs."""
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    steps_per_epoch = config.steps_per_epoch or splits.train_examples // global_batch
    if steps_per_epoch < 1:
        raise ConfigError(
            f"{splits.train_examples} training images make no batch of {global_batch}; "
            "lower --batch_size."
        )
    if steps_per_epoch * config.epochs < config.min_steps:
        config = dataclasses.replace(config, epochs=-(-config.min_steps // steps_per_epoch))
    return config, steps_per_epoch


def _splits(config: TrainConfig) -> _Splits:
    """Prepares the dataset (downloading or generating it once) and reads its splits."""
    data.prepare(config.dataset, config.data_dir, config.manual_dir, config.task)
    train_split, validation_split, test_split = data.default_splits(config.dataset, config.data_dir)
    return _Splits(
        classes=data.num_classes(config.dataset, config.data_dir),
        train=train_split,
        validation=validation_split,
        test=test_split,
        train_examples=data.num_examples(config.dataset, train_split, config.data_dir),
        validation_examples=data.num_examples(config.dataset, validation_split, config.data_dir),
    )


def _build_run(
    config: TrainConfig, task: Task, strategy: tf.distribute.Strategy, splits: _Splits,
    steps_per_epoch: int,
) -> _Run:
    """The networks, optimizer, schedule and checkpoints of a fresh run."""
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    schedule = WarmupCosine(
        config.base_lr * global_batch / configuration.LR_REFERENCE_BATCH,
        total_steps=steps_per_epoch * config.epochs,
        warmup_steps=round(configuration.fitted_warmup(config) * steps_per_epoch),
        warmup_lr=config.warmup_lr,
        min_lr=config.min_lr,
    )
    with strategy.scope():  # a model the task loads (a QAT run's float model) is built here too
        build = task.network(splits.classes)
        network = build()
        ema_network = build()
        ema_network.set_weights(network.get_weights())
        trainer = task.trainer(
            network, ema_network, splits.classes, steps_per_epoch, ema_decay=config.ema_decay,
            weight_decay=config.weight_decay,
            multi_worker=isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
        )
        trainer.compile(
            optimizer=keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum),
            jit_compile=config.xla,
        )
        trainer.optimizer.build(network.trainable_variables)
    best_model = _float32_model(build)
    export_model = _float32_model(build)
    output_dir = config.resolved_output_dir()
    chief = is_chief(strategy)
    checkpoints = Checkpoints(
        os.path.join(output_dir, runs.CHECKPOINTS), chief, network=network, ema=ema_network,
        best=best_model, optimizer=trainer.optimizer,
    )
    return _Run(config, task, output_dir, chief, network, ema_network, best_model, export_model,
                trainer, schedule, checkpoints, steps_per_epoch, global_batch)


def _float32_model(build: Callable[[], keras.Model]) -> keras.Model:
    """A float32 copy of the architecture: what is saved, whatever the training dtype."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        return build()
    finally:
        keras.config.set_dtype_policy(policy)


def _resume(run: _Run) -> int:
    """Restores the newest checkpoint unless --noresume; returns the epochs already done."""
    if run.config.resume is False:
        run.checkpoints.clear()
        return 0
    run.checkpoints.remove_unfinished()
    if run.checkpoints.state() is None:
        if run.config.resume:
            raise ConfigError(f"--resume: {run.output_dir} has no checkpoint to resume from.")
        return 0
    try:
        state = run.checkpoints.restore()
    except CheckpointsUnreadable as error:
        raise ConfigError(str(error)) from error
    # "best_top1": checkpoints of classification runs written before detection came.
    run.best_score = state.get("best_score", state.get("best_top1"))
    run.best_epoch = state["best_epoch"]
    run.history = state["history"]
    if run.chief:
        print(f"Resuming {run.output_dir} after epoch {state['epoch']} (step {state['step']}).")
    return state["epoch"]


def _validation_steps(run: _Run, splits: _Splits) -> int | None:
    """None (one pass) with one replica; several replicas validate on whole global batches only,
    as Keras mis-counts metrics at the end of a finite distributed dataset."""
    if run.global_batch == run.config.batch_size:
        return None
    return max(1, splits.validation_examples // run.global_batch)


def _announce(run, strategy, splits: _Splits, initial_epoch: int, validation_steps) -> None:
    config = run.config
    print(
        f"{run.task.title()} on {config.dataset} ({splits.train}: {splits.train_examples} "
        f"images, {splits.classes} classes) with {type(strategy).__name__} "
        f"x{strategy.num_replicas_in_sync}: global batch {run.global_batch}, peak lr "
        f"{run.schedule.peak_lr:.4g}, {run.steps_per_epoch} steps/epoch, epochs "
        f"{initial_epoch + 1}-{config.epochs}{_min_steps_note(config, run.steps_per_epoch)}, "
        f"dtype {config.dtype}{_warmup_note(config)}.",
        flush=True,
    )
    if validation_steps is not None:
        print(f"Validating on {validation_steps * run.global_batch} of the "
              f"{splits.validation_examples} {splits.validation} images (whole global batches).",
              flush=True)


def _min_steps_note(config: TrainConfig, steps_per_epoch: int) -> str:
    """Says so when --min_steps decided the epochs (a small dataset)."""
    if (config.epochs - 1) * steps_per_epoch >= config.min_steps:
        return ""
    return f" (as many as --min_steps={config.min_steps} steps take)"


def _warmup_note(config: TrainConfig) -> str:
    warmup = configuration.fitted_warmup(config)
    if warmup == config.warmup_epochs:
        return ""
    return (f"; warm-up shortened to {warmup:g} epochs (--warmup_epochs={config.warmup_epochs:g} "
            f"does not fit in --epochs={config.epochs})")


def _fit(run: _Run, strategy, splits: _Splits, initial_epoch: int, validation_steps) -> None:
    """Trains epochs initial_epoch + 1 ... config.epochs; raises TrainingDiverged on a NaN."""
    config, global_batch = run.config, run.global_batch

    def train_input(context: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = run.task.dataset(
            splits.train, training=True,
            batch_size=context.get_per_replica_batch_size(global_batch), input_context=context,
            shuffle_buffer=config.shuffle_buffer, deterministic=config.deterministic,
            seed=config.seed if config.deterministic else config.seed + initial_epoch,
        )
        if config.deterministic and initial_epoch:
            # A resumed run replays the finished epochs' batches (input work, no training) and
            # goes on with those an uninterrupted run would draw: the same final weights.
            dataset = dataset.skip(initial_epoch * run.steps_per_epoch)
        return dataset

    def validation_input(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return run.task.dataset(
            splits.validation, training=False,
            batch_size=context.get_per_replica_batch_size(global_batch), input_context=context,
            repeat=validation_steps is not None,
        )

    epoch_end = EpochEnd(run)
    callbacks = [epoch_end, *run.task.callbacks(run.network)]
    if run.chief:
        callbacks.append(keras.callbacks.TensorBoard(run.path(runs.LOGS)))
    run.trainer.fit(
        strategy.distribute_datasets_from_function(train_input),
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=run.steps_per_epoch,
        validation_data=strategy.distribute_datasets_from_function(validation_input),
        validation_steps=validation_steps,
        callbacks=callbacks,
        verbose=config.verbose if run.chief else 0,
        shuffle=False,
    )
    if epoch_end.nan_at is not None:
        epoch, batch = epoch_end.nan_at
        raise TrainingDiverged(
            f"Loss became NaN at epoch {epoch}, batch {batch}; stopped. The last good checkpoint "
            f"is kept in {run.checkpoints.directory} (try a lower --base_lr)."
        )


def _finish(run: _Run, splits: _Splits) -> runs.RunSummary:
    """Writes deploy.keras and summary.json, scores the best model on the test split, and
    points the latest-run file at this run."""
    config, chief = run.config, run.chief
    deploy = run.task.deploy_form(run.best_model)
    save_model(deploy, run.path(runs.DEPLOY_MODEL), publish=chief)
    state = run.checkpoints.state() or {}
    summary = runs.RunSummary(
        model=config.model,
        task=config.task,
        dataset=config.dataset,
        image_size=config.image_size,
        epochs=state.get("epoch", 0),
        step=int(run.trainer.optimizer.iterations.numpy()),
        best_epoch=run.best_epoch,
        history=state.get("history", []),
        trainable_weights_sha256=weights_fingerprint(run.network),
        **run.task.summary_fields(),
    )
    # best_val_ema_top1 or best_val_ema_loss
    setattr(summary, f"best_{run.task.monitor}", run.best_score)
    if splits.test is not None:
        scored, name = run.task.scored(run.best_model, deploy)
        scores = run.task.evaluate(scored, splits.test)
        for field, value in scores.items():
            setattr(summary, field, value)
        if chief:
            print(f"{splits.test} {run.task.describe(scores)} of {name}", flush=True)
    summary.write(run.output_dir, publish=chief)
    if config.latest_file:
        runs.write_latest(config.latest_file, run.output_dir, publish=chief)
    return summary
