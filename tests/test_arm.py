"""Our TFLite files on aarch64 LiteRT (QEMU user mode, benchmark.arm) against x86 LiteRT: same int8
codes, float32 within 1e-5, and instruction counts that repeat. Marked `arm` (`python -m pytest
-m arm`); skipped, in one line, where `python -m benchmark.arm_setup` has not run (it needs root
and the network once; the test downloads nothing)."""

from __future__ import annotations

import numpy as np
import pytest

import repghost_tf
from benchmark import arm, arm_setup, export
from repghost_tf.atomic_files import write_bytes
from repghost_tf.export import tflite
from helpers import randomize_batchnorms

pytestmark = pytest.mark.arm

IMAGE_SIZE = 64
CPUS = ["cortex-a76", "cortex-a53"]  # dotprod int8 kernels, and none


@pytest.fixture(scope="module")
def ready() -> arm_setup.Setup:
    try:
        return arm_setup.setup(install=False)  # .ci/run sets it up, with the network
    except arm_setup.SetupError as error:
        pytest.skip(f"no QEMU ARM setup: {error}")


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> list[arm.Model]:
    """RepGhostNet 0.5x, fused, with random weights and BatchNorm statistics, returning logits
    (a softmax over random logits would make every int8 code the same), float32 and int8."""
    model = repghost_tf.create_model("repghostnet_050", classes=100, classifier_activation=None)
    randomize_batchnorms(model, seed=3)
    deployed = repghost_tf.fuse(model)
    folder = tmp_path_factory.mktemp("arm")
    files = []
    for precision, quantize in (("float32", "none"), ("int8", "int8")):
        path = str(folder / f"tiny-{precision}.tflite")
        calibration = [export.random_images(IMAGE_SIZE, 8)] if quantize == "int8" else None
        write_bytes(path, tflite.convert(deployed, quantize, image_size=IMAGE_SIZE,
                                         representative_data=calibration))
        files.append(arm.Model("tiny", precision, path))
    return files


def test_aarch64_litert_matches_x86(ready, tiny_files):
    results = arm.measure(ready, tiny_files, CPUS, inputs=8, repeats=3, log=lambda line: None)

    # The int8 codes compared spread over many values, so that their agreement means something.
    x86 = arm.reference(tiny_files[1].path, 8)
    assert len(np.unique(arm.codes(x86.outputs[0], x86.quantization[0]))) > 20
    assert [(r["precision"], r["cpu"]) for r in results] == [
        ("float32", "cortex-a76"), ("int8", "cortex-a76"),
        ("float32", "cortex-a53"), ("int8", "cortex-a53"),
    ]
    for result in results:
        agreement = result["agreement"]
        if result["precision"] == "float32":
            assert agreement["relative_error"] < 1e-5, result["cpu"]
        else:
            # Bit-identical int8 kernels: not one of the 800 codes differs.
            assert agreement["codes"] == 8 * 100
            assert agreement["codes_differ"] == 0, (result["cpu"], agreement)
        # Counted invokes repeat to better than 0.1% (what varies, by a few hundred instructions,
        # is the guest's Python around invoke()); the profile accounts for all of one.
        assert result["spread"] < 1e-3, result["instructions"]
        profiled = sum(entry["instructions"] for entry in result["by_kind"].values())
        assert profiled == result["instructions"][-1]
        assert result["by_kind"]["depthwise conv"]["operators"] > 0

