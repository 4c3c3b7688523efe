"""TFLite export: float parity with Keras, builtin ops only, quantized input types, atomic files,
and the export pipeline's refusals (one line, nothing written)."""

import errno
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import repghost_tf
from repghost_tf import litert, runs
from repghost_tf.export import pipeline
from repghost_tf.export import tflite
from repghost_tf.fusion import walk_layers
from repghost_tf.models.layers import ConvBN
from helpers import randomize_batchnorms, random_images, relative_error, user_environment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _randomized(constructor, **kwargs) -> keras.Model:
    model = constructor(classifier_activation=None, **kwargs)
    randomize_batchnorms(model, seed=3)
    return model


def _tflite_logits(flatbuffer: bytes, images: np.ndarray) -> np.ndarray:
    return litert.run_interpreter(litert.make_interpreter(flatbuffer), images)


@pytest.fixture(scope="module")
def repghostnet_050():
    """Training form with non-trivial BatchNorm statistics, and its fused float32 export."""
    model = _randomized(repghost_tf.RepGhostNet050)
    return model, tflite.convert(repghost_tf.fuse(model), image_size=224)


@pytest.mark.parametrize(
    "constructor,image_size",
    [pytest.param(repghost_tf.RepGhostNet100, 160, marks=pytest.mark.slow),
     (repghost_tf.GhostNet050, 160)],
    ids=["repghostnet_100", "ghostnet_050"],
)
def test_float32_matches_keras(constructor, image_size):
    model = _randomized(constructor)
    flatbuffer = tflite.convert(repghost_tf.fuse(model), image_size=image_size)
    images = random_images(2, image_size, image_size, seed=1)
    expected = model(images, training=False)
    assert np.linalg.norm(expected) > 1.0
    assert relative_error(_tflite_logits(flatbuffer, images), expected) < 1e-5


@pytest.mark.slow
def test_repghostnet_050_float32_and_float16_match_keras(repghostnet_050):
    model, float32 = repghostnet_050
    images = random_images(2, 224, 224, seed=2)
    expected = model(images, training=False)
    assert np.linalg.norm(expected) > 1.0
    assert relative_error(_tflite_logits(float32, images), expected) < 1e-5
    interpreter = litert.make_interpreter(float32)
    assert interpreter.get_input_details()[0]["shape_signature"].tolist() == [1, 224, 224, 3]

    float16 = tflite.convert(repghost_tf.fuse(model), "float16", image_size=224)
    assert len(float16) < 0.6 * len(float32)
    assert relative_error(_tflite_logits(float16, images), expected) < 1e-2

    dynamic = tflite.convert(repghost_tf.fuse(model), "dynamic", image_size=224)
    assert len(dynamic) < 0.35 * len(float32)
    assert relative_error(_tflite_logits(dynamic, images), expected) < 5e-2


@pytest.mark.slow
def test_op_histograms(repghostnet_050, tmp_path):
    model, fused = repghostnet_050
    fused_ops = tflite.op_histogram(fused)
    unfused_ops = tflite.op_histogram(tflite.convert(model, image_size=224))
    ghostnet_ops = tflite.op_histogram(
        tflite.convert(repghost_tf.fuse(repghost_tf.GhostNet050()), image_size=64)
    )
    assert "CONCATENATION" not in fused_ops
    assert not any(name.startswith("Flex") for name in fused_ops)
    # The pixel normalisation is one DEPTHWISE_CONV_2D, not a SUB and a MUL over the image, and
    # each of the seven squeeze-excites has one MUL (its gate; hard-sigmoid's / 6 is folded).
    assert "SUB" not in fused_ops and fused_ops["MUL"] == 7
    assert sum(fused_ops.values()) < sum(unfused_ops.values())
    assert fused_ops["DEPTHWISE_CONV_2D"] == unfused_ops["DEPTHWISE_CONV_2D"]
    # Fixed batch 1: no dynamic-shape arithmetic in front of the classifier.
    assert not {"SHAPE", "PACK", "STRIDED_SLICE"} & set(fused_ops)
    assert ghostnet_ops["CONCATENATION"] == 2 * 16
    (tmp_path / "fused.tflite").write_bytes(fused)
    assert tflite.op_histogram(tmp_path / "fused.tflite") == fused_ops


def test_static_graph_normalises_pixels_in_one_wide_depthwise_conv(repghostnet_050):
    """At a fixed input size the normalisation runs on (224, 1, 224 x 3): XNNPACK's depthwise
    kernel works on 16-32 channels per tile, and three would leave most of every tile empty.
    Every PAD is a stride-2 conv's (PyTorch pads top and left, TFLite's SAME bottom and right)."""
    _, fused = repghostnet_050
    interpreter = litert.make_interpreter(fused)
    shapes = {t["index"]: t["shape"].tolist() for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    first = next(op for op in ops if op["op_name"] == "DEPTHWISE_CONV_2D")
    assert shapes[first["inputs"][0]] == [1, 224, 1, 224 * 3]
    assert tflite.op_histogram(fused)["RESHAPE"] == 2
    consumers = {int(t): op for op in ops for t in op["inputs"]}
    pads = [op for op in ops if op["op_name"] == "PAD"]
    strided = [layer for layer in walk_layers(repghostnet_050[0])
               if isinstance(layer, ConvBN) and layer.strides == 2]
    assert len(pads) == len(strided) == 9
    for pad in pads:
        assert consumers[int(pad["outputs"][0])]["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")


@pytest.fixture(scope="module")
def int8_models():
    """Full-int8 exports of one fused model with each io_type, calibrated on images that never
    reach 0 or 255."""
    model = repghost_tf.fuse(_randomized(repghost_tf.RepGhostNet050, classes=10))
    calibration = [np.clip(random_images(4, 64, 64, seed=s), 20, 230) for s in range(4)]
    return model, {
        io_type: tflite.convert(
            model, "int8", image_size=64, io_type=io_type, representative_data=calibration
        )
        for io_type in ("uint8", "int8", "float32")
    }


@pytest.mark.slow
def test_uint8_and_int8_inputs_take_camera_pixels(int8_models):
    model, flatbuffers = int8_models
    pixels = np.round(random_images(3, 64, 64, seed=7))
    outputs = {}
    for io_type, flatbuffer in flatbuffers.items():
        interpreter = litert.make_interpreter(flatbuffer)
        detail = interpreter.get_input_details()[0]
        assert np.dtype(detail["dtype"]).name == io_type
        assert np.dtype(interpreter.get_output_details()[0]["dtype"]).name == io_type
        ops = tflite.op_histogram(flatbuffer)
        assert "CONCATENATION" not in ops and not any(name.startswith("Flex") for name in ops)
        outputs[io_type] = litert.run_interpreter(interpreter, pixels)
    # Scale 1 over the full pixel range although calibration saw only [20, 230]: a uint8 input
    # is the camera's pixel, an int8 input is the pixel - 128.
    uint8_input = litert.make_interpreter(flatbuffers["uint8"]).get_input_details()[0]
    int8_input = litert.make_interpreter(flatbuffers["int8"]).get_input_details()[0]
    assert uint8_input["quantization"] == (1.0, 0)
    assert int8_input["quantization"] == (1.0, -128)
    np.testing.assert_allclose(outputs["uint8"], outputs["int8"], atol=1e-6)
    expected = model(pixels, training=False)
    for io_type, logits in outputs.items():
        assert relative_error(logits, expected) < 0.2, io_type


class _Cumprod(keras.layers.Layer):
    """An op that TFLite has only as a Flex (Select TF) op."""

    def call(self, x):
        return tf.math.cumprod(x, axis=1)


keras.saving.register_keras_serializable(package="test_export")(_Cumprod)


def _flex_model() -> keras.Model:
    inputs = keras.Input((None, None, 3))
    return keras.Model(inputs, _Cumprod()(inputs))


def test_conversion_refuses_flex_ops():
    model = _flex_model()
    with pytest.raises(tflite.ExportError, match="Cumprod.*Flex/Select"):
        tflite.convert(model, image_size=32)

    converter = tf.lite.TFLiteConverter.from_keras_model(tflite.fixed_input_model(model, 32))
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS
    ]
    with_flex = converter.convert()
    assert tflite.op_histogram(with_flex) == {"FlexCumprod": 1}
    with pytest.raises(tflite.ExportError, match="FlexCumprod"):
        tflite.check_builtin_only(with_flex)


def test_convert_rejects_bad_arguments():
    model = repghost_tf.RepGhostNet050()
    with pytest.raises(tflite.ExportError, match="unknown quantization"):
        tflite.convert(model, "int4")
    with pytest.raises(tflite.ExportError, match="needs quantize=int8"):
        tflite.convert(model, "float16", io_type="uint8")
    with pytest.raises(tflite.ExportError, match="representative_data"):
        tflite.convert(model, "int8")


def _unexportable(kind: str) -> keras.Model:
    if kind == "flex":
        return _flex_model()
    inputs = keras.Input((None, None, 3))
    return keras.Model(inputs, repghost_tf.RepGhostNet050(classes=10)(inputs))


@pytest.mark.parametrize(
    "kind,message",
    [("nested", "cannot fuse: .* nests fusable layers"), ("flex", "Cumprod.*Flex")],
)
def test_export_refuses_and_writes_nothing(tmp_path, kind, message):
    path = tmp_path / "model.keras"
    _unexportable(kind).save(path)
    output_dir = tmp_path / "out"
    options = pipeline.ExportOptions(
        model=str(path), image_size=32, verify=False, output_dir=str(output_dir)
    )
    with pytest.raises(tflite.ExportError, match=message):
        pipeline.export(options, log=lambda line: None)
    assert not output_dir.exists()


def test_export_rejects_unknown_quantization_and_conflicting_sources(tmp_path):
    with pytest.raises(tflite.ExportError, match="unknown --quantize 'int4'"):
        pipeline.export(pipeline.ExportOptions(width=0.5, quantize=("none", "int4")))
    with pytest.raises(tflite.ExportError, match="one of --model and --width"):
        pipeline.export(pipeline.ExportOptions(model="x.keras", width=0.5))
    with pytest.raises(tflite.ExportError, match="train one first"):
        pipeline.export(pipeline.ExportOptions(runs_dir=str(tmp_path / "runs")))


def test_latest_model_follows_latest_to_the_deploy_form_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the project: a relative LATEST resolves against the project
    runs_dir = tmp_path / "project" / "runs"
    run = runs_dir / "repghostnet_050"
    run.mkdir(parents=True)
    (runs_dir / "LATEST").write_text("runs/repghostnet_050\n")  # relative to the project
    with pytest.raises(runs.RunError, match="holds no deploy.keras or best.keras; HINT$"):
        runs.latest_model(str(runs_dir), hint="HINT")
    (run / "best.keras").write_bytes(b"")
    assert runs.latest_model(str(runs_dir), hint="HINT") == str(run / "best.keras")
    (run / "deploy.keras").write_bytes(b"")
    (runs_dir / "LATEST").write_text(f"{run}\n")  # absolute
    assert runs.latest_model(str(runs_dir), hint="HINT") == str(run / "deploy.keras")


def test_export_builds_a_model_name_with_random_weights(tmp_path):
    for name in repghost_tf.MODELS:  # every family; no file of that name in the working directory
        assert pipeline.find_model(pipeline.ExportOptions(model=name)) is None
    options = pipeline.ExportOptions(
        model="g_ghost_regnetx_002", image_size=64, verify=False, output_dir=str(tmp_path)
    )
    written = pipeline.export(options, log=lambda line: None)
    assert sorted(os.path.basename(path) for path in written) == [
        "g_ghost_regnetx_002_float32.json", "g_ghost_regnetx_002_float32.tflite"
    ]
    report = json.loads((tmp_path / "g_ghost_regnetx_002_float32.json").read_text())
    assert report["source"] == "random g_ghost_regnetx_002" and report["form"] == "deploy"
    assert report["model"]["input"] == {"dtype": "float32", "shape": [1, 64, 64, 3]}
    assert report["model"]["output"] == {"dtype": "float32", "shape": [1, 1000]}
    ops = tflite.op_histogram(tmp_path / "g_ghost_regnetx_002_float32.tflite")
    assert ops == report["model"]["op_histogram"] and "CONV_2D" in ops
    assert not any(name.startswith("Flex") for name in ops)


def test_a_full_disk_leaves_no_file_without_its_model(tmp_path, monkeypatch):
    """The report's write fails as on a full filesystem: the model written before it goes too."""
    def full(path, value, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pipeline, "write_json", full)
    options = pipeline.ExportOptions(
        model="g_ghost_regnetx_002", image_size=64, verify=False, output_dir=str(tmp_path)
    )
    with pytest.raises(OSError, match="No space left"):
        pipeline.export(options, log=lambda line: None)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("problem", ["missing", "corrupt", "no_run", "unknown_name"])
def test_cli_fails_with_one_line(tmp_path, problem):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"this is not a zip archive")
    arguments = {
        "missing": [f"--model={tmp_path / 'missing.keras'}"],
        "corrupt": [f"--model={corrupt}"],
        "no_run": [f"--runs_dir={tmp_path / 'runs'}", "--quantize=int8"],
        "unknown_name": ["--model=repghostnet_999"],
    }[problem]
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "export_tflite.py"), *arguments],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=user_environment(PYTHONPATH=REPO),
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("export_tflite.py: error: "), result.stderr
    if problem == "corrupt":
        assert "is not a .keras model" in lines[0]
    if problem == "unknown_name":
        assert lines[-1] == (
            "export_tflite.py: error: --model=repghostnet_999 is neither a file nor a model "
            "name; list the names with: python -c 'import repghost_tf; print(*repghost_tf.MODELS)'"
        )
    assert sorted(os.listdir(tmp_path)) == ["corrupt.keras"]
