"""Keras layers of RepGhostNet and its GhostNet baseline.

Each layer that holds a conv+BatchNorm pair is a `repghost_tf.fusion.FusableLayer`. It has two
forms, chosen by the `deploy` flag: the training form, with its BatchNorms and re-parameterization
branches, and the deploy form, where every BatchNorm and branch is folded into one conv with bias.
Each layer's `fused_weights()` computes its deploy form's weights from the training form (in
float64, with `repghost_tf.folding`). Sub-layers are named after the official PyTorch module paths
(`blocks.3.0.ghost1.primary_conv.0`, ...), so weights map between the two by name.
"""

from __future__ import annotations

import functools
import math

import keras
import numpy as np
from keras import layers, ops

from repghost_tf.folding import (
    BN_EPSILON,
    BN_MOMENTUM,
    add_to_center_tap,
    batchnorm_scale_shift,
    fold_batchnorm,
)
from repghost_tf.fusion import FusableLayer

REPARAM_BRANCHES = ("bn", "identity", "none", "post_bn")

# hard_sigmoid(z) = relu6(z + HARD_SIGMOID_SHIFT) / HARD_SIGMOID_SCALE
HARD_SIGMOID_SHIFT = 3.0
HARD_SIGMOID_SCALE = 6.0

_register = keras.saving.register_keras_serializable(package="repghost_tf")


def make_divisible(value: float, divisor: int = 4) -> int:
    """Rounds a channel count to a multiple of `divisor`, never more than 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def batch_norm(name: str) -> layers.BatchNormalization:
    """A BatchNormalization with PyTorch's defaults, as the official weights expect."""
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def channels_shape(channels: int) -> tuple:
    """The shape a sub-layer is built with: only the channel count matters to conv and BN."""
    return (None, None, None, channels)


@_register
class GroupedConv2D(layers.Conv2D):
    """A Conv2D whose grouped convolution is one TensorFlow `Conv2D` op.

    Keras's TensorFlow backend wraps grouped convolutions in an XLA-compiled sub-function, which
    hides them from `repghost_tf.count` and keeps the TFLite converter from emitting a plain
    CONV_2D. TensorFlow's Conv2D op takes a grouped kernel (input depth = channels / groups)
    directly, but its CPU gradient kernels handle groups only with oneDNN, which TensorFlow
    leaves off on some x86 CPUs; the gradient is therefore computed by XLA. Weights, config and
    layout are those of `keras.layers.Conv2D`. A grouped convolution's bias is added with AddV2:
    Keras adds it with BiasAdd, which TensorFlow's graph optimizer fuses with the Conv2D into a
    CPU kernel that rejects groups.
    """

    def _grouped_on_tensorflow(self) -> bool:
        return self.groups > 1 and keras.backend.backend() == "tensorflow"

    def convolution_op(self, inputs, kernel):
        if not self._grouped_on_tensorflow():
            return super().convolution_op(inputs, kernel)
        return _grouped_convolution(
            inputs, kernel, tuple(self.strides), self.padding.upper(), tuple(self.dilation_rate)
        )

    def add_bias(self, outputs, bias):
        """`outputs` plus a per-channel `bias`, in a form TensorFlow's CPU kernels run."""
        if not self._grouped_on_tensorflow():
            return ops.add(outputs, ops.reshape(bias, (1, 1, 1, -1)))
        import tensorflow as tf

        return tf.math.add(outputs, bias)

    def call(self, inputs):
        if self.data_format != "channels_last":
            return super().call(inputs)
        outputs = self.convolution_op(inputs, self.kernel)
        if self.use_bias:
            outputs = self.add_bias(outputs, self.bias)
        return outputs if self.activation is None else self.activation(outputs)


def _grouped_convolution(inputs, kernel, strides: tuple, padding: str, dilations: tuple):
    """tf.nn.convolution with a grouped kernel, differentiated through XLA."""
    import tensorflow as tf

    config = (strides, padding, dilations)
    gradients = _xla_convolution_gradients(*config)

    @tf.custom_gradient
    def grouped(x, k):
        return _convolve(x, k, *config), lambda upstream: gradients(x, k, upstream)

    return grouped(inputs, tf.convert_to_tensor(kernel))


def _convolve(x, kernel, strides: tuple, padding: str, dilations: tuple):
    import tensorflow as tf

    return tf.nn.convolution(x, kernel, strides=strides, padding=padding, dilations=dilations)


@functools.cache
def _xla_convolution_gradients(strides: tuple, padding: str, dilations: tuple):
    """One XLA-compiled gradient function per convolution configuration, so that eager calls
    reuse its compilation."""
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def gradients(x, kernel, upstream):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = _convolve(x, kernel, strides, padding, dilations)
        return tape.gradient(y, [x, kernel], output_gradients=upstream)

    return gradients


@_register
class ConvBN(FusableLayer):
    """Conv2D (grouped when `groups` > 1) or DepthwiseConv2D, then BatchNorm; a single conv with
    bias in deploy form.

    Strided convs pad symmetrically by kernel_size // 2, as PyTorch does (Keras's "same" pads only
    bottom/right at stride 2, which would shift every feature map against the official weights).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 1,
        strides: int = 1,
        depthwise: bool = False,
        groups: int = 1,
        conv_name: str | None = None,
        bn_name: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if depthwise and groups != 1:
            raise ValueError("A depthwise ConvBN takes no groups argument.")
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.depthwise = depthwise
        self.groups = groups
        self.conv_name = conv_name or f"{self.name}.0"
        self.bn_name = bn_name or f"{self.name}.1"
        self._explicit_padding = kernel_size // 2 if strides > 1 else 0

    def build(self, input_shape):
        conv_args = dict(
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding="valid" if self._explicit_padding else "same",
            use_bias=self.deploy,
            name=self.conv_name,
        )
        if self.depthwise:
            self.conv = layers.DepthwiseConv2D(**conv_args)
        else:
            self.conv = GroupedConv2D(self.filters, groups=self.groups, **conv_args)
        self.conv.build(channels_shape(input_shape[-1]))
        if not self.deploy:
            self.bn = batch_norm(self.bn_name)
            self.bn.build(channels_shape(self.filters))

    def call(self, inputs, training=None):
        x = inputs
        if self._explicit_padding:
            pad = self._explicit_padding
            x = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        x = self.conv(x)
        if not self.deploy:
            x = self.bn(x, training=training)
        return x

    def fused_weights(self) -> list[np.ndarray]:
        if self.deploy:
            return self.get_weights()
        return list(fold_batchnorm(self.conv, self.bn))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "depthwise": self.depthwise,
            "groups": self.groups,
            "conv_name": self.conv_name,
            "bn_name": self.bn_name,
        }


@_register
class SqueezeExcite(layers.Layer):
    """Squeeze-and-excitation with a hard-sigmoid gate, channels reduced to a multiple of 4.

    hard_sigmoid(z) = relu6(z + 3) / 6. With `scaled_gate` (the form a deploy bottleneck builds)
    the gate is relu6(z) and conv_expand's bias holds the + 3 (`fused_weights`): the layer then
    outputs 6 times the training form's output, and the bottleneck folds the 1 / 6 into the 1x1
    conv that follows. TFLite runs that gate as one conv with a fused RELU6, with no MUL by 1/6.
    """

    def __init__(self, ratio: float = 0.25, divisor: int = 4, scaled_gate: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.ratio = ratio
        self.divisor = divisor
        self.scaled_gate = scaled_gate

    def build(self, input_shape):
        channels = input_shape[-1]
        reduced = make_divisible(channels * self.ratio, self.divisor)
        self.conv_reduce = layers.Conv2D(reduced, 1, name=f"{self.name}.conv_reduce")
        self.conv_reduce.build(channels_shape(channels))
        self.conv_expand = layers.Conv2D(channels, 1, name=f"{self.name}.conv_expand")
        self.conv_expand.build(channels_shape(reduced))

    def call(self, inputs):
        squeezed = ops.mean(inputs, axis=(1, 2), keepdims=True)
        squeezed = self.conv_expand(ops.relu(self.conv_reduce(squeezed)))
        gate = ops.relu6(squeezed) if self.scaled_gate else ops.hard_sigmoid(squeezed)
        return inputs * gate

    def fused_weights(self) -> list[np.ndarray]:
        """The weights of the `scaled_gate` form: the + 3 moved into conv_expand's bias."""
        if self.scaled_gate:
            return self.get_weights()
        reduce_kernel, reduce_bias, expand_kernel, expand_bias = self.get_weights()
        return [reduce_kernel, reduce_bias, expand_kernel, expand_bias + HARD_SIGMOID_SHIFT]

    def get_config(self) -> dict:
        return {**super().get_config(), "ratio": self.ratio, "divisor": self.divisor,
                "scaled_gate": self.scaled_gate}


@_register
class RepGhostModule(FusableLayer):
    """RepGhost module: 1x1 conv, then a depthwise "cheap operation" whose re-parameterization
    branch is added, not concatenated, so that it folds away.

    Training form: relu?(bn(dw(x1)) + branch(x1)) with x1 = relu?(bn(conv1x1(x))) and branch a
    BatchNorm (`reparam="bn"`, the paper's default), the identity (`"identity"`) or nothing
    (`"none"`); or, QARepVGG-style (`"post_bn"`), relu?(bn'(bn(dw(x1)) + x1)): the identity branch
    and one BatchNorm after the sum, which keeps the folded kernel free of a per-channel BN
    branch's outliers. Deploy form: relu?(dw'(relu?(conv1x1'(x)))), two convs with bias.
    """

    def __init__(
        self,
        filters: int,
        relu: bool = True,
        reparam: str = "bn",
        dw_kernel_size: int = 3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if reparam not in REPARAM_BRANCHES:
            raise ValueError(f"reparam must be one of {REPARAM_BRANCHES}, got {reparam!r}.")
        self.filters = filters
        self.relu = relu
        self.reparam = reparam
        self.dw_kernel_size = dw_kernel_size

    def build(self, input_shape):
        self.primary_conv = ConvBN(
            self.filters, 1, deploy=self.deploy, name=f"{self.name}.primary_conv"
        )
        self.primary_conv.build(input_shape)
        features = channels_shape(self.filters)
        if self.deploy:
            self.cheap_operation = layers.DepthwiseConv2D(
                self.dw_kernel_size, padding="same", name=f"{self.name}.cheap_operation"
            )
        else:
            self.cheap_operation = ConvBN(
                self.filters,
                self.dw_kernel_size,
                depthwise=True,
                name=f"{self.name}.cheap_operation",
            )
        self.cheap_operation.build(features)
        if not self.deploy and self.reparam == "bn":
            self.fusion_bn = batch_norm(f"{self.name}.fusion_bn.0")
            self.fusion_bn.build(features)
        if not self.deploy and self.reparam == "post_bn":
            self.post_bn = batch_norm(f"{self.name}.post_bn")
            self.post_bn.build(features)

    def call(self, inputs, training=None):
        x1 = self.primary_conv(inputs, training=training)
        if self.relu:
            x1 = ops.relu(x1)
        if self.deploy:
            x2 = self.cheap_operation(x1)
        else:
            x2 = self.cheap_operation(x1, training=training)
            if self.reparam == "bn":
                x2 = x2 + self.fusion_bn(x1, training=training)
            elif self.reparam in ("identity", "post_bn"):
                x2 = x2 + x1
            if self.reparam == "post_bn":
                x2 = self.post_bn(x2, training=training)
        return ops.relu(x2) if self.relu else x2

    def fused_weights(self) -> list[np.ndarray]:
        if self.deploy:
            return self.get_weights()
        kernel, bias = self.cheap_operation.fused_weights()
        if self.reparam == "bn":
            scale, shift = batchnorm_scale_shift(self.fusion_bn)
            kernel, bias = add_to_center_tap(kernel, scale), bias + shift
        elif self.reparam in ("identity", "post_bn"):
            kernel = add_to_center_tap(kernel, np.ones(self.filters))
        if self.reparam == "post_bn":
            scale, shift = batchnorm_scale_shift(self.post_bn)
            kernel, bias = kernel * scale.reshape(1, 1, -1, 1), bias * scale + shift
        return self.primary_conv.fused_weights() + [kernel, bias]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "relu": self.relu,
            "reparam": self.reparam,
            "dw_kernel_size": self.dw_kernel_size,
        }


@_register
class GhostModule(FusableLayer):
    """GhostNet's Ghost module (ratio 2): 1x1 conv, depthwise 3x3 cheap conv, Concat of both."""

    def __init__(self, filters: int, relu: bool = True, dw_kernel_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.relu = relu
        self.dw_kernel_size = dw_kernel_size
        self.intrinsic_channels = math.ceil(filters / 2)

    def build(self, input_shape):
        self.primary_conv = ConvBN(
            self.intrinsic_channels, 1, deploy=self.deploy, name=f"{self.name}.primary_conv"
        )
        self.primary_conv.build(input_shape)
        self.cheap_operation = ConvBN(
            self.intrinsic_channels,
            self.dw_kernel_size,
            depthwise=True,
            deploy=self.deploy,
            name=f"{self.name}.cheap_operation",
        )
        self.cheap_operation.build(channels_shape(self.intrinsic_channels))

    def call(self, inputs, training=None):
        x1 = self.primary_conv(inputs, training=training)
        if self.relu:
            x1 = ops.relu(x1)
        x2 = self.cheap_operation(x1, training=training)
        if self.relu:
            x2 = ops.relu(x2)
        out = ops.concatenate([x1, x2], axis=-1)
        if 2 * self.intrinsic_channels != self.filters:
            out = out[..., : self.filters]
        return out

    def fused_weights(self) -> list[np.ndarray]:
        return self.primary_conv.fused_weights() + self.cheap_operation.fused_weights()

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "relu": self.relu,
            "dw_kernel_size": self.dw_kernel_size,
        }


class _Bottleneck(FusableLayer):
    """The bottleneck both nets share: ghost module (ReLU) -> [strided depthwise conv] -> [SE] ->
    ghost module (linear) -> + shortcut, the shortcut being the identity when shapes allow and a
    depthwise kxk + 1x1 conv pair otherwise. Subclasses choose the ghost module.

    In deploy form the SE's hard-sigmoid loses its / 6 (a `scaled_gate`) and the second ghost
    module's 1x1 conv takes it instead, in its kernel: same outputs, one TFLite MUL fewer per SE.
    `fold_se_gate=False` describes deploy models saved before that fold existed (their configs
    load with it); `fuse` folds them.
    """

    def __init__(
        self,
        mid_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        strides: int = 1,
        se_ratio: float = 0.0,
        fold_se_gate: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mid_channels = mid_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.strides = strides
        self.se_ratio = se_ratio
        self.fold_se_gate = fold_se_gate

    @classmethod
    def from_config(cls, config: dict):
        return super().from_config({"fold_se_gate": False, **config})

    @classmethod
    def deploy_config(cls, config: dict) -> dict:
        return {**super().deploy_config(config), "fold_se_gate": True}

    @property
    def fused(self) -> bool:
        return self.deploy and (not self.se_ratio or self.fold_se_gate)

    def _ghost_module(self, filters: int, relu: bool, name: str) -> FusableLayer:
        raise NotImplementedError

    def _keeps_identity_shortcut(self) -> bool:
        return True

    def build(self, input_shape):
        in_channels = input_shape[-1]
        mid = channels_shape(self.mid_channels)
        self.ghost1 = self._ghost_module(self.mid_channels, True, f"{self.name}.ghost1")
        self.ghost1.build(input_shape)
        self.conv_dw = None
        if self.strides > 1:
            self.conv_dw = ConvBN(
                self.mid_channels,
                self.kernel_size,
                self.strides,
                depthwise=True,
                conv_name=f"{self.name}.conv_dw",
                bn_name=f"{self.name}.bn_dw",
                deploy=self.deploy,
                name=f"{self.name}.dw",
            )
            self.conv_dw.build(mid)
        self.se = None
        if self.se_ratio:
            self.se = SqueezeExcite(
                self.se_ratio, scaled_gate=self.fused, name=f"{self.name}.se"
            )
            self.se.build(mid)
        self.ghost2 = self._ghost_module(self.out_channels, False, f"{self.name}.ghost2")
        self.ghost2.build(mid)
        self.identity_shortcut = in_channels == self.out_channels and self.strides == 1
        self.shortcut_dw = self.shortcut_pw = None
        if not self.identity_shortcut:
            self.shortcut_dw = ConvBN(
                in_channels,
                self.kernel_size,
                self.strides,
                depthwise=True,
                conv_name=f"{self.name}.shortcut.0",
                bn_name=f"{self.name}.shortcut.1",
                deploy=self.deploy,
                name=f"{self.name}.shortcut_dw",
            )
            self.shortcut_dw.build(input_shape)
            self.shortcut_pw = ConvBN(
                self.out_channels,
                1,
                conv_name=f"{self.name}.shortcut.2",
                bn_name=f"{self.name}.shortcut.3",
                deploy=self.deploy,
                name=f"{self.name}.shortcut_pw",
            )
            self.shortcut_pw.build(channels_shape(in_channels))

    def call(self, inputs, training=None):
        x = self.ghost1(inputs, training=training)
        if self.conv_dw is not None:
            x = self.conv_dw(x, training=training)
        if self.se is not None:
            x = self.se(x)
        x = self.ghost2(x, training=training)
        if not self.identity_shortcut:
            shortcut = self.shortcut_dw(inputs, training=training)
            return x + self.shortcut_pw(shortcut, training=training)
        return x + inputs if self._keeps_identity_shortcut() else x

    def fused_weights(self) -> list[np.ndarray]:
        if self.fused:
            return self.get_weights()
        weights = self.ghost1.fused_weights()
        if self.conv_dw is not None:
            weights += self.conv_dw.fused_weights()
        ghost2 = self.ghost2.fused_weights()
        if self.se is not None:
            weights += self.se.fused_weights()
            ghost2[0] = ghost2[0] / HARD_SIGMOID_SCALE  # the 1x1 conv's kernel
        weights += ghost2
        if not self.identity_shortcut:
            weights += self.shortcut_dw.fused_weights() + self.shortcut_pw.fused_weights()
        return weights

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "mid_channels": self.mid_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "se_ratio": self.se_ratio,
            "fold_se_gate": self.fold_se_gate,
        }


@_register
class RepGhostBottleneck(_Bottleneck):
    """RepGhostNet's bottleneck. `shortcut=False` drops the identity shortcuts (the paper's
    "w/o shortcut" ablation); projection shortcuts stay, as in the official code."""

    def __init__(self, *args, reparam: str = "bn", shortcut: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if reparam not in REPARAM_BRANCHES:
            raise ValueError(f"reparam must be one of {REPARAM_BRANCHES}, got {reparam!r}.")
        self.reparam = reparam
        self.shortcut = shortcut

    def _ghost_module(self, filters: int, relu: bool, name: str) -> FusableLayer:
        return RepGhostModule(filters, relu=relu, reparam=self.reparam, deploy=self.deploy, name=name)

    def _keeps_identity_shortcut(self) -> bool:
        return self.shortcut

    def get_config(self) -> dict:
        return {**super().get_config(), "reparam": self.reparam, "shortcut": self.shortcut}


@_register
class GhostBottleneck(_Bottleneck):
    """GhostNet's bottleneck, built from Concat-based Ghost modules."""

    def _ghost_module(self, filters: int, relu: bool, name: str) -> FusableLayer:
        return GhostModule(filters, relu=relu, deploy=self.deploy, name=name)
