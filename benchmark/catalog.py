"""What the benchmarks know about a model name: family, width, the timm model of the same
architecture (the ONNX Runtime peer) and the published ImageNet top-1.

The project's own models come from `repghost_tf.MODELS`; MobileNetV3, the comparison from
keras.applications, is named like timm's models: mobilenetv3_large_075 is
MobileNetV3Large(alpha=0.75).
"""

from __future__ import annotations

import dataclasses
import re

from repghost_tf.models.registry import MODELS

MOBILENETV3 = re.compile(r"^mobilenetv3_(large|small)_(\d{3})$")
# The MobileNetV3 widths with a published top-1, among which latency.py picks the ones closest
# in multiply-adds to each RepGhostNet width.
MOBILENETV3_CANDIDATES = (
    "mobilenetv3_large_075",
    "mobilenetv3_large_100",
    "mobilenetv3_small_075",
    "mobilenetv3_small_100",
)
# ImageNet top-1 (%) of MobileNetV3 (Howard et al., 2019).
_MOBILENETV3_TOP1 = {
    "mobilenetv3_large_100": 75.2,
    "mobilenetv3_large_075": 73.3,
    "mobilenetv3_small_100": 67.4,
    "mobilenetv3_small_075": 65.4,
}

_FAMILY_NAMES = {
    "repghostnet": "RepGhostNet",
    "ghostnet": "GhostNet",
    "g_ghost_regnetx": "G-GhostNet",
    "large": "MobileNetV3-Large",
    "small": "MobileNetV3-Small",
}


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    width: float | None


def describe(name: str) -> ModelInfo:
    """Family and width of a model name: "repghostnet_050" -> RepGhostNet, 0.5."""
    if name in MODELS:
        spec = MODELS[name]
        return ModelInfo(name, _FAMILY_NAMES.get(spec.family, spec.family), spec.width)
    match = MOBILENETV3.match(name)
    if match:
        return ModelInfo(name, _FAMILY_NAMES[match.group(1)], int(match.group(2)) / 100)
    return ModelInfo(name, name, None)


def published_top1(name: str) -> float | None:
    """ImageNet top-1 (%) of the model's official weights, where published."""
    if name in MODELS:
        return MODELS[name].imagenet_top1
    return _MOBILENETV3_TOP1.get(name)


def is_mobilenetv3(name: str) -> bool:
    return MOBILENETV3.match(name) is not None


def timm_name(name: str) -> str:
    """The timm model of the same architecture. Keras' MobileNetV3 is the TensorFlow original,
    which timm carries as tf_mobilenetv3_* (same-padding convs); the others share their names."""
    return f"tf_{name}" if is_mobilenetv3(name) else name
