"""The full-int8 conversion, one recipe for classifiers and detectors: the TFLite converter
calibrates the float graph on representative images, `ranges.set_ranges` replaces the ranges it
recorded, and the converter's MLIR quantizer quantizes (the split TensorFlow's own
QuantizationDebugger uses). On a QAT graph the FakeQuant ops' ranges win over the calibrated ones.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf

from repghost_tf.quantization.fake_quant import PIXEL_RANGE
from repghost_tf.quantization.ranges import set_ranges


def quantize_flatbuffer(
    converter: tf.lite.TFLiteConverter,
    images: Callable[[], Iterable[np.ndarray]],
    *,
    input_type: str,
    output_type: str,
    ranges: str = "mse",
    pixel_range: tuple[float, float] | None = PIXEL_RANGE,
    keep_float: Callable[[str], bool] | None = None,
) -> bytes:
    """The int8 flatbuffer of `converter`'s graph, with `input_type` / `output_type` I/O ("uint8",
    "int8" or "float32").

    Args:
        converter: a converter of the float graph, with its target ops set.
        images: returns the calibration images, each (1, H, W, C) float32; called twice.
        ranges: "mse" or "minmax" (see `repghost_tf.quantization.ranges`).
        pixel_range: the input range to represent exactly (None: the images' own range).
        keep_float: names of tensors that stay float: their ranges are dropped and their ops
            denylisted, so the quantizer leaves them as they are (a detector's post-processing).
    """
    from tensorflow.lite.python.convert import mlir_quantize

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter._experimental_calibrate_only = True  # noqa: SLF001 (no public API for this step)
    with _interruptible_calibration() as interrupted:
        converter.representative_dataset = lambda: (
            [image] for image in _until(interrupted, images()))
        calibrated = converter.convert()
    float_tensors = [] if keep_float is None else [
        name for name in _tensor_names(calibrated) if keep_float(name)
    ]
    calibrated = set_ranges(
        calibrated, images(), method=ranges, input_range=pixel_range,
        keep_float=set(float_tensors).__contains__ if float_tensors else None,
    )
    return mlir_quantize(
        calibrated, input_data_type=getattr(tf, input_type),
        output_data_type=getattr(tf, output_type), denylisted_nodes=float_tensors or None,
    )


def _tensor_names(flatbuffer: bytes) -> list[str]:
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    return [tensor.name.decode() for tensor in model.subgraphs[0].tensors]


@contextlib.contextmanager
def _interruptible_calibration() -> Iterator[threading.Event]:
    """Ctrl-C during the converter's calibration. The converter runs the representative images
    from C++ and takes a KeyboardInterrupt raised in their generator for the end of the images,
    then goes on. Here Ctrl-C sets the event instead (the generator then stops) and
    KeyboardInterrupt is raised once the converter has returned."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted  # signal handlers belong to the main thread
        return
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted.is_set():
        raise KeyboardInterrupt


def _until(event: threading.Event, items: Iterable) -> Iterator:
    for item in items:
        if event.is_set():
            return
        yield item
