"""Outputs equal timm's PyTorch models with the same weights, in training and deploy form."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")

import repghost_tf  # noqa: E402
from helpers import (  # noqa: E402
    numpy_state_dict,
    random_images,
    randomized_timm_model,
    relative_error,
    slow_after,
    timm_logits,
)
from repghost_tf.torch_weights import WeightMismatchError, load_state_dict  # noqa: E402


@pytest.mark.parametrize("name", slow_after(["repghostnet_050", "repghostnet_111", "repghostnet_200"]))
def test_repghostnet_matches_timm_before_and_after_fusion(name):
    reference = randomized_timm_model(name, seed=5)
    model = repghost_tf.create_model(name, classifier_activation=None)
    load_state_dict(model, numpy_state_dict(reference))
    images = random_images(2, 224, 224, seed=6)

    expected = timm_logits(reference, images)
    assert relative_error(model(images, training=False), expected) < 1e-4

    reference.convert_to_deploy()
    expected_deploy = timm_logits(reference, images)
    deployed = repghost_tf.fuse(model)
    assert relative_error(deployed(images, training=False), expected_deploy) < 1e-4


def test_ghostnet_matches_timm_at_odd_size():
    reference = randomized_timm_model("ghostnet_100", seed=7)
    model = repghost_tf.GhostNet100(classifier_activation=None)
    load_state_dict(model, numpy_state_dict(reference))
    images = random_images(2, 193, 161, seed=8)
    assert relative_error(model(images, training=False), timm_logits(reference, images)) < 1e-4


def test_state_dict_of_another_width_names_the_first_bad_tensor():
    state_dict = numpy_state_dict(randomized_timm_model("repghostnet_100"))
    model = repghost_tf.RepGhostNet050()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(WeightMismatchError, match="conv_stem.weight"):
        load_state_dict(model, state_dict)
    assert all((a == b).all() for a, b in zip(before, model.get_weights()))


def test_unexpected_and_missing_tensors_are_reported():
    state_dict = numpy_state_dict(randomized_timm_model("repghostnet_050"))
    model = repghost_tf.RepGhostNet050()
    with pytest.raises(WeightMismatchError, match="unexpected tensor 'extra.weight'"):
        load_state_dict(model, {**state_dict, "extra.weight": state_dict["conv_stem.weight"]})
    del state_dict["blocks.3.0.se.conv_reduce.bias"]
    with pytest.raises(WeightMismatchError, match="missing tensor 'blocks.3.0.se.conv_reduce.bias'"):
        load_state_dict(model, state_dict)
