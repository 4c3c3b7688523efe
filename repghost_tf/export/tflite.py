"""Keras model -> TFLite flatbuffer (float32, float16, dynamic-range or full-int8), and what is in
a flatbuffer (its ops).

Every export has a fixed batch of 1 and a fixed square input, and uses TFLite builtin ops only:
a Flex (Select TF) op would need the TensorFlow runtime on the phone, so it fails the export.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from typing import Callable, Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf

from repghost_tf import native_logs, quantization
from repghost_tf.quantization import PIXEL_RANGE

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
IO_TYPES = ("float32", "uint8", "int8")


class ExportError(ValueError):
    """An export that cannot be done; the message is one line meant for the user."""


def convert(
    model: keras.Model,
    quantize: str = "none",
    *,
    image_size: int = 224,
    io_type: str = "float32",
    representative_data: Iterable | Callable[[], Iterable] | None = None,
    pixel_range: tuple[float, float] | None = PIXEL_RANGE,
    ranges: str = "mse",
) -> bytes:
    """Converts `model`, as it is (fuse it first for the deploy form), to a TFLite flatbuffer.

    Args:
        model: a Keras model taking (batch, height, width, 3) images.
        quantize: "none" (float32), "float16" (float16 weights), "dynamic" (int8 weights,
            float activations) or "int8" (full-integer, int8 weights per channel).
        image_size: the fixed square input size; the batch is fixed to 1.
        io_type: input and output type of an "int8" model: "float32", "uint8" or "int8".
            Float models always have float32 inputs and outputs.
        representative_data: calibration images for "int8": one (N, H, W, 3) array, or a
            re-iterable (a list, a `tf.data.Dataset`, or a callable returning an iterable) of
            such batches or of (images, labels) pairs, preprocessed as for evaluation. Every
            image is one calibration step; they are read twice.
        pixel_range: the input range an "int8" model represents exactly, whatever the
            calibration images span (uint8 input: scale 1, zero point 0, every camera pixel).
            None keeps the calibration images' own range.
        ranges: how "int8" sets activation ranges: "mse" (least rounding plus clipping error)
            or "minmax" (the converter's own); see `repghost_tf.quantization.ranges`.

    Raises:
        ExportError: bad arguments, or an op with no TFLite builtin kernel.
    """
    if quantize not in QUANTIZATIONS:
        raise ExportError(
            f"unknown quantization {quantize!r}; choose from {', '.join(QUANTIZATIONS)}"
        )
    if io_type not in IO_TYPES:
        raise ExportError(f"unknown io_type {io_type!r}; choose from {', '.join(IO_TYPES)}")
    if io_type != "float32" and quantize != "int8":
        raise ExportError(f"io_type={io_type} needs quantize=int8; {quantize} models take float32")
    if ranges not in quantization.RANGES:
        raise ExportError(
            f"unknown ranges {ranges!r}; choose from {', '.join(quantization.RANGES)}"
        )
    if quantize == "int8" and representative_data is None:
        raise ExportError("int8 quantization needs representative_data for calibration")

    try:
        with native_logs.silenced(), warnings.catch_warnings():
            # The converter warns about its own int8-input bookkeeping on every int8 export.
            warnings.filterwarnings("ignore", "Statistics for quantized inputs")
            converter = tf.lite.TFLiteConverter.from_keras_model(
                fixed_input_model(model, image_size)
            )
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            if quantize != "none":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if quantize == "float16":
                converter.target_spec.supported_types = [tf.float16]
            if quantize == "int8":
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                flatbuffer = quantization.quantize_flatbuffer(
                    converter, lambda: _calibration_images(representative_data),
                    input_type=io_type, output_type=io_type, ranges=ranges,
                    pixel_range=pixel_range,
                )
            else:
                flatbuffer = converter.convert()
    except ExportError:
        raise
    except Exception as error:  # The converter raises several types, all with a long message.
        raise ExportError(_conversion_failure(error)) from error
    check_builtin_only(flatbuffer)
    return flatbuffer


def fixed_input_model(model: keras.Model, image_size: int) -> keras.Model:
    """Wraps `model` behind a (1, image_size, image_size, 3) input, sharing its weights, so that
    the flatbuffer has static shapes (no SHAPE/PACK ops from a dynamic batch)."""
    channels = model.inputs[0].shape[-1] if model.inputs else 3
    inputs = keras.Input(batch_shape=(1, image_size, image_size, channels), name="image")
    return keras.Model(inputs, model(inputs, training=False), name=model.name)


def _calibration_images(data: Iterable | Callable[[], Iterable]) -> Iterator[np.ndarray]:
    """Yields the single float32 images [1, H, W, C] of `representative_data`."""
    batches = data() if callable(data) else data
    if isinstance(batches, np.ndarray):
        batches = [batches]
    seen = False
    for batch in batches:
        for image in np.asarray(batch[0] if isinstance(batch, (tuple, list)) else batch):
            seen = True
            yield np.asarray(image, np.float32)[None]
    if not seen:
        raise ExportError("the representative dataset is empty")


def _conversion_failure(error: Exception) -> str:
    """One line out of the converter's multi-line error, naming the unsupported TF ops."""
    message = str(error)
    ops = sorted(set(re.findall(r"'?tf\.(\w+)'? op is neither", message)))
    ops = ops or sorted(set(re.findall(r"\btf\.(\w+)\b", message)))
    if "Select TF ops" in message or "neither a custom op nor a flex op" in message:
        return (
            f"the model uses TF ops with no TFLite builtin kernel ({', '.join(ops) or 'see log'}); "
            "Flex/Select TF ops are not allowed in exports"
        )
    first_line = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return f"TFLite conversion failed: {type(error).__name__}: {first_line}"


def check_builtin_only(model_bytes_or_path: bytes | str | os.PathLike) -> None:
    """Raises ExportError if the flatbuffer holds a Flex (Select TF) or other custom op."""
    custom = sorted({name for name, is_custom in _operators(model_bytes_or_path) if is_custom})
    if custom:
        raise ExportError(
            f"the model uses non-builtin ops ({', '.join(custom)}); "
            "Flex/Select TF ops and custom ops are not allowed in exports"
        )


def op_histogram(model_bytes_or_path: bytes | str | os.PathLike) -> dict[str, int]:
    """Op type -> count over all subgraphs, most frequent first: builtin names ("CONV_2D") and
    custom op names ("FlexErf")."""
    counts = Counter(name for name, _ in _operators(model_bytes_or_path))
    return dict(counts.most_common())


def _operators(model_bytes_or_path: bytes | str | os.PathLike) -> Iterator[tuple[str, bool]]:
    """(op name, is custom) of every operator of every subgraph, read off the flatbuffer."""
    schema = _schema()
    model = schema.Model.GetRootAs(_read_bytes(model_bytes_or_path), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            code = model.OperatorCodes(subgraph.Operators(o).OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if builtin == schema.BuiltinOperator.CUSTOM:
                yield code.CustomCode().decode(), True
            else:
                yield names[builtin], False


def _read_bytes(model_bytes_or_path: bytes | str | os.PathLike) -> bytes:
    if isinstance(model_bytes_or_path, (bytes, bytearray)):
        return bytes(model_bytes_or_path)
    with open(model_bytes_or_path, "rb") as file:
        return file.read()


def _schema():
    """The TFLite flatbuffer schema's Python bindings, from LiteRT or else TensorFlow."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        from tensorflow.lite.python import schema_py_generated
    return schema_py_generated
