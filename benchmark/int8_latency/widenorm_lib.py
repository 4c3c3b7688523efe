"""Shared by combined_build.py and check_widenorm.py: the normalisation done as RESHAPE ->
672-channel 1x1 depthwise -> RESHAPE ('widenorm')."""
from variants import *
from repghost_tf.models.applications import ImageNormalization


def wide_call(self, inputs):
    n, h, w, c = inputs.shape
    std = np.asarray(self.std, np.float64)
    mean = np.asarray(self.mean, np.float64)
    y = ops.reshape(inputs, (-1, h, 1, w * c))
    k = ops.cast(np.tile(1.0 / std, w).reshape(1, 1, -1, 1), inputs.dtype)
    y = ops.depthwise_conv(y, k, strides=1, padding="valid") + ops.cast(np.tile(-mean / std, w), inputs.dtype)
    return ops.reshape(y, (-1, h, w, c))


