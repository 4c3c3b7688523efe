"""keras-hub backbones: pyramid outputs, preset round trip, fusion, the image-classifier task."""

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import repghost_tf  # noqa: E402
from repghost_tf.hub import RepGhostNetBackbone, RepGhostNetImageClassifier  # noqa: E402
from helpers import randomize_batchnorms, random_images, relative_error  # noqa: E402


def _pyramid(backbone, images) -> dict[str, np.ndarray]:
    outputs = keras.Model(backbone.input, backbone.pyramid_outputs)(images, training=False)
    return {level: np.asarray(value) for level, value in outputs.items()}


@pytest.fixture(scope="module")
def backbone():
    model = RepGhostNetBackbone("repghostnet_050")
    randomize_batchnorms(model, seed=3)
    return model


def test_pyramid_levels_are_the_library_models(backbone):
    images = random_images(2, 96, 96, seed=1)
    pyramid = _pyramid(backbone, images)
    assert {level: value.shape for level, value in pyramid.items()} == {
        "P2": (2, 24, 24, 12), "P3": (2, 12, 12, 20), "P4": (2, 6, 6, 56), "P5": (2, 3, 3, 480)
    }
    # The same layers and weights as repghost_tf's own model with pyramid outputs.
    library = repghost_tf.RepGhostNet050(include_top=False, pyramid_outputs=True)
    library.set_weights(backbone.get_weights())
    expected = library(images, training=False)
    for level, value in pyramid.items():
        np.testing.assert_array_equal(value, np.asarray(expected[level]))


def test_preset_round_trip_is_exact(backbone, tmp_path):
    images = random_images(2, 64, 64, seed=2)
    backbone.save_to_preset(str(tmp_path / "preset"))
    loaded = keras_hub.models.Backbone.from_preset(str(tmp_path / "preset"))
    assert isinstance(loaded, RepGhostNetBackbone) and loaded.model_name == "repghostnet_050"
    for level, value in _pyramid(loaded, images).items():
        np.testing.assert_array_equal(value, _pyramid(backbone, images)[level])


def test_fused_backbone_has_the_same_pyramid(backbone, tmp_path):
    images = random_images(2, 64, 64, seed=3)
    deployed = repghost_tf.fuse(backbone)
    assert isinstance(deployed, RepGhostNetBackbone) and deployed.deploy
    assert repghost_tf.is_fused(deployed) and not repghost_tf.is_fused(backbone)
    expected = _pyramid(backbone, images)
    for level, value in _pyramid(deployed, images).items():
        assert relative_error(value, expected[level]) < 1e-5, level
    deployed.save_to_preset(str(tmp_path / "deployed"))
    reloaded = keras_hub.models.Backbone.from_preset(str(tmp_path / "deployed"))
    assert reloaded.deploy and repghost_tf.is_fused(reloaded)


def test_image_classifier_from_a_backbone_preset(backbone, tmp_path):
    backbone.save_to_preset(str(tmp_path / "preset"))
    classifier = keras_hub.models.ImageClassifier.from_preset(
        str(tmp_path / "preset"), num_classes=10
    )
    assert isinstance(classifier, RepGhostNetImageClassifier)
    assert classifier.predict(random_images(3, 64, 64, seed=4), verbose=0).shape == (3, 10)


@pytest.mark.parametrize("deploy", [False, True])
def test_backbone_of_a_library_model_keeps_its_weights(deploy):
    """A converted checkpoint or a run's model (any top, either form) gives its backbone."""
    model = repghost_tf.RepGhostNet050(classes=10)
    randomize_batchnorms(model, seed=5)
    if deploy:
        model = repghost_tf.fuse(model)
    backbone = RepGhostNetBackbone.from_model(model)
    assert backbone.deploy == deploy
    images = random_images(2, 64, 64, seed=6)
    trunk = keras.Model(model.input, model.get_layer("blocks.9.0.act1").output)
    np.testing.assert_array_equal(backbone(images), trunk(images, training=False))


def test_ghostnet_backbone_and_no_g_ghostnet():
    ghostnet = RepGhostNetBackbone("ghostnet_050", image_shape=(64, 64, 3))
    assert set(ghostnet.pyramid_outputs) == {"P2", "P3", "P4", "P5"}
    with pytest.raises(ValueError, match="g_ghost_regnetx_002 has no pyramid outputs"):
        RepGhostNetBackbone("g_ghost_regnetx_002")
