"""int8 fake quantization lands on the grid of the int8 TFLite file: the converter's own scales
and zero points, and its int8 outputs, compared with the Keras model's."""

import keras
import numpy as np
import pytest

from repghost_tf import litert
from repghost_tf.export import tflite
from repghost_tf.quantization.fake_quant import (
    ActivationQuantizer,
    nudged_range,
    round_bias,
    round_to_weight_grid,
    weight_scales,
)

# (-1, 1) and (-2, 2) put the zero point on a tie, which float32 and double round differently.
RANGES = [(-1.0, 1.0), (-2.0, 2.0), (-0.3, 5.7), (0.0, 6.0), (-3.1, 0.0), (0.5, 2.0)]


def _quantization(interpreter, name_part: str) -> tuple[float, int]:
    for detail in interpreter.get_tensor_details():
        if name_part in detail["name"]:
            scale, zero_point = detail["quantization"]
            return float(scale), int(zero_point)
    raise KeyError(name_part)


@pytest.mark.parametrize("low,high", RANGES)
def test_nudged_ranges_are_the_converters_scales_and_zero_points(low, high):
    inputs = keras.Input((4, 4, 2))
    outputs = ActivationQuantizer(fixed_range=(low, high), name="fq")(inputs * 1.0)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).uniform(low - 1, high + 1, (4, 4, 4, 2)).astype("float32")
    flatbuffer = tflite.convert(model, "int8", image_size=4, io_type="int8",
                                representative_data=images, pixel_range=None, ranges="minmax")
    interpreter = litert.make_interpreter(flatbuffer)
    scale, zero_point = interpreter.get_output_details()[0]["quantization"]
    _, _, expected_scale, expected_zero_point = nudged_range(low, high)
    assert scale == pytest.approx(expected_scale, rel=1e-6)
    assert zero_point == expected_zero_point


def test_a_conv_with_rounded_weights_and_bias_matches_the_int8_file_exactly():
    """Conv (stride 2, zero-padded as the models pad) + bias + ReLU between two quantizers: every
    int8 output of the file is the Keras output rounded onto the output grid."""
    rng = np.random.default_rng(1)
    inputs = keras.Input((16, 16, 8))
    x = ActivationQuantizer(fixed_range=(-2.0, 3.0), name="fq_in")(inputs)
    x = keras.layers.ZeroPadding2D(1)(x)
    conv = keras.layers.Conv2D(12, 3, strides=2, activation="relu", name="conv")
    x = ActivationQuantizer(fixed_range=(0.0, 4.0), name="fq_out")(conv(x))
    model = keras.Model(inputs, x)
    kernel, bias = (rng.normal(0, 0.3, w.shape).astype("float32") for w in conv.weights)
    kernel = round_to_weight_grid(kernel, channel_axis=-1)
    input_scale = nudged_range(-2.0, 3.0)[2]
    conv.set_weights([kernel, round_bias(bias, input_scale, weight_scales(kernel, -1))])

    images = rng.uniform(-2.5, 3.5, (32, 16, 16, 8)).astype("float32")
    flatbuffer = tflite.convert(model, "int8", image_size=16, io_type="int8",
                                representative_data=images[:4], pixel_range=None,
                                ranges="minmax")
    interpreter = litert.make_interpreter(flatbuffer)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    scale, zero_point = output_detail["quantization"]
    expected = np.round(model.predict(images, verbose=0) / scale) + zero_point
    codes = []
    for image in images:
        interpreter.set_tensor(input_detail["index"],
                               litert.quantize_input(image[None], input_detail))
        interpreter.invoke()
        codes.append(interpreter.get_tensor(output_detail["index"]))
    np.testing.assert_array_equal(np.concatenate(codes), expected.astype(np.int8))


def test_weights_rounded_to_the_grid_are_the_int8_weights_of_the_file():
    rng = np.random.default_rng(2)
    inputs = keras.Input((8, 8, 6))
    conv = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")
    model = keras.Model(inputs, conv(ActivationQuantizer(fixed_range=(-1, 1))(inputs)))
    kernel = round_to_weight_grid(rng.normal(0, 1, (3, 3, 6, 1)), channel_axis=2)
    conv.set_weights([kernel, np.zeros(6, "float32")])
    flatbuffer = tflite.convert(model, "int8", image_size=8, io_type="int8",
                                representative_data=rng.uniform(-1, 1, (2, 8, 8, 6)),
                                pixel_range=None, ranges="minmax")
    interpreter = litert.make_interpreter(flatbuffer)
    weights = next(d for d in interpreter.get_tensor_details()
                   if d["shape"].tolist() == [1, 3, 3, 6] and d["dtype"] == np.int8)
    scales = weights["quantization_parameters"]["scales"]
    np.testing.assert_allclose(scales, weight_scales(kernel, channel_axis=2), rtol=1e-6)
    stored = interpreter.get_tensor(weights["index"]).astype(np.float32) * scales
    np.testing.assert_allclose(stored[0], kernel[..., 0], rtol=1e-6, atol=1e-7)


def test_ranges_follow_the_batches_until_frozen_and_survive_a_reload(tmp_path):
    quantizer = ActivationQuantizer(momentum=0.5, name="fq")
    model = keras.Sequential([keras.Input((3,)), quantizer])
    model(np.array([[-1.0, 0.0, 2.0]], "float32"), training=True)  # the first batch sets it
    assert (quantizer.range_min.numpy(), quantizer.range_max.numpy()) == (-1.0, 2.0)
    model(np.array([[-3.0, 0.0, 4.0]], "float32"), training=True)  # then a moving average
    assert (quantizer.range_min.numpy(), quantizer.range_max.numpy()) == (-2.0, 3.0)
    model(np.array([[-9.0, 9.0, 9.0]], "float32"), training=False)  # inference never moves it
    quantizer.freeze()
    model(np.array([[-9.0, 9.0, 9.0]], "float32"), training=True)
    assert (quantizer.range_min.numpy(), quantizer.range_max.numpy()) == (-2.0, 3.0)

    low, high, scale, zero_point = quantizer.grid()
    values = np.array([[-5.0, 0.37, 7.0]], "float32")
    expected = np.clip(np.round(values / scale) + zero_point, -128, 127) - zero_point
    np.testing.assert_allclose(model(values), expected * scale, rtol=1e-5)

    model.save(tmp_path / "q.keras")
    reloaded = keras.saving.load_model(tmp_path / "q.keras", safe_mode=True)
    assert reloaded.layers[-1].grid() == (low, high, scale, zero_point)
    assert reloaded.layers[-1].frozen
    np.testing.assert_allclose(reloaded(values), model(values))
