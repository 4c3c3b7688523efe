"""What every model constructor here shares: argument checks, the image input with its
preprocessing, and loading a weights file, in the manner of `keras.applications`."""

from __future__ import annotations

import os

import keras
import numpy as np
from keras import layers, ops

# The official models were trained on (pixels / 255 - mean) / std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MIN_INPUT_SIZE = 32


@keras.saving.register_keras_serializable(package="repghost_tf")
class ImageNormalization(layers.Layer):
    """(pixels - mean) / std per channel, computed as a 1x1 depthwise conv with bias.

    TFLite then runs it as one DEPTHWISE_CONV_2D instead of a SUB and a MUL over the whole image,
    and int8 quantizes its constants per channel, exactly for the scale (one weight per channel).
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def kernel_and_bias(self) -> tuple[np.ndarray, np.ndarray]:
        """The 1x1 depthwise kernel (1, 1, channels, 1) and bias of the normalisation, float32."""
        std = np.asarray(self.std, np.float64)
        kernel = (1.0 / std).reshape(1, 1, -1, 1)
        return kernel.astype(np.float32), (-np.asarray(self.mean) / std).astype(np.float32)

    def call(self, inputs):
        kernel, bias = (ops.cast(w, inputs.dtype) for w in self.kernel_and_bias())
        return per_channel_affine(inputs, kernel, bias)

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": self.mean, "std": self.std}


def per_channel_affine(inputs, kernel, bias):
    """inputs * kernel + bias per channel, as a 1x1 depthwise conv (kernel (1, 1, channels, 1)).

    When the image's height and width are static (an exported model), the conv runs on the image
    reshaped to (height, 1, width x channels) with the constants tiled: the same products and
    sums, but XNNPACK's depthwise kernel, which works on tiles of 16-32 channels, is not left
    running three channels per tile at every pixel (2.5x faster at 224 px in float32, 4x in int8,
    docs/int8_latency_x86.md).
    """
    height, width, channels = inputs.shape[1:]
    if height is None or width is None:
        return ops.depthwise_conv(inputs, kernel, strides=1, padding="valid") + bias
    wide = ops.reshape(inputs, (-1, height, 1, width * channels))
    wide = ops.depthwise_conv(wide, ops.tile(kernel, (1, 1, width, 1)), 1, "valid")
    wide = wide + ops.tile(bias, (width,))
    return ops.reshape(wide, (-1, height, width, channels))


def check_arguments(
    weights, input_shape, pooling, include_top: bool, pyramid_outputs: bool
) -> None:
    """Raises a ValueError that names the first bad keras.applications-style argument."""
    if weights is not None and not (
        isinstance(weights, (str, os.PathLike))
        and str(weights).endswith((".weights.h5", ".keras"))
    ):
        raise ValueError(
            "weights must be None or a path to a .weights.h5 or .keras file "
            f"(for the official ImageNet weights, convert them first), got {weights!r}."
        )
    if weights is not None and not os.path.isfile(weights):
        raise ValueError(f"weights file not found: {weights}")
    if input_shape is not None:
        if len(input_shape) != 3 or input_shape[-1] != 3:
            raise ValueError(f"input_shape must be (height, width, 3), got {input_shape}.")
        too_small = [d for d in input_shape[:2] if d is not None and d < MIN_INPUT_SIZE]
        if too_small:
            raise ValueError(
                f"input_shape must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}, got {input_shape}."
            )
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}.")
    if pyramid_outputs and include_top:
        raise ValueError("pyramid_outputs=True needs include_top=False.")


def image_input(input_shape, input_tensor, include_preprocessing: bool):
    """Returns (model input, normalised image tensor).

    With `include_preprocessing` the model takes raw RGB in [0, 255] and normalises it itself, so
    that a uint8 TFLite input takes camera pixels directly.
    """
    if input_tensor is None:
        inputs = layers.Input(shape=input_shape or (None, None, 3), name="image")
    elif keras.backend.is_keras_tensor(input_tensor):
        inputs = input_tensor
    else:
        inputs = layers.Input(tensor=input_tensor, shape=input_shape)
    if not include_preprocessing:
        return inputs, inputs
    normalised = ImageNormalization(
        mean=[255.0 * m for m in IMAGENET_MEAN],
        std=[255.0 * s for s in IMAGENET_STD],
        name="preprocessing",
    )(inputs)
    return inputs, normalised


def pool_features(x, pooling: str | None, name: str):
    """The output of a model without its top: 4D features, or their global "avg" or "max"."""
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=name)(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name=name)(x)
    return x


def load_weights_file(model: keras.Model, path: str) -> None:
    """Loads a `.weights.h5` file, or the weights of a `.keras` model of the same architecture."""
    if str(path).endswith(".weights.h5"):
        model.load_weights(path)
        return
    source = keras.saving.load_model(path, compile=False, safe_mode=True)
    source_weights = source.get_weights()
    if [w.shape for w in source_weights] != [tuple(v.shape) for v in model.weights]:
        raise ValueError(f"{path} holds a different architecture than {model.name}.")
    model.set_weights(source_weights)
