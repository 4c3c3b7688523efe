""".keras files saved by earlier code still load: classes are found by their registered names,
whatever module they live in now. The files in tests/data/saved_at_a2e54af/ were written by the
code of commit a2e54af (before int8 moved to `repghost_tf.quantization` and the detector's heads
to `repghost_tf.detection`), with the outputs that code computed."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

from helpers import user_environment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAVED = os.path.join(ROOT, "tests", "data", "saved_at_a2e54af")

# Loads a file in a process that imported nothing of the project but `repghost_tf`, and prints
# the largest relative difference from the outputs saved with it.
_LOAD = """
import sys
import keras
import numpy as np
import repghost_tf
path, inputs, outputs = sys.argv[1:]
expected = np.load(sys.argv[1].rsplit("/", 1)[0] + "/expected.npz")
model = keras.saving.load_model(path, safe_mode=True)
actual = np.asarray(model(expected[inputs], training=False))
want = expected[outputs]
print(float(np.linalg.norm(actual - want) / np.linalg.norm(want)))
"""


def _modules(path: str) -> set[str]:
    """The modules the file's config names for its layers."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    return {layer.get("module") for layer in config["config"]["layers"]}


def _relative_error_after_load(name: str, inputs: str, outputs: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", _LOAD, os.path.join(SAVED, name), inputs, outputs],
        env=user_environment(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT),
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return float(result.stdout.strip().splitlines()[-1])


def test_qat_model_saved_before_the_quantization_package_loads_and_computes_the_same():
    path = os.path.join(SAVED, "qat_tiny.keras")
    assert "repghost_tf.quantization" in _modules(path)  # the old module, now a package
    assert _relative_error_after_load("qat_tiny.keras", "images", "qat_logits") == 0.0


def test_detector_head_saved_from_repghost_tf_hub_loads_after_import_repghost_tf():
    pytest.importorskip("keras_hub")
    path = os.path.join(SAVED, "separable_head.keras")
    assert "repghost_tf.hub" in _modules(path)  # where SeparableHead lived
    assert _relative_error_after_load("separable_head.keras", "features", "head_outputs") < 1e-6
