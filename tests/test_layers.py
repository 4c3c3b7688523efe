"""Layer-level behaviour: fusion of single layers, serialization, PyTorch-style names and
padding."""

import keras
import tensorflow as tf
import numpy as np
import pytest

import repghost_tf
from helpers import randomize_batchnorms, relative_error
from repghost_tf.models.layers import (
    ConvBN,
    GhostModule,
    GroupedConv2D,
    RepGhostBottleneck,
    RepGhostModule,
    make_divisible,
)
from repghost_tf.fusion import walk_layers


def _single_layer_model(layer, channels=12, size=(15, 17)):
    inputs = keras.Input((*size, channels))
    return keras.Model(inputs, layer(inputs))


def _random_input(channels=12, size=(15, 17), seed=0):
    return np.random.default_rng(seed).normal(0, 1, (3, *size, channels)).astype("float32")


@pytest.mark.parametrize("reparam", ["bn", "identity", "none", "post_bn"])
@pytest.mark.parametrize("relu", [True, False])
def test_repghost_module_fuses(reparam, relu):
    model = _single_layer_model(RepGhostModule(20, relu=relu, reparam=reparam, name="m"))
    randomize_batchnorms(model, seed=3)
    x = _random_input()
    expected = model(x, training=False).numpy()
    deployed = repghost_tf.fuse(model)
    layer = deployed.get_layer("m")
    assert layer.deploy
    inner = [type(sub) for sub in walk_layers(layer)]
    assert keras.layers.BatchNormalization not in inner
    assert inner.count(keras.layers.DepthwiseConv2D) == 1
    assert relative_error(deployed(x, training=False), expected) < 1e-6


def test_reparam_branch_changes_the_output():
    """The branch is really there: removing it changes what the module computes."""
    x = _random_input()
    outputs = {}
    for reparam in ("bn", "none"):
        keras.utils.set_random_seed(7)
        model = _single_layer_model(RepGhostModule(20, reparam=reparam, name="m"))
        outputs[reparam] = model(x, training=False).numpy()
    assert relative_error(outputs["bn"], outputs["none"]) > 0.1


@pytest.mark.parametrize("strides,out_channels,se_ratio", [(1, 12, 0.0), (2, 24, 0.25), (1, 16, 0)])
def test_bottleneck_fuses(strides, out_channels, se_ratio):
    layer = RepGhostBottleneck(36, out_channels, 5, strides, se_ratio, name="b")
    model = _single_layer_model(layer)
    randomize_batchnorms(model, seed=4)
    x = _random_input()
    expected = model(x, training=False).numpy()
    deployed = repghost_tf.fuse(model)
    assert relative_error(deployed(x, training=False), expected) < 1e-6


def test_squeeze_excite_gate_folds_into_the_next_conv():
    """Deploy form: the SE gate is relu6 with the + 3 in conv_expand's bias, and the / 6 sits in
    the second ghost module's 1x1 kernel. A deploy model saved before the fold (config without
    `fold_se_gate`) loads with the hard-sigmoid gate, computes the same, and `fuse` folds it."""
    x = _random_input()
    model = _single_layer_model(RepGhostBottleneck(36, 24, 3, 2, 0.25, name="b"))
    randomize_batchnorms(model, seed=4)
    expected = model(x, training=False).numpy()
    train = model.get_layer("b")
    folded = repghost_tf.fuse(model)
    assert folded.get_layer("b").se.scaled_gate
    assert relative_error(folded(x, training=False), expected) < 1e-6

    # The pre-fold deploy form, weights folded layer by layer as before: SE weights untouched.
    config = folded.get_config()
    for layer_config in config["layers"]:
        layer_config["config"].pop("fold_se_gate", None)
    old = keras.Model.from_config(config)
    old_block = old.get_layer("b")
    assert not old_block.se.scaled_gate and not repghost_tf.is_fused(old)
    old_block.set_weights(
        train.ghost1.fused_weights() + train.conv_dw.fused_weights() + train.se.get_weights()
        + train.ghost2.fused_weights() + train.shortcut_dw.fused_weights()
        + train.shortcut_pw.fused_weights()
    )
    assert relative_error(old(x, training=False), expected) < 1e-6
    refolded = repghost_tf.fuse(old)
    assert refolded.get_layer("b").se.scaled_gate and repghost_tf.is_fused(refolded)
    assert relative_error(refolded(x, training=False), expected) < 1e-6
    new_block = folded.get_layer("b")
    np.testing.assert_allclose(
        new_block.se.conv_expand.bias.numpy() - 3.0, train.se.conv_expand.bias.numpy(), atol=1e-6
    )
    np.testing.assert_allclose(
        6.0 * new_block.ghost2.primary_conv.conv.kernel.numpy(),
        old_block.ghost2.primary_conv.conv.kernel.numpy(), rtol=1e-5,
    )


def test_stride_two_pads_symmetrically_like_pytorch():
    """A 3x3 stride-2 conv must see the input's top-left corner at its kernel centre."""
    layer = ConvBN(1, 3, 2, deploy=True, name="c")
    model = _single_layer_model(layer, channels=1, size=(8, 8))
    kernel = np.zeros((3, 3, 1, 1), "float32")
    kernel[1, 1] = 1.0  # picks the centre pixel
    layer.conv.set_weights([kernel, np.zeros(1, "float32")])
    image = np.arange(64, dtype="float32").reshape(1, 8, 8, 1)
    out = model(image).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(out, image[0, ::2, ::2, 0])


def test_ghost_module_concatenates_and_slices_odd_channels():
    layer = GhostModule(7, name="g")
    model = _single_layer_model(layer)
    assert model.output.shape[-1] == 7
    assert layer.intrinsic_channels == 4


@pytest.mark.parametrize("strides", [1, 2])
def test_grouped_conv_trains_in_a_graph_like_per_group_convs(strides):
    """Graph mode is where TensorFlow's CPU kernels without oneDNN fail on groups (the fused
    Conv2D+BiasAdd forward, the filter gradient); compare against one conv per group."""
    groups, channels = 4, 12
    layer = GroupedConv2D(channels, 3, strides=strides, padding="same", groups=groups,
                          name="grouped")
    layer.build((None, 9, 9, channels))
    layer.bias.assign(np.random.default_rng(1).normal(0, 1, channels))
    inputs = tf.constant(_random_input(channels, (9, 9)))

    def per_group(x, kernel, bias):
        pieces = zip(tf.split(x, groups, axis=-1), tf.split(kernel, groups, axis=-1))
        outputs = [tf.nn.conv2d(p, k, strides, "SAME") for p, k in pieces]
        return tf.concat(outputs, axis=-1) + bias

    @tf.function
    def outputs_and_gradients(forward):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = forward()
            loss = tf.reduce_sum(tf.square(outputs) * tf.range(1.0, 1.0 + channels))
        return [outputs, *tape.gradient(loss, [inputs, layer.kernel.value, layer.bias.value])]

    ours = outputs_and_gradients(lambda: layer(inputs))
    reference = outputs_and_gradients(
        lambda: per_group(inputs, layer.kernel.value, layer.bias.value)
    )
    for got, expected in zip(ours, reference):
        assert relative_error(got, expected) < 1e-5


def test_layers_round_trip_through_config():
    layer = RepGhostBottleneck(36, 24, 3, 2, 0.25, reparam="identity", shortcut=False, name="b")
    clone = RepGhostBottleneck.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_sublayers_are_named_after_pytorch_module_paths():
    layer = RepGhostBottleneck(36, 24, 3, 2, 0.25, name="blocks.3.0")
    _single_layer_model(layer)
    names = {sub.name for sub in walk_layers(layer)}
    assert {
        "blocks.3.0.ghost1.primary_conv.0",
        "blocks.3.0.ghost1.primary_conv.1",
        "blocks.3.0.ghost1.cheap_operation.0",
        "blocks.3.0.ghost1.fusion_bn.0",
        "blocks.3.0.conv_dw",
        "blocks.3.0.bn_dw",
        "blocks.3.0.se.conv_reduce",
        "blocks.3.0.shortcut.3",
    } <= names


def test_unknown_reparam_branch_is_rejected():
    with pytest.raises(ValueError, match="reparam"):
        RepGhostModule(8, reparam="conv")


@pytest.mark.parametrize("value,expected", [(8, 8), (16 * 0.58, 12), (36 * 1.11, 40), (3.0, 4), (37, 36)])
def test_make_divisible(value, expected):
    assert make_divisible(value) == expected
