"""BatchNorm folding arithmetic, done in float64 so fused and unfused nets agree to float32 round-off."""

from __future__ import annotations

import numpy as np

# PyTorch's BatchNorm2d defaults, which the official weights were trained with.
# Keras counts momentum the other way round: torch's 0.1 is Keras's 0.9.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def scale_shift(
    gamma, beta, mean, variance, epsilon: float = BN_EPSILON
) -> tuple[np.ndarray, np.ndarray]:
    """Returns float64 (scale, shift) such that BatchNorm(x) == x * scale + shift at inference."""
    mean = _as_float64(mean)
    scale = _as_float64(gamma) / np.sqrt(_as_float64(variance) + epsilon)
    shift = _as_float64(beta) - mean * scale
    return np.broadcast_to(scale, mean.shape).copy(), np.broadcast_to(shift, mean.shape).copy()


def batchnorm_scale_shift(bn) -> tuple[np.ndarray, np.ndarray]:
    """`scale_shift` of a Keras BatchNormalization layer."""
    gamma = bn.gamma if bn.scale else 1.0
    beta = bn.beta if bn.center else 0.0
    return scale_shift(gamma, beta, bn.moving_mean, bn.moving_variance, bn.epsilon)


def fold_batchnorm(conv, bn) -> tuple[np.ndarray, np.ndarray]:
    """Folds `bn` into the preceding `conv` (Conv2D or DepthwiseConv2D with multiplier 1).

    Returns the float64 (kernel, bias) of the single conv that computes bn(conv(x)).
    """
    kernel = _as_float64(conv.kernel)
    scale, shift = batchnorm_scale_shift(bn)
    bias = _as_float64(conv.bias) * scale if conv.use_bias else 0.0
    if _is_depthwise(conv):
        kernel = kernel * scale.reshape(1, 1, -1, 1)
    else:
        kernel = kernel * scale.reshape(1, 1, 1, -1)
    return kernel, shift + bias


def add_to_center_tap(kernel: np.ndarray, per_channel: np.ndarray) -> np.ndarray:
    """Adds a per-channel 1x1 identity-like branch to a depthwise kernel (kh, kw, C, 1)."""
    kernel = kernel.copy()
    kh, kw = kernel.shape[:2]
    kernel[kh // 2, kw // 2, :, 0] += per_channel
    return kernel


def _is_depthwise(conv) -> bool:
    return hasattr(conv, "depth_multiplier")


def _as_float64(variable) -> np.ndarray:
    return np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable, dtype=np.float64)
