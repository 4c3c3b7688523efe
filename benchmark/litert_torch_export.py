"""timm's model of an architecture, fused, converted to TFLite by litert-torch: the path a user
would otherwise take from PyTorch to a phone, and the second peer of benchmark.latency.

litert-torch does not install beside this project's TensorFlow (it pins typing-extensions below
what TensorFlow's stack has), so this script runs in its own virtual environment and imports
neither TensorFlow nor repghost_tf:

    python -m venv .venv-litert-torch
    .venv-litert-torch/bin/pip install -r benchmark/requirements-litert-torch.txt
    .venv-litert-torch/bin/python benchmark/litert_torch_export.py --model=repghostnet_050 \\
        --output=repghostnet_050-litert-torch_float32.tflite

The file is what a plain conversion gives: float32 NCHW input (one TRANSPOSE), normalised
images in (no normalisation in its graph), logits out. --precision=int8 quantizes that file with
ai-edge-quantizer's static int8 recipe (int8 weights and activations, int8 input and output),
calibrated on random normalised images: a latency peer, not an accuracy one.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import torch  # noqa: F401 (before anything that may load TensorFlow's native libraries)
import timm
from absl import app, flags

_MODEL = flags.DEFINE_string("model", "repghostnet_050", "timm model name.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the .tflite file.", required=True)
_PRECISION = flags.DEFINE_enum("precision", "float32", ["float32", "int8"], "File precision.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Square input size.", lower_bound=32)
_CALIBRATION_IMAGES = 8


def fused_timm_model(name: str) -> torch.nn.Module:
    model = timm.create_model(name, pretrained=False).eval()
    return timm.utils.reparameterize_model(model).eval()


def main(argv: list[str]) -> None:
    del argv
    output = os.path.abspath(_OUTPUT.value)
    if not timm.is_model(_MODEL.value):
        sys.exit(f"error: timm has no model {_MODEL.value!r}")
    if not os.path.isdir(os.path.dirname(output)):
        sys.exit(f"error: the directory of --output does not exist: {_OUTPUT.value}")
    # Everything is written in a scratch folder beside the output, then renamed into place: a
    # failed conversion leaves nothing behind.
    with tempfile.TemporaryDirectory(dir=os.path.dirname(output)) as scratch:
        try:
            path = convert(_MODEL.value, _PRECISION.value, _IMAGE_SIZE.value, scratch)
        except Exception as error:  # litert-torch and its quantizer raise many types
            sys.exit(f"error: litert-torch could not convert {_MODEL.value}: "
                     f"{' '.join(str(error).split())[:300]}")
        os.replace(path, output)
    print(f"wrote {_OUTPUT.value}")


def convert(model_name: str, precision: str, size: int, scratch: str) -> str:
    """Converts timm's fused `model_name` into a file in `scratch`; returns its path."""
    import litert_torch

    sample = (torch.zeros(1, 3, size, size),)
    converted = litert_torch.convert(fused_timm_model(model_name), sample)
    float_path = os.path.join(scratch, "float32.tflite")
    converted.export(float_path)
    if precision == "float32":
        return float_path
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    signatures = Interpreter(model_path=float_path).get_signature_list()
    signature = next(iter(signatures))
    input_name = signatures[signature]["inputs"][0]
    rng = np.random.default_rng(0)
    images = [{input_name: rng.normal(size=(1, 3, size, size)).astype(np.float32)}
              for _ in range(_CALIBRATION_IMAGES)]
    tool = quantizer.Quantizer(float_path)
    tool.load_quantization_recipe(recipe.static_wi8_ai8())
    int8_path = os.path.join(scratch, "int8.tflite")
    tool.quantize(tool.calibrate({signature: images})).export_model(int8_path, overwrite=True)
    return int8_path


if __name__ == "__main__":
    app.run(main)
