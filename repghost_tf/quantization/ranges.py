"""Activation ranges for full-int8 TFLite models.

The TFLite converter quantizes every activation tensor over the min/max it saw on the calibration
images. One rare value widens a range for every image: the int8 step grows with it, and on
RepGhostNet the rounding noise that adds up over 144 quantized tensors flipped the top-1 of
near-tie images (3.15% of the main job's test images; 1.65% with "mse"). "mse" ranges instead
clip each tensor where the expected squared error of int8 rounding plus clipping over the
calibration values is least, a common alternative to min/max calibration.

`set_ranges` takes the converter's calibrated float model (`_experimental_calibrate_only`, as
TensorFlow's own QuantizationDebugger does), rewrites the recorded ranges, and leaves the
quantization itself to the converter's MLIR quantizer.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterable

import numpy as np

from repghost_tf.litert import interpreter_class

RANGES = ("mse", "minmax")

_BINS = 2048
# Candidate clip ranges: the min/max range shrunk towards zero by these factors.
_SHRINK = np.linspace(0.05, 1.0, 96)
_LEVELS = 255


def set_ranges(
    calibrated: bytes,
    images: Iterable[np.ndarray],
    method: str = "mse",
    input_range: tuple[float, float] | None = None,
    keep_float: Callable[[str], bool] | None = None,
) -> bytes:
    """`calibrated` with each activation's recorded range replaced by `method`'s.

    Args:
        calibrated: a float flatbuffer whose tensors carry calibration min/max, as the converter
            returns it with `_experimental_calibrate_only`.
        images: the calibration images, each (1, H, W, C) float32, as the model takes them.
        method: "mse" (clip where int8 rounding plus clipping error is least) or "minmax"
            (the converter's ranges, unchanged).
        input_range: pins the model input's range (the pixel range a uint8 input must cover
            exactly), whatever the calibration images span.
        keep_float: names of tensors to leave in float: their ranges are dropped, and the
            quantizer keeps an op in float when its tensors have none (a detector's
            post-processing).
    """
    if method not in RANGES:
        raise ValueError(f"unknown range method {method!r}; choose from {', '.join(RANGES)}")
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    subgraph = model.subgraphs[0]
    recorded = {
        index: (float(tensor.quantization.min[0]), float(tensor.quantization.max[0]))
        for index, tensor in enumerate(subgraph.tensors)
        if tensor.quantization is not None and tensor.quantization.min is not None
        and len(tensor.quantization.min) == 1
    }
    if keep_float is not None:
        for index in [i for i in recorded if keep_float(subgraph.tensors[i].name.decode())]:
            subgraph.tensors[index].quantization = None
            del recorded[index]
    ranges = dict(recorded)
    if input_range is not None:
        ranges[subgraph.inputs[0]] = input_range
    if method == "mse":
        measured = {i: limits for i, limits in recorded.items() if i not in subgraph.inputs
                    or input_range is None}
        histograms = _histograms(calibrated, images, measured)
        ranges.update({index: _least_error_range(h) for index, h in histograms.items()})
    for index, (low, high) in ranges.items():
        quantization = subgraph.tensors[index].quantization
        quantization.min, quantization.max = [float(low)], [float(high)]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


class _Histogram:
    """Counts of one tensor's values in fixed bins over its recorded range (zero included)."""

    def __init__(self, low: float, high: float):
        self.low, self.high = min(low, 0.0), max(high, 0.0)
        self.width = (self.high - self.low) / _BINS or 1.0
        self.counts = np.zeros(_BINS, np.int64)
        self.zeros = 0

    def add(self, values: np.ndarray) -> None:
        values = values.ravel()
        self.zeros += int(np.count_nonzero(values == 0))
        bins = np.clip(((values - self.low) / self.width).astype(np.int64), 0, _BINS - 1)
        self.counts += np.bincount(bins, minlength=_BINS)

    @property
    def centers(self) -> np.ndarray:
        return self.low + (np.arange(_BINS) + 0.5) * self.width


def _histograms(calibrated: bytes, images: Iterable[np.ndarray], recorded: dict) -> dict:
    """One histogram per ranged tensor, over all calibration images run through `calibrated`."""
    with warnings.catch_warnings():
        # LiteRT warns that keeping every tensor is for debugging; reading them is the point.
        warnings.filterwarnings("ignore", ".*experimental_preserve_all_tensors")
        interpreter = interpreter_class()(
            model_content=bytes(calibrated), experimental_preserve_all_tensors=True
        )
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    histograms = {index: _Histogram(*limits) for index, limits in recorded.items()}
    seen = 0
    for image in images:
        interpreter.set_tensor(input_index, np.asarray(image, np.float32))
        interpreter.invoke()
        for index, histogram in histograms.items():
            histogram.add(interpreter.get_tensor(index))
        seen += 1
    if not seen:
        raise ValueError("no calibration images to measure activation ranges on")
    return histograms


def _least_error_range(histogram: _Histogram) -> tuple[float, float]:
    """The shrunk range with the least expected squared error: clipped values lose their
    distance to the bound; the others (exact zeros aside, which int8 keeps exactly) a uniform
    rounding error of step^2 / 12."""
    centers, counts = histogram.centers, histogram.counts.astype(np.float64)
    best, best_error = (histogram.low, histogram.high), np.inf
    for shrink in _SHRINK:
        low, high = shrink * histogram.low, shrink * histogram.high
        step = (high - low) / _LEVELS
        clipped = np.maximum(centers - high, 0.0) + np.maximum(low - centers, 0.0)
        inside = counts[clipped == 0].sum() - histogram.zeros
        error = float(np.dot(counts, clipped**2) + max(inside, 0.0) * step**2 / 12)
        if error < best_error:
            best, best_error = (low, high), error
    return best
