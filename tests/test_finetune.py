"""Fine-tuning a pretrained classifier to a folder of one's own classes: the weights it starts
from, the head that trains alone, the frozen backbone, the folder end to end through the export,
and the sources it refuses."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from repghost_tf import quantization, runs
from repghost_tf.export.pipeline import ExportOptions, export
from repghost_tf.fusion import fuse, walk_layers
from repghost_tf.models.registry import create_model
from repghost_tf.training import ConfigError, TrainConfig, train, validate
from repghost_tf.training.pretrained import head_layers
from repghost_tf.training.tasks import FineTune
from repghost_tf.training.trainer import EmaClassifier

from helpers import randomize_batchnorms, user_environment
from test_data import write_photo_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 48


def _pretrained(path: str, model: str = "repghostnet_050", classes: int = 10) -> str:
    """A classifier with random weights and non-trivial BatchNorm statistics, saved to `path`."""
    network = create_model(model, classes=classes, input_shape=(SIZE, SIZE, 3),
                           classifier_activation=None)
    randomize_batchnorms(network, seed=1)
    network.save(path)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    return _pretrained(str(tmp_path_factory.mktemp("pretrained") / "pretrained.keras"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("photos") / "flowers")
    write_photo_folder(root)
    return root


def _config(source: str, photos: str, tmp_path, **overrides) -> TrainConfig:
    return TrainConfig(
        model="repghostnet_050", dataset=f"folder:{photos}", init_from=source, image_size=SIZE,
        batch_size=8, epochs=1, steps_per_epoch=2, base_lr=0.4, ema_decay=0.0, dropout=0.0,
        label_smoothing=0.0, min_crop_scale=1.0, color_jitter=0.0, random_erasing=0.0,
        output_dir=str(tmp_path / "run"), latest_file=str(tmp_path / "LATEST"), verbose=0,
        **overrides)  # not deterministic: op determinism is process-wide, and nothing here needs it


def _features(model: keras.Model) -> dict[str, list[np.ndarray]]:
    head = head_layers(model.name)
    return {layer.name: layer.get_weights() for layer in model.layers
            if layer.weights and layer.name not in head}


def _assert_equal(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        for a, b in zip(actual[name], expected[name], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("classes", [3, pytest.param(10, marks=pytest.mark.slow)])
def test_classifier_starts_from_the_source(source, photos, tmp_path, classes):
    pretrained = keras.saving.load_model(source, compile=False, safe_mode=True)
    task = FineTune(_config(source, photos, tmp_path))
    model = task.network(classes)()
    assert model.outputs[0].shape[-1] == classes
    _assert_equal(_features(model), _features(pretrained))
    # The 1x1 conv head keeps its weights; the classifier is new only for a new class count.
    np.testing.assert_array_equal(model.get_layer("conv_head").get_weights()[0],
                                  pretrained.get_layer("conv_head").get_weights()[0])
    assert task.fresh == ([] if classes == 10 else ["classifier"])
    if classes == 10:
        for a, b in zip(model.get_layer("classifier").get_weights(),
                        pretrained.get_layer("classifier").get_weights()):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_the_head_trains_alone_for_its_steps():
    keras.utils.set_random_seed(0)
    network = create_model("repghostnet_050", classes=3, input_shape=(SIZE, SIZE, 3),
                           classifier_activation=None)
    ema = create_model("repghostnet_050", classes=3, input_shape=(SIZE, SIZE, 3),
                       classifier_activation=None)
    head = head_layers("repghostnet_050")
    trainer = EmaClassifier(network, ema, classes=3, label_smoothing=0.0, ema_decay=0.0,
                            weight_decay=1e-4, head=head, head_only_steps=2)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    images = np.random.default_rng(0).uniform(0, 255, (8, SIZE, SIZE, 3)).astype(np.float32)
    labels = np.arange(8) % 3

    def trainable() -> dict[str, np.ndarray]:
        return {w.path: w.numpy().copy() for w in network.trainable_weights}

    def steps(count: int) -> None:
        batches = tf.data.Dataset.from_tensors((images, labels)).repeat()
        trainer.fit(batches, steps_per_epoch=count, epochs=1, verbose=0)

    start = trainable()
    steps(2)
    after_head_steps = trainable()
    in_head = {w.path for name in head for w in network.get_layer(name).weights}
    for path, value in start.items():
        if path in in_head:
            assert not np.array_equal(after_head_steps[path], value), path
        else:
            np.testing.assert_array_equal(after_head_steps[path], value, err_msg=path)
    steps(1)
    moved = [p for p, v in trainable().items() if p not in in_head and not np.array_equal(
        v, after_head_steps[p])]
    assert len(moved) > len(start) // 2


@pytest.mark.slow
def test_a_folder_fine_tunes_with_a_frozen_backbone_and_exports_its_labels(
        source, photos, tmp_path):
    config = _config(source, photos, tmp_path, freeze_backbone=True)
    validate(config)
    summary = train(config)
    assert summary.pretrained_from == os.path.abspath(source)
    assert summary.init_from is None  # what a QAT run records, not a fine-tuning one
    pretrained = keras.saving.load_model(source, compile=False, safe_mode=True)
    trained = keras.saving.load_model(os.path.join(config.output_dir, runs.LAST_RAW_MODEL),
                                      compile=False, safe_mode=True)
    # Frozen: every feature weight, BatchNorm statistics included, exactly as loaded.
    _assert_equal(_features(trained), _features(pretrained))
    assert trained.outputs[0].shape[-1] == 3

    written = export(ExportOptions(model=os.path.join(config.output_dir, runs.DEPLOY_MODEL),
                                   output_dir=str(tmp_path / "export")), log=lambda _: None)
    labels = next(path for path in written if path.endswith("_labels.txt"))
    with open(labels, encoding="utf-8") as file:
        assert file.read().split() == ["daisy", "rose", "tulip"]


def test_settings_that_need_a_source(photos, tmp_path):
    config = TrainConfig(model="repghostnet_050", dataset=f"folder:{photos}", head_epochs=1)
    with pytest.raises(ConfigError, match="give --init_from"):
        validate(config)
    with pytest.raises(ConfigError, match="--head_epochs must be in"):
        validate(dataclasses.replace(_config(_pretrained(str(tmp_path / "m.keras")), photos,
                                             tmp_path), head_epochs=1))


@pytest.fixture(scope="module")
def bad_sources(tmp_path_factory, source) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("bad_sources")
    paths = {
        "ghostnet": _pretrained(str(directory / "ghostnet.keras"), "ghostnet_050"),
        "deploy": str(directory / "deploy.keras"),
        "qat": str(directory / "qat.keras"),
        "text": str(directory / "notes.keras"),
    }
    pretrained = keras.saving.load_model(source, compile=False, safe_mode=True)
    fuse(pretrained).save(paths["deploy"])
    quantization.quantize_model(fuse(pretrained)).save(paths["qat"])
    with open(paths["text"], "w") as file:
        file.write("not a model\n")
    try:
        from repghost_tf.detection.detector import RepGhostNetDetector
        from repghost_tf.hub import RepGhostNetBackbone
    except ImportError:
        return paths
    paths["detector"] = str(directory / "detector.keras")
    RepGhostNetDetector(RepGhostNetBackbone("repghostnet_050", image_shape=(64, 64, 3)),
                        num_classes=2).save(paths["detector"])
    return paths


@pytest.mark.parametrize("name, model, message", [
    ("ghostnet", "repghostnet_050", "holds ghostnet_050, not repghostnet_050; leave out --model"),
    ("source", "repghostnet_100", "holds repghostnet_050, not repghostnet_100"),
    ("deploy", "repghostnet_050", "is in deploy form (no BatchNorm to train)"),
    ("qat", "repghostnet_050", "is a QAT model; give the float model it started from"),
    ("text", "repghostnet_050", "is not a .keras model"),
    ("detector", "repghostnet_050", "holds a detector: give the classifier it started from"),
])
def test_sources_it_refuses(bad_sources, source, photos, tmp_path, name, model, message):
    path = source if name == "source" else bad_sources.get(name)
    if path is None:
        pytest.skip("needs keras-hub")
    config = dataclasses.replace(_config(path, photos, tmp_path), model=model)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(config)
        train(config)
    assert not os.path.exists(config.output_dir) and not os.path.exists(config.latest_file)


def test_the_command_line_refuses_a_source_in_one_line(bad_sources, photos, tmp_path):
    output_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), f"--init_from={bad_sources['ghostnet']}",
         f"--dataset=folder:{photos}", "--width=0.5", f"--output_dir={output_dir}",
         f"--latest_file={tmp_path / 'LATEST'}"],
        env=user_environment(PYTHONPATH=ROOT), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"train.py: error: --init_from={bad_sources['ghostnet']} holds ghostnet_050, not "
        "repghostnet_050; leave out --model/--width to take the source's"]
    assert not output_dir.exists()


def test_freeze_batchnorm_keeps_every_pretrained_batchnorm_in_inference_mode(
        source, photos, tmp_path):
    task = FineTune(_config(source, photos, tmp_path, freeze_batchnorm=True))
    build = task.network(3)
    network, ema = build(), build()
    task.trainer(network, ema, 3, steps_per_epoch=2, ema_decay=0.0, weight_decay=0.0)
    batchnorms = [layer for top in network.layers for layer in (top, *walk_layers(top))
                  if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(batchnorms) > 20 and not any(layer.trainable for layer in batchnorms)
    trainable = {w.path for w in network.trainable_weights}
    assert any("conv_stem" in path and path.endswith("kernel") for path in trainable)
    assert not any("gamma" in path or "beta" in path for path in trainable)
