"""Parameters and multiply-adds counted as the paper counts them: conv and dense layers only."""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf

from repghost_tf.fusion import walk_layers

_COUNTED_LAYERS = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Conv1D,
    keras.layers.Conv3D,
    keras.layers.Dense,
)


_KERNEL_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul", "BatchMatMulV2")


@dataclasses.dataclass(frozen=True)
class Profile:
    params: int
    macs: int

    def __str__(self) -> str:
        return f"params {self.params:,} ({self.params / 1e6:.2f} M), " \
               f"multiply-adds {self.macs:,} ({self.macs / 1e6:.1f} M)"


def count_params(model: keras.Model) -> int:
    """Weights (kernels and biases) of every conv and dense layer, BatchNorm excluded."""
    return sum(
        math.prod(weight.shape)
        for layer in walk_layers(model)
        if isinstance(layer, _COUNTED_LAYERS)
        for weight in layer.weights
    )


def count_macs(model: keras.Model, image_size: int | tuple[int, int] = 224) -> int:
    """Multiply-adds of the conv and matmul ops for one image, read off the traced TF graph.

    Ops with a constant kernel (the in-model pixel normalisation) are preprocessing, not layers
    of the network, and are not counted, as in the paper.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    channels = model.inputs[0].shape[-1]
    graph = (
        tf.function(lambda x: model(x, training=False))
        .get_concrete_function(tf.TensorSpec([1, height, width, channels], tf.float32))
        .graph
    )
    macs = 0
    for op in graph.get_operations():
        if op.type in _KERNEL_OPS and _is_constant(op.inputs[1]):
            continue
        if op.type == "Conv2D":
            kernel_h, kernel_w, in_per_group, _ = op.inputs[1].shape
            macs += math.prod(op.outputs[0].shape[1:]) * kernel_h * kernel_w * in_per_group
        elif op.type == "DepthwiseConv2dNative":
            kernel_h, kernel_w = op.inputs[1].shape[:2]
            macs += math.prod(op.outputs[0].shape[1:]) * kernel_h * kernel_w
        elif op.type in ("MatMul", "BatchMatMulV2"):
            macs += math.prod(op.outputs[0].shape[1:]) * op.inputs[0].shape[-1]
    return macs


def _is_constant(tensor: tf.Tensor) -> bool:
    """True when `tensor` is computed from constants only (no variable read, no input)."""
    op = tensor.op
    if op.type == "Const":
        return True
    return op.type in ("Cast", "Identity", "Reshape", "Tile") and all(
        _is_constant(t) for t in op.inputs
    )


def profile(model: keras.Model, image_size: int | tuple[int, int] = 224) -> Profile:
    """Params and multiply-adds of `model` at `image_size`, as in the paper's tables."""
    return Profile(params=count_params(model), macs=count_macs(model, image_size))
