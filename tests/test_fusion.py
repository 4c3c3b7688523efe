"""Fusion is exact: fused and unfused nets agree on random inputs with random BN statistics."""

import keras
import pytest

import repghost_tf
from repghost_tf.fusion import walk_layers
from helpers import assert_fusion_is_exact, slow_after

VARIANTS = [
    *[(repghost_tf.RepGhostNet, {"width": w}) for w in (0.5, 0.58, 0.8, 1.0, 1.11, 1.3, 1.5, 2.0)],
    (repghost_tf.RepGhostNet050RepIdentity, {}),
    (repghost_tf.RepGhostNet050NoReparam, {}),
    (repghost_tf.RepGhostNet050NoShortcut, {}),
    (repghost_tf.GhostNet050, {}),
]


def _layer_types(model):
    return [type(layer) for layer in walk_layers(model)]


@pytest.mark.parametrize(
    "constructor,kwargs", slow_after(VARIANTS, 3), ids=lambda v: getattr(v, "__doc__", str(v))[:30]
)
def test_fused_model_matches_training_form(constructor, kwargs):
    model = constructor(classifier_activation=None, **kwargs)
    assert_fusion_is_exact(model, sizes=((224, 224), (193, 161)))


def test_repghostnet_deploy_graph_has_no_concat_and_one_depthwise_per_module():
    deployed = repghost_tf.fuse(repghost_tf.RepGhostNet050())
    modules = [
        layer
        for layer in walk_layers(deployed)
        if isinstance(layer, repghost_tf.RepGhostModule)
    ]
    assert len(modules) == 2 * 16
    for module in modules:
        depthwise = [
            layer for layer in walk_layers(module)
            if isinstance(layer, keras.layers.DepthwiseConv2D)
        ]
        assert len(depthwise) == 1 and depthwise[0].use_bias

    import tensorflow as tf

    graph = tf.function(deployed).get_concrete_function(
        tf.TensorSpec([1, 224, 224, 3], tf.float32)).graph
    op_types = {op.type for op in graph.get_operations()}
    assert "ConcatV2" not in op_types
    assert not any("BatchNorm" in t for t in op_types)


def test_ghostnet_deploy_graph_keeps_its_concats():
    import tensorflow as tf

    deployed = repghost_tf.fuse(repghost_tf.GhostNet050())
    graph = tf.function(deployed).get_concrete_function(
        tf.TensorSpec([1, 224, 224, 3], tf.float32)).graph
    concats = [op for op in graph.get_operations() if op.type == "ConcatV2"]
    assert len(concats) == 2 * 16
    assert keras.layers.BatchNormalization not in _layer_types(deployed)
