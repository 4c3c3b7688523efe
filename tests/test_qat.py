"""The quantization-aware (QAT) form of the models: where its quantizers sit, that its int8 TFLite
file is what it simulates (ranges, weights, int8 inside, outputs), safe-mode reload, and which
architectures have one."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import repghost_tf
from repghost_tf import litert, quantization
from repghost_tf.export.tflite import convert, op_histogram
from repghost_tf.fusion import walk_layers
from repghost_tf.quantization.fake_quant import ActivationQuantizer, QuantizedImageNormalization

from helpers import randomize_batchnorms, user_environment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 48


def _images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, SIZE, SIZE, 3)).astype(np.float32)


def _random_model(constructor, seed: int = 0) -> keras.Model:
    """A float model with non-trivial BatchNorm statistics and biases. (A conv with an all-zero
    bias followed by a constant add, which only an untrained SE block has, is folded wrongly by
    the TFLite converter.)"""
    keras.utils.set_random_seed(seed)
    model = constructor(input_shape=(SIZE, SIZE, 3), classes=10, classifier_activation=None)
    randomize_batchnorms(model, seed)
    rng = np.random.default_rng(seed)
    for layer in walk_layers(model):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0.0, 0.1, bias.shape)])
    return model


def _outputs(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Inference outputs, eagerly: cheaper than compiling `predict` for a handful of images."""
    return np.asarray(model(images, training=False))


def _calibrated_qat(model: keras.Model) -> keras.Model:
    qat_model = quantization.quantize_model(model)
    quantization.calibrate(qat_model, [_images(8, seed) for seed in range(1, 3)])
    return qat_model


@pytest.fixture(scope="module")
def calibrated():
    """RepGhostNet 0.5x: a float model and its calibrated QAT form."""
    model = _random_model(repghost_tf.RepGhostNet050)
    return model, _calibrated_qat(model)


@pytest.fixture(scope="module")
def exported(calibrated):
    """The float model, the finalized QAT model and its int8 file (uint8 io)."""
    model, qat_model = calibrated
    final = quantization.finalize(qat_model)
    flatbuffer = convert(final, "int8", image_size=SIZE, io_type="uint8",
                         representative_data=_images(4, 9), ranges="minmax")
    return model, final, flatbuffer


def _interpreter_tensors(flatbuffer: bytes):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    return interpreter, details, interpreter._get_ops_details()


def SHARED_MODEL(test):  # noqa: N802 (a decorator, named as pytest's marks are)
    """The tests that share the module's model: they run on one pytest-xdist worker and, as the
    model takes a minute to build and calibrate, with `-m slow`."""
    return pytest.mark.slow(pytest.mark.xdist_group("qat_model")(test))


@SHARED_MODEL
def test_every_activation_range_is_the_one_trained(exported):
    """Each quantizer's grid is a tensor's (scale, zero point) in the file (the scale to float32
    rounding); and the file has no int8 activation grid that no quantizer set."""
    _, final, flatbuffer = exported
    _, tensors, ops = _interpreter_tensors(flatbuffer)
    activations = {o for op in ops for o in op["outputs"]}
    file_grids = {tensors[i]["quantization"] for i in activations if tensors[i]["dtype"] == np.int8}
    qat_grids = {q.grid()[2:] for q in quantization.quantizers(final)}

    def same(a, b):
        return a[1] == b[1] and abs(a[0] - b[0]) <= 1e-6 * b[0]

    assert all(any(same(f, q) for q in qat_grids) for f in file_grids)
    assert all(any(same(f, q) for f in file_grids) for q in qat_grids)


@SHARED_MODEL
def test_int8_file_holds_the_rounded_weights(exported):
    """Every conv kernel in the file, dequantized, is a kernel of the finalized QAT model."""
    _, final, flatbuffer = exported
    interpreter, tensors, ops = _interpreter_tensors(flatbuffer)
    keras_kernels = {}
    for layer in final.layers:
        if isinstance(layer, QuantizedImageNormalization):
            # The file runs the normalisation over (height, 1, width x 3): its kernel, tiled.
            width = final.input_shape[2] or interpreter.get_input_details()[0]["shape"][2]
            kernel = np.tile(layer.get_weights()[0], (1, 1, width, 1))
            keras_kernels.setdefault(kernel.shape, []).append(kernel)
        elif isinstance(layer, quantization.QUANTIZED_WEIGHT_LAYERS):
            kernel = layer.get_weights()[0]
            keras_kernels.setdefault(kernel.shape, []).append(kernel)
    checked = 0
    for op in ops:
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        weights = tensors[op["inputs"][1]]
        scales = weights["quantization_parameters"]["scales"]
        values = interpreter.get_tensor(weights["index"]).astype(np.float32)
        if op["op_name"] == "CONV_2D":  # (out, h, w, in) -> (h, w, in, out)
            kernel = (values * scales[:, None, None, None]).transpose(1, 2, 3, 0)
        else:  # (1, h, w, channels) -> (h, w, channels, 1)
            kernel = (values * scales).transpose(1, 2, 3, 0)
        assert any(np.array_equal(kernel, k) for k in keras_kernels[kernel.shape]), op["index"]
        checked += 1
    assert checked == 54 + 42


@SHARED_MODEL
def test_int8_file_is_int8_inside(exported):
    """Builtin ops only, no DEQUANTIZE, QUANTIZE only to and from the uint8 input and output;
    every other activation int8, every bias int32; XNNPACK runs all ops but those two."""
    _, _, flatbuffer = exported
    histogram = op_histogram(flatbuffer)
    assert "DEQUANTIZE" not in histogram and histogram["QUANTIZE"] == 2
    interpreter, tensors, ops = _interpreter_tensors(flatbuffer)
    io = {interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]}
    for op in ops:
        for index in op["outputs"]:
            expected = np.uint8 if index in io else np.int8
            assert tensors[index]["dtype"] == expected, (op["op_name"], tensors[index]["name"])
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            assert tensors[op["inputs"][2]]["dtype"] == np.int32
    partitions, left_out = litert.delegation(litert.make_interpreter(flatbuffer))
    assert partitions == 1 and left_out == {"QUANTIZE": 2}


@SHARED_MODEL
def test_int8_file_computes_what_the_qat_model_simulates(exported):
    """The file's logits against the finalized QAT model's on fixed images: within one output
    step nearly everywhere. This random network amplifies rare rounding differences from block
    to block (docs/int8_arithmetic.md, Q5); measured here 98.0% within one step, 100% top-1."""
    _, final, flatbuffer = exported
    images = _images(64, 123)
    expected = _outputs(final, images)
    interpreter = litert.make_interpreter(flatbuffer)
    actual = np.concatenate([litert.run_interpreter(interpreter, image[None]) for image in images])
    scale = interpreter.get_output_details()[0]["quantization"][0]
    steps = np.abs(np.round(actual / scale) - np.round(expected / scale))
    assert np.mean(steps <= 1) >= 0.96
    assert np.mean(actual.argmax(1) == expected.argmax(1)) >= 0.98


@SHARED_MODEL
def test_qat_model_stays_close_to_the_float_model(exported):
    model, final, _ = exported
    images = _images(32, 7)
    expected = _outputs(repghost_tf.fuse(model), images)
    actual = _outputs(final, images)
    assert np.linalg.norm(actual - expected) / np.linalg.norm(expected) < 0.05


@SHARED_MODEL
def test_qat_model_round_trips_in_safe_mode(tmp_path, calibrated):
    _, qat_model = calibrated
    images = _images(4, 5)
    for model in (qat_model, quantization.finalize(qat_model)):
        path = str(tmp_path / f"{model.name}.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        np.testing.assert_array_equal(_outputs(loaded, images),
                                      _outputs(model, images))
        assert [q.grid() for q in quantization.quantizers(loaded)] == [q.grid() for q in
                                                                quantization.quantizers(model)]


@SHARED_MODEL
def test_finalize_freezes_ranges_and_keeps_outputs(calibrated):
    _, qat_model = calibrated
    final = quantization.finalize(qat_model)
    assert quantization.finalize(final) is final
    assert all(q.frozen for q in quantization.quantizers(final))
    assert not any(q.frozen for q in quantization.quantizers(qat_model))
    images = _images(8, 6)
    before = [q.grid() for q in quantization.quantizers(final)]
    final(images, training=True)
    assert [q.grid() for q in quantization.quantizers(final)] == before
    expected = _outputs(qat_model, images)
    actual = _outputs(final, images)
    # Only the biases move, each by at most half a step of its int32 grid; this random network
    # turns that into a few logit steps (measured: relative error 1.7%).
    assert np.linalg.norm(actual - expected) / np.linalg.norm(expected) < 0.05
    assert np.mean(actual.argmax(1) == expected.argmax(1)) >= 7 / 8


@pytest.mark.parametrize("constructor", [
    repghost_tf.GhostNet050,
    pytest.param(repghost_tf.RepGhostNet050NoShortcut, marks=pytest.mark.slow),
])
def test_every_architecture_has_a_qat_form(constructor):
    """RepGhostNet 0.5x is the module's model. Widths change only channel counts, and the deploy
    forms of the re-parameterization ablations are RepGhostNet's; the blocks differ without
    shortcuts and in GhostNet (CONCATENATION)."""
    model = _random_model(constructor)
    qat_model = _calibrated_qat(model)
    images = _images(8, 11)
    expected = _outputs(repghost_tf.fuse(model), images)
    actual = _outputs(qat_model, images)
    assert np.linalg.norm(actual - expected) / np.linalg.norm(expected) < 0.1
    assert not any(isinstance(layer, repghost_tf.FusableLayer) for layer in qat_model.layers)
    first = qat_model.layers[1]
    assert isinstance(first, ActivationQuantizer) and first.fixed_range == (0.0, 255.0)


def test_unsupported_model_gives_one_line():
    model = repghost_tf.GGhostRegNetX002(input_shape=(64, 64, 3), classes=10,
                                         classifier_activation=None)
    with pytest.raises(quantization.UnsupportedModelError, match="G-GhostNet") as error:
        quantization.quantize_model(model)
    assert "\n" not in str(error.value)


def test_softmax_model_gives_one_line():
    model = repghost_tf.RepGhostNet050(input_shape=(SIZE, SIZE, 3), classes=10)
    with pytest.raises(quantization.UnsupportedModelError, match="logits"):
        quantization.quantize_model(model)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> dict[str, str]:
    """A QAT model and a float GhostNet 0.5x, as .keras files."""
    directory = tmp_path_factory.mktemp("models")
    paths = {"qat": str(directory / "quantization.keras"), "ghostnet": str(directory / "ghostnet.keras")}
    quantization.quantize_model(_random_model(repghost_tf.RepGhostNet050)).save(paths["qat"])
    _random_model(repghost_tf.GhostNet050).save(paths["ghostnet"])
    return paths


@pytest.mark.parametrize("problem", ["no_float_run", "other_architecture", "qat_to_float16"])
def test_qat_command_lines_fail_with_one_line(tmp_path, saved_models, problem):
    """Bad input to `train.py --qat` and to the export of a QAT model: one line on stderr, a
    non-zero exit, and nothing written."""
    command, message = {
        "no_float_run": (["train.py", "--qat"], "--qat needs a float model to start from"),
        "other_architecture": (
            ["train.py", "--qat", f"--init_from={saved_models['ghostnet']}", "--width=0.5"],
            "holds ghostnet_050, not repghostnet_050",
        ),
        "qat_to_float16": (
            ["export_tflite.py", f"--model={saved_models['qat']}", "--quantize=float16",
             f"--output_dir={tmp_path / 'out'}"],
            "export it with --quantize int8",
        ),
    }[problem]
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, command[0]), *command[1:]], cwd=tmp_path,
        capture_output=True, text=True, timeout=300, env=user_environment(PYTHONPATH=ROOT),
    )
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert os.listdir(tmp_path) == []


def test_finalize_refuses_ranges_that_saw_no_data():
    qat_model = quantization.quantize_model(_random_model(repghost_tf.RepGhostNet050))
    with pytest.raises(quantization.UncalibratedModelError, match="have seen no data"):
        quantization.finalize(qat_model)
