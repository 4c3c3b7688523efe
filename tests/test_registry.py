"""Every entry of the registry, as timm and keras.applications test every model: it builds, its
counts agree with Keras's, its fusion is exact, and both its forms round-trip a `.keras` file
in safe mode.

Each entry is built and fused once (`entry`: module-scoped and parametrized, so pytest runs an
entry's tests one after another and drops it before building the next), at a small input and
with 10 classes. The official counts (224x224, 1,000 classes) are test_profile.py's and
test_g_ghost.py's, and fusion at full size is test_fusion.py's.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
from helpers import random_images, randomize_batchnorms, relative_error

import repghost_tf
from repghost_tf.fusion import walk_layers
from repghost_tf.models.counting import count_params

NAMES = sorted(repghost_tf.MODELS)
SIZE = 64  # every architecture takes 32x32 and up; 64x64 leaves a 2x2 map at stride 32
CLASSES = 10
SEED = 0


class Entry:
    """One registry entry, built at SIZE with CLASSES logits and random BatchNorm statistics;
    its deploy form, outputs and counts are computed once, when a test first asks."""

    def __init__(self, name: str):
        self.name = name
        keras.utils.set_random_seed(SEED)
        self.model = repghost_tf.MODELS[name](
            input_shape=(SIZE, SIZE, 3), classes=CLASSES, classifier_activation=None
        )
        randomize_batchnorms(self.model, seed=SEED + 1)
        self.images = random_images(2, SIZE, SIZE, seed=SIZE)

    @functools.cached_property
    def outputs(self) -> np.ndarray:
        return np.asarray(self.model(self.images, training=False))

    @functools.cached_property
    def fused(self) -> keras.Model:
        return repghost_tf.fuse(self.model)

    @functools.cached_property
    def fused_outputs(self) -> np.ndarray:
        return np.asarray(self.fused(self.images, training=False))


def _entries(fast: tuple[str, ...]) -> list:
    """The registry's names as `entry` parameters; those not in `fast` run with `-m slow`. One
    xdist group per entry: under -n, an entry's tests share one worker and one build."""
    return [
        pytest.param(n, id=n, marks=[pytest.mark.xdist_group(f"registry_{n}")]
                     + ([] if n in fast else [pytest.mark.slow]))
        for n in NAMES
    ]


# Each entry costs seconds to build, fuse and round-trip: the default run checks one per family.
FAST = ("repghostnet_050", "repghostnet_wo_050", "ghostnet_050", "g_ghost_regnetx_002")


@pytest.fixture(scope="module", params=_entries(FAST))
def entry(request) -> Entry:
    return Entry(request.param)


def _batchnorm_weights(model: keras.Model) -> int:
    return sum(
        int(np.prod(weight.shape))
        for layer in walk_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
        for weight in layer.weights
    )


def test_builds(entry):
    assert entry.model.name == entry.name
    assert tuple(entry.model.output_shape) == (None, CLASSES)
    assert not repghost_tf.is_fused(entry.model)
    assert entry.outputs.shape == (2, CLASSES)
    assert np.isfinite(entry.outputs).all()


def test_counts(entry):
    counted = repghost_tf.profile(entry.model, image_size=SIZE)
    assert counted.params > 0 and counted.macs > 0
    # The counting function counts the conv and dense weights (kernels and biases); every other
    # weight of the training form is a BatchNorm's (gamma, beta, moving mean and variance).
    assert entry.model.count_params() == counted.params + _batchnorm_weights(entry.model)

    # The deploy form has no BatchNorm, so the counting function counts every weight it has;
    # folding adds biases but no multiply-add.
    deployed = repghost_tf.profile(entry.fused, image_size=SIZE)
    assert entry.fused.count_params() == deployed.params == count_params(entry.fused)
    assert deployed.params > counted.params
    assert deployed.macs == counted.macs


def test_fuses_exactly(entry):
    """helpers.assert_fusion_is_exact at one size, on the fusion the round trip saves: that
    helper fuses on its own (a second fusion per entry), and its guard, a logit norm over 1.0,
    is meant for 2 x 1,000 logits; the guard here asks the same root mean square of 2 x 10."""
    assert np.sqrt(np.mean(np.square(entry.outputs))) > 1.0 / np.sqrt(2 * 1000)
    assert relative_error(entry.fused_outputs, entry.outputs) < 1e-5
    assert repghost_tf.is_fused(entry.fused)
    assert not repghost_tf.is_fused(entry.model), "fuse() must leave the original untouched"
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in walk_layers(entry.fused)
    )


@pytest.mark.parametrize("form", ["training", "deploy"])
def test_keras_file_round_trip_in_safe_mode(entry, form, tmp_path):
    model, outputs = (
        (entry.model, entry.outputs) if form == "training" else (entry.fused, entry.fused_outputs)
    )
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert restored.name == entry.name
    assert repghost_tf.is_fused(restored) == (form == "deploy")
    np.testing.assert_array_equal(restored(entry.images, training=False), outputs)
