"""benchmark/int8_flips.py: int8-vs-float top-1 flips by the strength of each image's features."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import repghost_tf
from benchmark import int8_flips
from repghost_tf.export import tflite
from repghost_tf.fusion import walk_layers
from helpers import randomize_batchnorms

from conftest import TINY  # noqa: E402


def test_flips_are_binned_by_feature_strength():
    rng = np.random.default_rng(0)
    examples = 400
    feature_max = rng.uniform(0.5, 5.0, examples)
    labels = rng.integers(0, 4, examples)
    float_logits = rng.normal(size=(examples, 4))
    float_logits[np.arange(examples), labels] += 10.0  # the float model is right on every image
    int8_logits = float_logits.copy()
    weakest = np.argsort(feature_max)[:100]
    flipped = weakest[::4]  # a quarter of the weakest quartile's images change their top-1
    int8_logits[flipped, labels[flipped]] -= 30.0

    statistics = int8_flips.flip_statistics(float_logits, int8_logits, feature_max, labels)

    assert statistics["examples"] == examples and statistics["flips"] == len(flipped)
    assert statistics["top1_agreement"] == pytest.approx(1 - len(flipped) / examples)
    bins = statistics["by_feature_max"]
    assert [row["images"] for row in bins] == [100, 100, 100, 100]
    assert [row["flip_rate"] for row in bins] == [0.25, 0.0, 0.0, 0.0]
    assert [row["float_top1"] for row in bins] == [1.0, 1.0, 1.0, 1.0]
    medians = [row["feature_max_median"] for row in bins]
    assert medians == sorted(medians)
    assert statistics["feature_max_p99_over_median"] == pytest.approx(
        np.percentile(feature_max, 99) / np.median(feature_max)
    )
    margins = np.sort(float_logits, axis=-1)
    margin = margins[:, -1] - margins[:, -2]
    assert statistics["median_margin_flipped"] == pytest.approx(np.median(margin[flipped]))


@pytest.mark.slow
def test_measure_compares_an_int8_export_with_its_keras_model(tiny_data_dir):
    """Random weights, so the numbers mean nothing; what holds is that every validation image is
    counted once, in one bin, and that the flips are the ones the bins add up to."""
    model = repghost_tf.RepGhostNet050(
        input_shape=(48, 48, 3), classes=4, classifier_activation=None
    )
    randomize_batchnorms(model, seed=3)
    statistics = int8_flips.measure(
        model, TINY, image_size=48, split="validation", calibration_steps=8,
        data_dir=tiny_data_dir,
    )
    bins = statistics["by_feature_max"]
    assert statistics["examples"] == sum(row["images"] for row in bins) == 200
    assert statistics["flips"] == round(sum(row["flip_rate"] * row["images"] for row in bins))
    assert all(row["feature_max_median"] > 0 for row in bins)
    for mode in ("flips_int8_weights_only", "flips_16x8"):
        assert 0 <= statistics[mode] <= statistics["examples"]


def test_int8_weights_lie_on_a_per_channel_grid_and_the_original_is_untouched():
    model = repghost_tf.RepGhostNet050(
        input_shape=(48, 48, 3), classes=4, classifier_activation=None, deploy=True
    )
    original = [weight.copy() for weight in model.get_weights()]
    rounded = int8_flips.with_int8_weights(model)
    for weight, before in zip(model.get_weights(), original):
        np.testing.assert_array_equal(weight, before)
    layers = {layer.path: layer for layer in walk_layers(rounded)}
    kernels = 0
    for layer in walk_layers(model):
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                                  keras.layers.Dense)):
            continue
        kernel, quantized = layer.kernel.numpy(), layers[layer.path].kernel.numpy()
        channel_axis = 2 if isinstance(layer, keras.layers.DepthwiseConv2D) else kernel.ndim - 1
        other_axes = tuple(axis for axis in range(kernel.ndim) if axis != channel_axis)
        step = np.abs(kernel).max(axis=other_axes, keepdims=True) / 127
        levels = quantized / step
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
        assert np.abs(levels).max() <= 127 + 1e-3
        assert np.all(np.abs(quantized - kernel) <= step / 2 + 1e-7)
        kernels += 1
    assert kernels > 90  # every conv of the deploy form, the head and the classifier


def test_measure_names_a_model_without_the_feature_layer():
    model = repghost_tf.RepGhostNet050(input_shape=(48, 48, 3), include_top=False)
    with pytest.raises(tflite.ExportError, match="no 'global_pool' layer"):
        int8_flips.measure(model, TINY, image_size=48)


def _run_command_line(*args: str) -> subprocess.CompletedProcess:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        [sys.executable, "-m", "benchmark.int8_flips", *args],
        cwd=root, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def test_command_line_without_a_trained_model_names_its_own_options(tmp_path):
    """The hint lists this script's options, not export_tflite.py's (--width, --model=NAME)."""
    runs = tmp_path / "runs"
    missing_run = _run_command_line(f"--runs_dir={runs}")
    assert missing_run.returncode != 0
    assert (
        f"error: no trained model: {runs / 'LATEST'} does not exist; train one first "
        "(python train.py --width=0.5) or pass --model=PATH.keras"
    ) in missing_run.stderr.splitlines()
    missing_file = _run_command_line(f"--model={tmp_path / 'missing.keras'}")
    assert missing_file.returncode != 0
    assert f"error: --model={tmp_path / 'missing.keras'} is not a file" in (
        missing_file.stderr.splitlines()
    )
    assert not list(tmp_path.iterdir())
