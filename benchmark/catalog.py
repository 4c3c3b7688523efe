"""What the benchmarks know about a model name without building it: family, width, the timm
model of the same architecture (the ONNX Runtime peer) and the published ImageNet top-1.

Kept free of TensorFlow so that plotting and result handling start fast.
"""

from __future__ import annotations

import dataclasses
import re

# MobileNetV3 from keras.applications, named like timm's models: mobilenetv3_large_075 is
# MobileNetV3Large(alpha=0.75).
MOBILENETV3 = re.compile(r"^mobilenetv3_(large|small)_(\d{3})$")
# The MobileNetV3 widths with a published top-1, among which latency.py picks the ones closest
# in multiply-adds to each RepGhostNet width.
MOBILENETV3_CANDIDATES = (
    "mobilenetv3_large_075",
    "mobilenetv3_large_100",
    "mobilenetv3_small_075",
    "mobilenetv3_small_100",
)

# ImageNet top-1 (%) of the official weights, as published: RepGhostNet (Chen et al., 2022),
# GhostNet (Han et al., 2020), MobileNetV3 (Howard et al., 2019).
PUBLISHED_TOP1: dict[str, float] = {
    "repghostnet_050": 66.9,
    "repghostnet_058": 68.9,
    "repghostnet_080": 72.2,
    "repghostnet_100": 74.2,
    "repghostnet_111": 75.1,
    "repghostnet_130": 76.4,
    "repghostnet_150": 77.5,
    "repghostnet_200": 78.8,
    "ghostnet_050": 66.2,
    "ghostnet_100": 73.9,
    "ghostnet_130": 75.7,
    "mobilenetv3_large_100": 75.2,
    "mobilenetv3_large_075": 73.3,
    "mobilenetv3_small_100": 67.4,
    "mobilenetv3_small_075": 65.4,
}

_FAMILIES = {
    "repghostnet": "RepGhostNet",
    "ghostnet": "GhostNet",
    "g_ghost_regnetx": "G-GhostNet",
    "mobilenetv3_large": "MobileNetV3-Large",
    "mobilenetv3_small": "MobileNetV3-Small",
}
# Families whose trailing three digits are a width multiplier in hundredths.
_WIDTH_TAGGED = ("repghostnet", "ghostnet", "mobilenetv3_large", "mobilenetv3_small")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    width: float | None


def describe(name: str) -> ModelInfo:
    """Family and width of a model name: "repghostnet_050" -> RepGhostNet, 0.5."""
    prefix, _, tag = name.rpartition("_")
    if not (prefix and tag.isdigit()):
        return ModelInfo(name, name, None)
    family = _FAMILIES.get(prefix, prefix)
    width = int(tag) / 100 if prefix in _WIDTH_TAGGED else None
    return ModelInfo(name, family, width)


def is_mobilenetv3(name: str) -> bool:
    return MOBILENETV3.match(name) is not None


def timm_name(name: str) -> str:
    """The timm model of the same architecture. Keras' MobileNetV3 is the TensorFlow original,
    which timm carries as tf_mobilenetv3_* (same-padding convs); the others share their names."""
    return f"tf_{name}" if is_mobilenetv3(name) else name
