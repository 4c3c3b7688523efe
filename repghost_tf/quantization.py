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

QMIN, QMAX = -128, 127
_LEVELS = QMAX - QMIN
WEIGHT_QMAX = 127  # symmetric narrow range: -127..127


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

    def grid(self) -> tuple[float, float, float, int]:
        """The current (min, max, scale, zero point), as the converter will see them."""
        return nudged_range(float(self.range_min.numpy()), float(self.range_max.numpy()))

    def call(self, inputs, training=None):
        if training and self.fixed_range is None:
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
