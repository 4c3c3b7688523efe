"""Training: a short run that learns, EMA evaluation, mirrored and multi-worker runs,
kill-and-resume, NaN handling, the imagenet2012 path, and command-line validation."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from repghost_tf import data
from repghost_tf.training import ConfigError, TrainConfig, TrainingDiverged, train, validate
from repghost_tf.training.checkpoints import Checkpoints
from repghost_tf.training.trainer import EmaClassifier

from conftest import TINY, TINY_RUN, TINY_RUN_GROUP  # noqa: E402
from helpers import native_log_lines, user_environment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHANCE = 0.25  # the tiny set has four classes


def _flags(config: dict) -> list[str]:
    return [f"--{key}={value}" for key, value in config.items() if key != "model"] + [
        f"--model={config['model']}"
    ]


def _train_command(output_dir: str, data_dir: str, **overrides) -> list[str]:
    config = {**TINY_RUN, "output_dir": output_dir, "data_dir": data_dir,
              "latest_file": os.path.join(output_dir, "LATEST"), **overrides}
    return [sys.executable, os.path.join(ROOT, "train.py"), *_flags(config)]


def _env(**extra) -> dict:
    return user_environment(PYTHONPATH=ROOT, **extra)


def _state(output_dir: str) -> dict | None:
    """The state of the run's newest checkpoint; None before the first."""
    return Checkpoints(os.path.join(output_dir, "checkpoints"), is_chief=True).state()


def _summary(output_dir: str) -> dict:
    with open(os.path.join(output_dir, "summary.json")) as file:
        return json.load(file)


def _top1(model: keras.Model, dataset: tf.data.Dataset) -> float:
    correct = total = 0
    for images, labels in dataset:
        predictions = np.argmax(model.predict_on_batch(images), axis=-1)
        correct += int(np.sum(predictions == labels.numpy()))
        total += len(predictions)
    return correct / total


def _assert_learned(summary: dict) -> None:
    first, last = summary["history"][0], summary["history"][-1]
    assert last["loss"] < first["loss"]
    assert summary["test_top1"] > 1.6 * CHANCE


def test_top1_counts_a_tie_for_the_first_tied_class_only():
    """Quantized outputs tie. Top-1 is the argmax, as the TFLite file and the export's report
    count it, not every tied class (in_top_k): a network whose outputs all tie scores the share
    of labels that are its first class, for the network and its EMA alike."""
    def tied() -> keras.Model:
        return keras.Sequential([keras.Input((4,)),
                                 keras.layers.Dense(3, kernel_initializer="zeros")])

    trainer = EmaClassifier(tied(), tied(), classes=3, label_smoothing=0.0, ema_decay=0.0,
                            weight_decay=0.0)
    trainer.compile(optimizer=keras.optimizers.SGD(0.0))
    images = np.ones((8, 4), np.float32)
    labels = np.array([0, 1, 2, 1, 0, 2, 2, 1])
    scores = trainer.evaluate(tf.data.Dataset.from_tensors((images, labels)), verbose=0,
                              return_dict=True)
    assert scores["top1"] == scores["ema_top1"] == 0.25
    assert scores["top5"] == scores["ema_top5"] == 1.0


@TINY_RUN_GROUP
@pytest.mark.slow
def test_short_run_learns_and_evaluates_the_ema(tiny_run, tiny_data_dir):
    config, summary = tiny_run
    output_dir, latest = config.output_dir, config.latest_file
    _assert_learned(summary)
    assert _state(output_dir)["step"] == summary["step"] == 2 * 150
    with open(latest) as file:
        assert file.read().strip() == os.path.abspath(output_dir)
    assert os.listdir(os.path.join(output_dir, "logs", "train"))

    load = dict(compile=False, safe_mode=True)
    best = keras.saving.load_model(os.path.join(output_dir, "best.keras"), **load)
    last = keras.saving.load_model(os.path.join(output_dir, "last.keras"), **load)
    raw = keras.saving.load_model(os.path.join(output_dir, "last_raw.keras"), **load)
    deploy = keras.saving.load_model(os.path.join(output_dir, "deploy.keras"), **load)

    # The EMA is a different set of weights, and it is what val_ema_* scored.
    assert any(not np.allclose(a, b) for a, b in zip(last.get_weights(), raw.get_weights()))
    validation = data.make_dataset(
        TINY, "validation", image_size=48, batch_size=50, training=False, data_dir=tiny_data_dir
    )
    history = summary["history"]
    assert _top1(last, validation) == pytest.approx(history[-1]["val_ema_top1"], abs=1e-6)
    assert _top1(raw, validation) == pytest.approx(history[-1]["val_top1"], abs=1e-6)
    best_epoch = max(range(len(history)), key=lambda i: history[i]["val_ema_top1"])
    assert _top1(best, validation) == pytest.approx(history[best_epoch]["val_ema_top1"], abs=1e-6)

    images, _ = next(iter(validation))
    logits = best.predict_on_batch(images)
    assert not np.allclose(logits.sum(axis=-1), 1.0)  # logits, not probabilities
    np.testing.assert_allclose(deploy.predict_on_batch(images), logits, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tmp_path, tiny_data_dir):
    output_dir = str(tmp_path / "mirrored")
    command = _train_command(output_dir, tiny_data_dir, strategy="mirrored", logical_cpus=2,
                             batch_size=32)
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert native_log_lines(result.stderr) == []
    assert "MirroredStrategy x2: global batch 64" in result.stdout
    assert "Validating on 192 of the 200 validation images" in result.stdout
    summary = _summary(output_dir)
    assert summary["step"] == 2 * 150
    _assert_learned(summary)
    # The per-epoch validation under two replicas scores about what a plain evaluation of
    # best.keras on the same 192 images scores; Keras mis-counted a finite distributed dataset
    # (val top-5 75% on four classes, top-1 21 points low). Not exactly: each replica keeps its
    # own BatchNorm moving statistics (kernels stay equal), and best.keras holds replica 0's.
    best_epoch = summary["history"][summary["best_epoch"] - 1]
    assert best_epoch["val_ema_top5"] == 1.0  # four classes: top-4 always holds the label
    best = keras.saving.load_model(os.path.join(output_dir, "best.keras"), compile=False,
                                   safe_mode=True)
    validated = data.make_dataset(TINY, "validation[:192]", image_size=48, batch_size=64,
                                  training=False, data_dir=tiny_data_dir)
    assert abs(best_epoch["val_ema_top1"] - _top1(best, validated)) <= 0.03


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_two_processes_agree(tmp_path, tiny_data_dir):
    output_dir = str(tmp_path / "multi")
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    command = _train_command(output_dir, tiny_data_dir, strategy="multi_worker", batch_size=8,
                             steps_per_epoch=4)
    processes = [
        subprocess.Popen(
            command,
            env=_env(TF_CONFIG=json.dumps({
                "cluster": {"worker": workers}, "task": {"type": "worker", "index": index},
            })),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for index in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    fingerprints = [
        line.split(":")[1].strip() for output in outputs for line in output.splitlines()
        if line.startswith("final weights sha256:")
    ]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    assert "x2: global batch 16" in outputs[0]
    assert _summary(output_dir)["step"] == 2 * 4
    assert sorted(f for f in os.listdir(output_dir) if f.endswith(".keras")) == [
        "best.keras", "deploy.keras", "last.keras", "last_raw.keras"
    ]
    assert not [f for f in os.listdir(output_dir) if f.startswith(".tmp-")]


def _entries(folder: str) -> list[str]:
    return os.listdir(folder) if os.path.isdir(folder) else []


def _wait_stopped(pid: int) -> None:
    """Returns once every thread of `pid` is stopped (state T in /proc), so that its files no
    longer change."""
    while True:
        tasks = os.listdir(f"/proc/{pid}/task")
        states = []
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/stat") as file:
                    states.append(file.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:  # a thread that ended meanwhile
                continue
        if all(state in "tTZ" for state in states):
            return
        time.sleep(0.0005)


def _kill_when(process: subprocess.Popen, reached, deadline: float = 500) -> None:
    """SIGKILLs `process` at the point where `reached()` (a look at the run's files) is true.
    The process is stopped (SIGSTOP) first and the point looked at again: only a kill that lands
    while the point still holds counts; otherwise it goes on (SIGCONT) to the next time."""
    end = time.time() + deadline
    while time.time() < end:
        if process.poll() is not None:
            pytest.fail("the run ended before the kill point")
        if reached():
            process.send_signal(signal.SIGSTOP)
            _wait_stopped(process.pid)
            if reached():
                process.send_signal(signal.SIGKILL)
                process.wait()
                return
            process.send_signal(signal.SIGCONT)
        time.sleep(0.001)
    process.kill()
    pytest.fail("the kill point was not reached in time")


def _generating_dataset(run: str, data: str) -> bool:
    """TFDS builds the built-in set in an 'incomplete.*' folder beside its final one."""
    return any("incomplete" in name for _, folders, _ in os.walk(data) for name in folders)


def _after_first_checkpoint(run: str, data: str) -> bool:
    return any(name.startswith("epoch-") for name in _entries(os.path.join(run, "checkpoints")))


def _writing_second_checkpoint(run: str, data: str) -> bool:
    """A checkpoint's temporary folder is there, not yet renamed, beside a finished one."""
    names = _entries(os.path.join(run, "checkpoints"))
    return (any(name.startswith(".tmp-") for name in names)
            and any(name.startswith("epoch-") for name in names))


def _in_final_phase(run: str, data: str) -> bool:
    """All epochs done and deploy.keras written; the test split not yet scored."""
    return (os.path.exists(os.path.join(run, "deploy.keras"))
            and not os.path.exists(os.path.join(run, "summary.json")))


# Where a run is killed, by what its files show at that moment.
KILL_POINTS = {
    "dataset generation": _generating_dataset,
    "mid-run": _after_first_checkpoint,
    "checkpoint write": _writing_second_checkpoint,
    "final phase": _in_final_phase,
}
KILLED_RUN = dict(epochs=3, steps_per_epoch=6)


@pytest.fixture(scope="module")
def uninterrupted_sha256(tmp_path_factory, tiny_data_dir) -> str:
    output_dir = str(tmp_path_factory.mktemp("uninterrupted") / "run")
    result = subprocess.run(_train_command(output_dir, tiny_data_dir, **KILLED_RUN), env=_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = _summary(output_dir)
    # An uninterrupted run makes epochs x steps_per_epoch optimizer steps.
    assert summary["step"] == 3 * 6 and len(summary["history"]) == 3
    return summary["trainable_weights_sha256"]


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_run_resumes_to_the_uninterrupted_runs_weights(point, tmp_path, tiny_data_dir,
                                                              uninterrupted_sha256):
    """SIGKILL at each point, then the same command: under --deterministic (TINY_RUN) the run
    ends with the uninterrupted run's weights, bit for bit."""
    output_dir = str(tmp_path / "killed")
    data_dir = str(tmp_path / "tfds") if point == "dataset generation" else tiny_data_dir
    command = _train_command(output_dir, data_dir, **KILLED_RUN)
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _kill_when(process, lambda: KILL_POINTS[point](output_dir, data_dir))
    killed_at = _state(output_dir)
    if point == "dataset generation":
        assert killed_at is None and not os.path.exists(os.path.join(output_dir, "checkpoints"))
    elif point == "final phase":
        assert killed_at["epoch"] == 3
    else:
        assert killed_at["epoch"] < 3

    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    if killed_at is not None:
        assert f"after epoch {killed_at['epoch']} (step {killed_at['step']})" in result.stdout
    final = _state(output_dir)
    assert final["epoch"] == 3 and final["step"] == 3 * 6 and len(final["history"]) == 3
    assert _summary(output_dir)["trainable_weights_sha256"] == uninterrupted_sha256
    assert not [name for name in _entries(os.path.join(output_dir, "checkpoints"))
                if name.startswith(".tmp-")]


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_costs_one_epoch_and_no_weights(tmp_path, tiny_data_dir):
    """A finished run whose newest checkpoint is truncated (a crash with the page cache unflushed)
    is run again: it says so in one line, trains the last epoch again from the one before and,
    under --deterministic, ends with the same weights."""
    output_dir = str(tmp_path / "run")
    command = _train_command(output_dir, tiny_data_dir, epochs=3, steps_per_epoch=6)
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    finished = _summary(output_dir)["trainable_weights_sha256"]
    folder = os.path.join(output_dir, "checkpoints", "epoch-0003")
    (data_file,) = [os.path.join(folder, f) for f in os.listdir(folder) if ".data-" in f]
    with open(data_file, "r+b") as file:
        file.truncate(os.path.getsize(data_file) // 2)

    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Checkpoint epoch-0003 does not read (")
    assert lines[1].startswith("Resuming ") and "after epoch 2 (step 12)" in lines[1]
    assert _summary(output_dir)["trainable_weights_sha256"] == finished


@TINY_RUN_GROUP
@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_run, tmp_path):
    config, _ = tiny_run
    output_dir = str(tmp_path / "nan")
    shutil.copytree(config.output_dir, output_dir)
    # Resumed for a third epoch whose learning rate explodes.
    exploding = dataclasses.replace(config, output_dir=output_dir, latest_file="", epochs=3,
                                    base_lr=1e12)
    with pytest.raises(TrainingDiverged, match="NaN"):
        train(exploding)
    state = _state(output_dir)
    assert state["epoch"] == 2 and state["step"] == 2 * 150
    assert os.path.isdir(os.path.join(output_dir, "checkpoints", state["checkpoint"]))
    assert not os.path.exists(os.path.join(output_dir, "checkpoints", "epoch-0003"))


@pytest.mark.slow
def test_imagenet2012_end_to_end_under_mock_data(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    config = TrainConfig(
        model="repghostnet_050", dataset="imagenet2012", data_dir=str(tmp_path / "tfds"),
        manual_dir=str(manual), output_dir=str(tmp_path / "imagenet"), latest_file="",
        image_size=32, batch_size=4, epochs=1, steps_per_epoch=2, warmup_epochs=0.5, verbose=0,
    )
    with pytest.raises(ConfigError, match="ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar"):
        validate(config)
    for name in data.IMAGENET_MANUAL_FILES:
        (manual / name).write_bytes(b"")
    with tfds.testing.mock_data(num_examples=8):
        validate(config)
        summary = train(config)
    assert summary.step == 2
    assert summary.test_top1 is None  # imagenet2012's test split has no labels
    model = keras.saving.load_model(
        os.path.join(config.output_dir, "deploy.keras"), compile=False, safe_mode=True
    )
    assert model.output_shape == (None, 1000)


@pytest.mark.slow
def test_warmup_longer_than_the_run_is_shortened_and_said_so(tmp_path, tiny_data_dir):
    output_dir = str(tmp_path / "short")
    command = _train_command(output_dir, tiny_data_dir, epochs=1, steps_per_epoch=8,
                             warmup_epochs=5, batch_size=16)
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    first_line = result.stdout.splitlines()[0]
    assert first_line.startswith("Training repghostnet_050")
    assert first_line.endswith("; warm-up shortened to 0.125 epochs (--warmup_epochs=5 does not "
                               "fit in --epochs=1).")
    assert _summary(output_dir)["step"] == 8


@pytest.mark.slow
def test_the_first_run_on_a_fresh_data_dir_gets_the_weights_of_the_later_ones(tmp_path):
    """Generating the dataset draws random numbers; the run is seeded after it. And --min_steps
    takes a run that would make too few steps to as many epochs as it needs."""
    config = TrainConfig(**{**TINY_RUN, "epochs": 1, "steps_per_epoch": 2, "min_steps": 5},
                         data_dir=str(tmp_path / "fresh"), latest_file="")
    first = train(dataclasses.replace(config, output_dir=str(tmp_path / "first")))
    second = train(dataclasses.replace(config, output_dir=str(tmp_path / "second")))
    assert first.trainable_weights_sha256 == second.trainable_weights_sha256
    assert (first.epochs, first.step) == (3, 6)
