"""int8 activation ranges: least-error ranges against the converter's min/max."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import repghost_tf
from repghost_tf import litert
from repghost_tf.export import tflite
from repghost_tf.quantization import ranges
from helpers import randomize_batchnorms, random_images


def _quantization_mse(values: np.ndarray, low: float, high: float) -> float:
    """Mean squared error of quantizing `values` to 256 levels over [low, high], clipping."""
    step = (high - low) / 255
    quantized = np.round((np.clip(values, low, high) - low) / step) * step + low
    return float(np.mean((quantized - values) ** 2))


def _mse_range(values: np.ndarray) -> tuple[float, float]:
    histogram = ranges._Histogram(values.min(), values.max())
    histogram.add(values)
    return ranges._least_error_range(histogram)


def test_heavy_tails_are_clipped_where_the_error_is_least():
    values = np.random.default_rng(0).standard_t(3, 100_000)  # rare values far out
    low, high = _mse_range(values)
    assert 0.9 * values.min() < low < 0 < high < 0.9 * values.max()
    # The histogram's error estimate picks a range whose real error is lower: by 19% here.
    minmax_error = _quantization_mse(values, values.min(), values.max())
    assert _quantization_mse(values, low, high) < 0.9 * minmax_error
    # ... and lower than a range clipped much harder.
    assert _quantization_mse(values, low, high) < _quantization_mse(values, low / 3, high / 3)


def test_a_range_without_outliers_is_kept():
    values = np.random.default_rng(1).uniform(0, 10, 100_000)
    low, high = _mse_range(values)
    assert low == 0 and high == pytest.approx(values.max(), rel=0.03)


def test_relu_zeros_do_not_pull_the_range_in():
    """Exact zeros (a ReLU's negative half) are kept exactly by int8, whatever the range."""
    rng = np.random.default_rng(2)
    values = np.maximum(rng.uniform(-10, 10, 100_000), 0)
    low, high = _mse_range(values)
    assert low == 0 and high == pytest.approx(values.max(), rel=0.03)


@pytest.fixture(scope="module")
def fused_model() -> keras.Model:
    model = repghost_tf.RepGhostNet050(classes=10, classifier_activation=None)
    randomize_batchnorms(model, seed=5)
    return repghost_tf.fuse(model)


@pytest.mark.slow
def test_minmax_ranges_give_the_converters_own_int8_model(fused_model):
    """Calibrate, set ranges, quantize: with "minmax" and no pinned input range, the three steps
    give what the converter's one-call full-int8 conversion gives."""
    calibration_images = random_images(8, 32, 32, seed=11)
    converter = tf.lite.TFLiteConverter.from_keras_model(
        tflite.fixed_input_model(fused_model, 32)
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = lambda: ([image[None]] for image in calibration_images)
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    reference = litert.make_interpreter(converter.convert())
    ours = litert.make_interpreter(tflite.convert(
        fused_model, "int8", image_size=32, io_type="uint8",
        representative_data=calibration_images, pixel_range=None, ranges="minmax",
    ))
    images = random_images(4, 32, 32, seed=12)
    assert ours.get_input_details()[0]["quantization"] == (
        reference.get_input_details()[0]["quantization"]
    )
    np.testing.assert_array_equal(
        litert.run_interpreter(ours, images), litert.run_interpreter(reference, images)
    )
    mse = litert.make_interpreter(tflite.convert(
        fused_model, "int8", image_size=32, io_type="uint8",
        representative_data=calibration_images, pixel_range=None,
    ))
    assert not np.array_equal(litert.run_interpreter(mse, images),
                              litert.run_interpreter(reference, images))


def test_unknown_range_method_is_one_clear_error(fused_model):
    with pytest.raises(tflite.ExportError, match="unknown ranges 'max'; choose from mse, minmax"):
        tflite.convert(fused_model, "int8", image_size=32,
                       representative_data=random_images(2, 32, 32), ranges="max")
