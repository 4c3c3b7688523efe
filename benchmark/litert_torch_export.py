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
    import litert_torch

    if not timm.is_model(_MODEL.value):
        sys.exit(f"error: timm has no model {_MODEL.value!r}")
    size = _IMAGE_SIZE.value
    sample = (torch.zeros(1, 3, size, size),)
    converted = litert_torch.convert(fused_timm_model(_MODEL.value), sample)
    temporary = f"{_OUTPUT.value}.partial"
    if _PRECISION.value == "float32":
        converted.export(temporary)
    else:
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_quantizer import quantizer, recipe

        float_path = f"{temporary}.float32"
        converted.export(float_path)
        signatures = Interpreter(model_path=float_path).get_signature_list()
        signature = next(iter(signatures))
        input_name = signatures[signature]["inputs"][0]
        rng = np.random.default_rng(0)
        images = [{input_name: rng.normal(size=(1, 3, size, size)).astype(np.float32)}
                  for _ in range(_CALIBRATION_IMAGES)]
        tool = quantizer.Quantizer(float_path)
        tool.load_quantization_recipe(recipe.static_wi8_ai8())
        tool.quantize(tool.calibrate({signature: images})).export_model(temporary, overwrite=True)
        os.remove(float_path)
    os.replace(temporary, _OUTPUT.value)
    print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
