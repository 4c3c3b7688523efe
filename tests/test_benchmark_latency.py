"""benchmark/latency.py end to end on one tiny configuration, and its model selection."""

from __future__ import annotations

import sys

import pytest
from absl import flags
from absl.testing import flagsaver

from benchmark import export, latency, results_io


@pytest.fixture(scope="module", autouse=True)
def parsed_flags():
    """absl flags must be parsed before flagsaver can override them."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS(["test"])


@pytest.mark.slow
def test_tiny_end_to_end_host_run(tmp_path, capsys):
    peer = latency.peer_available()
    with flagsaver.flagsaver(
        models=["repghostnet_050"], mobilenetv3="none", forms=["fused"], precisions=["float32"],
        threads=["1"], warmup_runs=1, num_runs=3, image_size=64, output_dir=str(tmp_path),
        peer=peer,
    ):
        latency.main([])

    document = results_io.load_document(tmp_path / "results.json")
    litert = [r for r in document["results"] if r["runtime"] == "litert"]
    assert [(r["model"], r["form"], r["precision"], r["threads"], r["num_runs"]) for r in litert] == [
        ("repghostnet_050", "fused", "float32", 1, 3)
    ]
    row = litert[0]
    assert row["size_bytes"] == (tmp_path / "models" / "repghostnet_050-fused-float32.tflite").stat().st_size
    assert row["macs"] == export.multiply_adds("repghostnet_050", 64)
    assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"]
    # float32 RepGhostNet runs entirely in XNNPACK.
    assert (row["xnnpack_partitions"], row["outside_xnnpack"]) == (1, "")
    assert document["settings"]["models"] == ["repghostnet_050"]
    assert document["environment"]["packages"]["ai-edge-litert"]
    markdown = (tmp_path / "results.md").read_text()
    assert "| repghostnet_050 | fused | float32 | 1 |" in markdown
    if peer:
        (ort,) = [r for r in document["results"] if r["runtime"] == "onnxruntime"]
        assert (ort["model"], ort["threads"], ort["num_runs"]) == ("repghostnet_050", 1, 3)
        assert "TFLite / ORT" in markdown
    assert "wrote" in capsys.readouterr().out

    model = tmp_path / "models" / "repghostnet_050-fused-float32.tflite"
    exported_at = model.stat().st_mtime_ns
    with flagsaver.flagsaver(
        models=["repghostnet_050"], mobilenetv3="none", forms=["fused"], precisions=["float32"],
        threads=["1"], warmup_runs=0, num_runs=2, image_size=64, output_dir=str(tmp_path / "again"),
        model_dir=str(tmp_path / "models"), reuse_exports=True, peer=False,
    ):
        latency.main([])
    assert f"reused {model}" in capsys.readouterr().out
    assert model.stat().st_mtime_ns == exported_at
    assert results_io.load_document(tmp_path / "again" / "results.json")["settings"]["reuse_exports"]


def test_unknown_model_is_a_one_line_error(tmp_path, capsys):
    with flagsaver.flagsaver(models=["resnet_050"], output_dir=str(tmp_path)):
        with pytest.raises(SystemExit) as exit_info:
            latency.main([])
    assert str(exit_info.value).startswith("error: unknown model 'resnet_050'; choose from")
    assert "\n" not in str(exit_info.value) and not list(tmp_path.iterdir())


def test_litert_torch_peer_needs_its_environment(tmp_path):
    """Without litert-torch in the given Python's environment: one line, nothing written."""
    for python in (sys.executable, str(tmp_path / "no-such-python")):
        with flagsaver.flagsaver(models=["repghostnet_050"], litert_torch_python=python,
                                 output_dir=str(tmp_path / "run")):
            with pytest.raises(SystemExit) as exit_info:
                latency.main([])
        message = str(exit_info.value)
        assert message.startswith(f"error: --litert_torch_python={python} has no litert-torch")
        assert "\n" not in message and not (tmp_path / "run").exists()


def test_bad_thread_count_is_an_error():
    with flagsaver.flagsaver(threads=["1", "four"]):
        with pytest.raises(SystemExit, match="--threads must be integers"):
            latency.main([])


def test_closest_mobilenetv3_by_multiply_adds(monkeypatch):
    # profile() of the Keras models at 224 (the end-to-end test checks it is what gets recorded).
    macs = {
        "repghostnet_050": 43_314_720, "repghostnet_100": 142_394_128, "ghostnet_100": 141_000_000,
        "mobilenetv3_large_075": 154_560_624, "mobilenetv3_large_100": 216_589_760,
        "mobilenetv3_small_075": 43_399_344, "mobilenetv3_small_100": 56_510_400,
    }
    monkeypatch.setattr(export, "multiply_adds", lambda name, image_size: macs[name])
    assert export.with_closest_mobilenetv3(
        ["repghostnet_050", "repghostnet_100", "ghostnet_100", "mobilenetv3_large_075"], 224
    ) == ["repghostnet_050", "repghostnet_100", "ghostnet_100", "mobilenetv3_large_075", "mobilenetv3_small_075"]


def test_only_reparameterized_models_have_an_unfused_form():
    assert export.has_reparam_branch(export.build("repghostnet_050"))
    assert not export.has_reparam_branch(export.build("repghostnet_norep_050"))


def test_every_registered_model_name_is_accepted():
    import repghost_tf

    export.check_names([*repghost_tf.MODELS, "mobilenetv3_large_125"])
    with pytest.raises(export.UnknownModelError):
        export.check_names(["mobilenetv3_medium_100"])


def test_op_profile_cuts_stages_like_the_onnx_node_names():
    from benchmark import op_profile

    model = export.build("repghostnet_050")
    stages = list(op_profile.stage_outputs(model))
    assert stages == ["stem", *[f"blocks.{i}" for i in range(10)], "head"]
    assert [op_profile.stage_of_onnx_node(name) for name in (
        "/Sub_kernel_time",
        "/model/conv_stem/Conv_kernel_time",
        "/model/blocks/blocks.3/blocks.3.0/se/Mul_kernel_time",
        "/model/blocks/blocks.9/blocks.9.0/conv/Conv_output_0_nchwc_kernel_time",
        "/model/classifier/Gemm_kernel_time",
    )] == ["stem", "stem", "blocks.3", "blocks.9", "head"]


def test_delegation_names_the_int8_ops_xnnpack_leaves_to_tflite():
    import keras

    from repghost_tf import litert
    from repghost_tf.export import tflite

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.Activation("hard_swish")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(x))
    images = [export.random_images(8, 4)]
    float_model = litert.make_interpreter(tflite.convert(model, image_size=8))
    int8_model = litert.make_interpreter(
        tflite.convert(model, "int8", image_size=8, representative_data=images)
    )
    assert litert.delegation(float_model) == (1, {})
    # XNNPACK takes float HARD_SWISH but not int8 HARD_SWISH, which splits the graph in two.
    assert litert.delegation(int8_model) == (2, {"HARD_SWISH": 1})
