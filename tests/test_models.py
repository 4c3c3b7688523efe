"""Model constructors: arguments, preprocessing, feature pyramid, saving and loading."""

import keras
import numpy as np
import pytest

import repghost_tf
from helpers import randomize_batchnorms, random_images, relative_error


@pytest.fixture(scope="module")
def trained_like_model():
    model = repghost_tf.RepGhostNet050(classifier_activation=None)
    randomize_batchnorms(model, seed=2)
    return model


@pytest.mark.parametrize("form", ["training", "deploy"])
def test_keras_file_round_trip_in_safe_mode(tmp_path, trained_like_model, form):
    model = trained_like_model if form == "training" else repghost_tf.fuse(trained_like_model)
    images = random_images(2, 96, 128)
    path = tmp_path / f"{form}.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert repghost_tf.is_fused(restored) == (form == "deploy")
    np.testing.assert_array_equal(restored(images, training=False), model(images, training=False))


def test_weights_argument_loads_weights_h5_and_keras_files(tmp_path, trained_like_model):
    images = random_images(1, 64, 64)
    expected = trained_like_model(images, training=False)
    trained_like_model.save_weights(tmp_path / "m.weights.h5")
    trained_like_model.save(tmp_path / "m.keras")
    for path in (tmp_path / "m.weights.h5", tmp_path / "m.keras"):
        model = repghost_tf.RepGhostNet050(classifier_activation=None, weights=str(path))
        np.testing.assert_allclose(model(images, training=False), expected, rtol=1e-6)


def test_preprocessing_is_imagenet_normalisation():
    with_pre = repghost_tf.RepGhostNet050(classifier_activation=None)
    without = repghost_tf.RepGhostNet050(classifier_activation=None, include_preprocessing=False)
    without.set_weights(with_pre.get_weights())
    pixels = random_images(2, 64, 64)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    normalised = ((pixels / 255.0 - mean) / std).astype("float32")
    assert relative_error(without(normalised), with_pre(pixels)) < 1e-5


def test_pyramid_outputs_have_strides_4_8_16_32():
    model = repghost_tf.RepGhostNet100(include_top=False, pyramid_outputs=True)
    features = model(random_images(1, 224, 224))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "P2": (1, 56, 56, 24),
        "P3": (1, 28, 28, 40),
        "P4": (1, 14, 14, 112),
        "P5": (1, 7, 7, 960),
    }


@pytest.mark.parametrize("pooling,shape", [(None, (1, 7, 7, 480)), ("avg", (1, 480)), ("max", (1, 480))])
def test_headless_model_pooling(pooling, shape):
    model = repghost_tf.RepGhostNet050(include_top=False, pooling=pooling)
    assert tuple(model(random_images(1, 224, 224)).shape) == shape


def test_classifier_outputs_probabilities_by_default():
    model = repghost_tf.GhostNet050(classes=10)
    probabilities = model(random_images(2, 64, 64), training=False).numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_layer_names_follow_official_module_paths():
    names = [layer.name for layer in repghost_tf.RepGhostNet050().layers]
    assert names[:4] == ["image", "preprocessing", "stem", "act1"]
    assert "blocks.6.4" in names and "blocks.9.0" in names
    assert names[-3:] == ["flatten", "dropout", "classifier"]


def test_create_model_knows_every_official_name():
    assert set(repghost_tf.MODELS) >= {
        "repghostnet_050", "repghostnet_058", "repghostnet_080", "repghostnet_100",
        "repghostnet_111", "repghostnet_130", "repghostnet_150", "repghostnet_200",
        "repghostnet_repid_050", "repghostnet_norep_050", "repghostnet_wo_050",
        "ghostnet_050", "ghostnet_100", "ghostnet_130",
    }
    with pytest.raises(ValueError, match="unknown model 'repghostnet_300'"):
        repghost_tf.create_model("repghostnet_300")


def test_registry_resolves_names_and_widths_to_one_spec():
    assert repghost_tf.resolve(width=0.58) is repghost_tf.MODELS["repghostnet_058"]
    assert repghost_tf.resolve(width=1.11).name == "repghostnet_111"
    assert repghost_tf.resolve("ghostnet_130").width == 1.3
    with pytest.raises(repghost_tf.UnknownModelError, match=r"--width must be one of 0\.5, 0\.58"):
        repghost_tf.resolve(width=0.7)
    with pytest.raises(repghost_tf.UnknownModelError, match="not both"):
        repghost_tf.resolve("repghostnet_050", width=0.5)


def test_specs_carry_the_recipe_defaults_and_published_accuracy():
    specs = repghost_tf.MODELS
    assert [n for n, s in specs.items() if s.randaugment] == [
        "repghostnet_130", "repghostnet_150", "repghostnet_200", "ghostnet_130"
    ]
    assert specs["repghostnet_050"].imagenet_top1 == 66.9
    assert specs["g_ghost_regnetx_032"].imagenet_top1 is None
    assert all(s.input_size == 224 for s in specs.values())
    ablation = specs["repghostnet_wo_050"](classes=3)
    assert ablation.name == "repghostnet_wo_050" and ablation.output_shape == (None, 3)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"width": 0}, "width must be positive"),
        ({"width": -0.5}, "width must be positive"),
        ({"reparam": "conv"}, "reparam must be one of"),
        ({"weights": "imagenet"}, "weights must be None or a path"),
        ({"weights": "/nonexistent/model.weights.h5"}, "not found"),
        ({"input_shape": (31, 224, 3)}, "at least 32x32"),
        ({"input_shape": (224, 224, 1)}, r"\(height, width, 3\)"),
        ({"pooling": "median", "include_top": False}, "pooling must be"),
        ({"pyramid_outputs": True}, "include_top=False"),
    ],
)
def test_bad_arguments_raise_clear_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        repghost_tf.RepGhostNet(**kwargs)


def test_weights_of_another_width_are_rejected(tmp_path):
    repghost_tf.RepGhostNet050().save(tmp_path / "half.keras")
    with pytest.raises(ValueError, match="different architecture"):
        repghost_tf.RepGhostNet100(weights=str(tmp_path / "half.keras"))


def test_image_normalization_is_the_imagenet_normalisation_and_round_trips(tmp_path):
    model = repghost_tf.RepGhostNet050(include_top=False)
    layer = model.get_layer("preprocessing")
    pixels = random_images(2, 40, 36, seed=5)
    mean = 255 * np.array([0.485, 0.456, 0.406])
    std = 255 * np.array([0.229, 0.224, 0.225])
    expected = (pixels - mean) / std
    assert relative_error(layer(pixels), expected) < 1e-6
    model.save(tmp_path / "m.keras")
    reloaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert relative_error(reloaded.get_layer("preprocessing")(pixels), expected) < 1e-6
