"""Every named architecture and the facts the rest of the project needs about it.

Training, export, weight conversion and the benchmarks look a model up here by name (`--model`)
or by RepGhostNet width (`--width`) through `resolve`, and read its input size, normalisation
and recipe defaults from its `ModelSpec` instead of parsing names.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import keras

from repghost_tf.models.applications import IMAGENET_MEAN, IMAGENET_STD
from repghost_tf.models.g_ghost import G_GHOST_VARIANTS, GGhostRegNetX
from repghost_tf.models.ghostnet import (
    GHOSTNET_WIDTHS,
    REPGHOSTNET_WIDTHS,
    GhostNet,
    RepGhostNet,
    width_tag,
)

# The paper's recipe turns RandAugment on from this width up.
RANDAUGMENT_MIN_WIDTH = 1.3

# ImageNet top-1 (%) of the official weights: RepGhostNet (Chen et al., 2022) and GhostNet
# (Han et al., 2020).
_PUBLISHED_TOP1 = {
    "repghostnet_050": 66.9, "repghostnet_058": 68.9, "repghostnet_080": 72.2,
    "repghostnet_100": 74.2, "repghostnet_111": 75.1, "repghostnet_130": 76.4,
    "repghostnet_150": 77.5, "repghostnet_200": 78.8,
    "ghostnet_050": 66.2, "ghostnet_100": 73.9, "ghostnet_130": 75.7,
}


class UnknownModelError(ValueError):
    """A model name or width the registry does not know; the message (one line) says so."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One named architecture: how to build it and what it expects.

    Calling a spec builds the model: `MODELS["repghostnet_050"](classes=10)`.
    """

    name: str
    family: str
    constructor: Callable[..., keras.Model]
    arguments: dict = dataclasses.field(default_factory=dict)
    width: float | None = None
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    randaugment: bool = False
    imagenet_top1: float | None = None

    def __call__(self, **kwargs) -> keras.Model:
        return self.constructor(**{**self.arguments, "name": self.name, **kwargs})


def _ghost_family(family: str, constructor, widths, **arguments) -> dict[str, ModelSpec]:
    specs = {}
    for width in widths:
        name = f"{family}_{width_tag(width)}"
        specs[name] = ModelSpec(
            name, family, constructor, {"width": width, **arguments}, width=width,
            randaugment=width >= RANDAUGMENT_MIN_WIDTH, imagenet_top1=_PUBLISHED_TOP1.get(name),
        )
    return specs


MODELS: dict[str, ModelSpec] = {
    **_ghost_family("repghostnet", RepGhostNet, REPGHOSTNET_WIDTHS),
    # The paper's ablations of RepGhostNet 0.5x.
    **_ghost_family("repghostnet_repid", RepGhostNet, (0.5,), reparam="identity"),
    **_ghost_family("repghostnet_norep", RepGhostNet, (0.5,), reparam="none"),
    **_ghost_family("repghostnet_wo", RepGhostNet, (0.5,), shortcut=False),
    # A quantization-friendly variant (docs/qat.md).
    **_ghost_family("repghostnet_postbn", RepGhostNet, (0.5,), reparam="post_bn"),
    **_ghost_family("ghostnet", GhostNet, GHOSTNET_WIDTHS),
    **{
        f"g_ghost_regnetx_{variant}": ModelSpec(
            f"g_ghost_regnetx_{variant}", "g_ghost_regnetx", GGhostRegNetX, {"variant": variant}
        )
        for variant in G_GHOST_VARIANTS
    },
}


def resolve(model: str | None = None, width: float | None = None) -> ModelSpec:
    """The spec that `--model=NAME` or the RepGhostNet shorthand `--width=W` names.

    Raises UnknownModelError (one line) for an unknown name or width, or when both are given.
    """
    if model is not None and width is not None:
        raise UnknownModelError("give one of --model and --width, not both")
    if width is not None:
        for spec in MODELS.values():
            if spec.family == "repghostnet" and math.isclose(spec.width, width):
                return spec
        widths = ", ".join(str(w) for w in REPGHOSTNET_WIDTHS)
        raise UnknownModelError(f"--width must be one of {widths}, got {width}")
    if model not in MODELS:
        raise UnknownModelError(
            f"unknown model {model!r}; choose one of {', '.join(MODELS)}"
        )
    return MODELS[model]


def create_model(model_name: str, **kwargs) -> keras.Model:
    """Builds a model by its official name, e.g. "repghostnet_050", "ghostnet_100" or
    "g_ghost_regnetx_032"; keyword arguments go to its constructor."""
    return resolve(model_name)(**kwargs)
