"""int8 fake quantization that lands on the grid TFLite's int8 kernels use.

The building blocks of quantization-aware training (docs/int8_arithmetic.md has the measurements
behind each rule):

- activations: one (scale, zero point) per tensor. The TFLite converter takes an activation's
  range from the FakeQuant op on it and derives scale = (max - min) / 255 and the zero point in
  double precision; TensorFlow's FakeQuant derives them in float32. Ranges whose zero point is a
  tie round differently in the two, so `ActivationQuantizer` only ever emits ranges already
  snapped to the grid (`nudged_range`), on which both agree;
- weights: symmetric, one scale per output channel, narrow range [-127, 127]. A kernel rounded
  onto that grid in float exports to exactly those int8 values, so no weight FakeQuant op has to
  be in the exported graph (`round_to_weight_grid`);
- biases: int32 at scale input_scale * weight_scale per channel (`round_bias`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from repghost_tf.models.applications import per_channel_affine
from repghost_tf.models.layers import GroupedConv2D

QMIN, QMAX = -128, 127
_LEVELS = QMAX - QMIN
WEIGHT_QMAX = 127  # symmetric narrow range: -127..127
# The models take raw RGB pixels: an int8 input (uint8 at scale 1, zero point 0) covers them all.
PIXEL_RANGE = (0.0, 255.0)


def nudged_range(low: float, high: float) -> tuple[float, float, float, int]:
    """(min, max, scale, zero point) of the int8 grid for an observed range [low, high].

    The range is widened to include 0 (so that 0 is exact, as zero padding and ReLU need) and
    snapped so that min and max are whole steps from the zero point.
    """
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high - low < 1e-8:
        high = low + 1e-8
    scale = float(np.float32((high - low) / _LEVELS))
    zero_point_u8 = int(np.clip(np.floor(-low / scale + 0.5), 0, _LEVELS))
    return -zero_point_u8 * scale, (_LEVELS - zero_point_u8) * scale, scale, zero_point_u8 + QMIN


def weight_scales(kernel: np.ndarray, channel_axis: int) -> np.ndarray:
    """max |w| / 127 per channel along `channel_axis` (1 for an all-zero channel)."""
    kernel = np.asarray(kernel, np.float32)
    axes = tuple(a for a in range(kernel.ndim) if a != channel_axis % kernel.ndim)
    largest = np.max(np.abs(kernel), axis=axes)
    return np.where(largest > 0, largest / WEIGHT_QMAX, 1.0).astype(np.float32)


def round_to_weight_grid(kernel: np.ndarray, channel_axis: int) -> np.ndarray:
    """`kernel` rounded onto its symmetric per-channel int8 grid, in float32."""
    kernel = np.asarray(kernel, np.float32)
    shape = [1] * kernel.ndim
    shape[channel_axis] = -1
    scales = weight_scales(kernel, channel_axis).reshape(shape)
    return (np.clip(np.round(kernel / scales), -WEIGHT_QMAX, WEIGHT_QMAX) * scales).astype(
        np.float32
    )


def round_bias(bias: np.ndarray, input_scale: float, scales: np.ndarray) -> np.ndarray:
    """`bias` rounded to the int32 grid of a conv with that input scale and weight scales."""
    step = np.float32(input_scale) * np.asarray(scales, np.float32)
    return (np.round(np.asarray(bias, np.float64) / step) * step).astype(np.float32)


@keras.saving.register_keras_serializable(package="repghost_tf")
class ActivationQuantizer(keras.layers.Layer):
    """Fake-quantizes a tensor to int8, where TFLite will quantize it.

    In training its range follows an exponential moving average of each batch's min and max
    (the first batch sets it), until `freeze()`; in inference the range stays as it is. A
    `fixed_range` (the 0..255 pixels of a uint8 input) never moves. The output is the input
    rounded onto the nudged grid and clipped to it, with a straight-through gradient inside the
    range.
    """

    def __init__(
        self,
        momentum: float = 0.99,
        fixed_range: tuple[float, float] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.fixed_range = tuple(float(v) for v in fixed_range) if fixed_range else None

    def build(self, input_shape):
        low, high = self.fixed_range or (0.0, 0.0)
        self.range_min = self.add_weight(
            name="range_min", shape=(), initializer=keras.initializers.Constant(low),
            trainable=False,
        )
        self.range_max = self.add_weight(
            name="range_max", shape=(), initializer=keras.initializers.Constant(high),
            trainable=False,
        )
        # 0 until a batch has set the range; 2 once frozen (no more updates).
        self.state = self.add_weight(
            name="state", shape=(), initializer="zeros", trainable=False
        )

    def freeze(self) -> None:
        self.state.assign(2.0)

    @property
    def frozen(self) -> bool:
        return float(self.state.numpy()) == 2.0

    @property
    def observed(self) -> bool:
        """Whether data has set the range (a frozen range counts as set)."""
        return float(self.state.numpy()) != 0.0

    def grid(self) -> tuple[float, float, float, int]:
        """The current (min, max, scale, zero point), as the converter will see them."""
        return nudged_range(float(self.range_min.numpy()), float(self.range_max.numpy()))

    def call(self, inputs, training=None, observe=True):
        if training and observe and self.fixed_range is None:
            self._observe(inputs)
        low = ops.minimum(ops.cast(self.range_min, "float32"), 0.0)
        high = ops.maximum(ops.cast(self.range_max, "float32"), 0.0)
        high = ops.maximum(high, low + 1e-8)
        scale = (high - low) / _LEVELS
        zero_point = ops.clip(ops.floor(-low / scale + 0.5), 0.0, float(_LEVELS))
        nudged_low = -zero_point * scale
        nudged_high = (_LEVELS - zero_point) * scale
        outputs = keras.quantizers.fake_quant_with_min_max_vars(
            ops.cast(inputs, "float32"), nudged_low, nudged_high, num_bits=8
        )
        return ops.cast(outputs, inputs.dtype)

    def _observe(self, inputs) -> None:
        batch_min = ops.cast(ops.min(inputs), "float32")
        batch_max = ops.cast(ops.max(inputs), "float32")
        first = ops.equal(self.state, 0.0)
        frozen = ops.equal(self.state, 2.0)
        keep = self.momentum
        new_min = ops.where(first, batch_min, keep * self.range_min + (1 - keep) * batch_min)
        new_max = ops.where(first, batch_max, keep * self.range_max + (1 - keep) * batch_max)
        self.range_min.assign(ops.where(frozen, self.range_min, new_min))
        self.range_max.assign(ops.where(frozen, self.range_max, new_max))
        self.state.assign(ops.where(frozen, self.state, 1.0))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum,
                "fixed_range": self.fixed_range}


def _on_weight_grid(kernel, channel_axis: int):
    """`kernel` fake-rounded onto its per-channel int8 grid, with a straight-through gradient."""
    axes = tuple(a for a in range(len(kernel.shape)) if a != channel_axis % len(kernel.shape))
    largest = ops.max(ops.abs(kernel), axis=axes, keepdims=True)
    scales = ops.where(largest > 0, largest / WEIGHT_QMAX, 1.0)
    rounded = ops.clip(ops.round(kernel / scales), -WEIGHT_QMAX, WEIGHT_QMAX) * scales
    return kernel + ops.stop_gradient(rounded - kernel)


class _QuantizedWeights:
    """The int8 side of a conv or dense layer: its kernel is fake-rounded per output channel while
    `round_weights` (training); `finalize_weights` then writes the rounded kernel and the bias on
    its int32 grid into the layer, after which the layer runs them as they are (export).

    `input_quantizer` names the `ActivationQuantizer` whose grid the layer's input is on: the bias
    scale is that input scale times each channel's weight scale.
    """

    channel_axis = -1

    def __init__(self, *args, input_quantizer: str = "", round_weights: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.input_quantizer = input_quantizer
        self.round_weights = round_weights

    def grid_kernel(self):
        return _on_weight_grid(self.kernel, self.channel_axis) if self.round_weights else self.kernel

    def finalize_weights(self, input_scale: float) -> list[np.ndarray]:
        """[kernel, bias] on the grids TFLite's int8 kernels will use."""
        kernel, bias = (np.asarray(w) for w in self.get_weights())
        kernel = round_to_weight_grid(kernel, self.channel_axis)
        return [kernel, round_bias(bias, input_scale, weight_scales(kernel, self.channel_axis))]

    def get_config(self) -> dict:
        return {**super().get_config(), "input_quantizer": self.input_quantizer,
                "round_weights": self.round_weights}


@keras.saving.register_keras_serializable(package="repghost_tf")
class QuantizedConv2D(_QuantizedWeights, GroupedConv2D):
    """A (grouped) Conv2D with int8 weights; see `_QuantizedWeights`."""

    def call(self, inputs):
        return self.add_bias(self.convolution_op(inputs, self.grid_kernel()), self.bias)


@keras.saving.register_keras_serializable(package="repghost_tf")
class QuantizedDepthwiseConv2D(_QuantizedWeights, keras.layers.DepthwiseConv2D):
    """A DepthwiseConv2D (depth multiplier 1) with int8 weights, one scale per channel."""

    channel_axis = 2  # the kernel is (height, width, channels, 1)

    def call(self, inputs):
        outputs = ops.depthwise_conv(
            inputs, self.grid_kernel(), strides=self.strides, padding=self.padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format,
        )
        return ops.add(outputs, ops.reshape(self.bias, (1, 1, 1, -1)))


@keras.saving.register_keras_serializable(package="repghost_tf")
class QuantizedImageNormalization(QuantizedDepthwiseConv2D):
    """The pixel normalisation (`ImageNormalization`'s 1x1 depthwise conv) with int8 weights,
    laid out as `per_channel_affine` lays it out, so that it exports the same way."""

    def call(self, inputs):
        return per_channel_affine(inputs, self.grid_kernel(), self.bias)


@keras.saving.register_keras_serializable(package="repghost_tf")
class QuantizedDense(_QuantizedWeights, keras.layers.Dense):
    """A Dense layer with int8 weights, one scale per output unit."""

    def call(self, inputs, training=None):
        return ops.add(ops.matmul(inputs, self.grid_kernel()), self.bias)
