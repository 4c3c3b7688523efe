"""Builds the benchmarked Keras models and exports them to TFLite through repghost_tf.export.tflite, the
code export_tflite.py uses, so that the timed flatbuffers are the ones users ship.

Models: every name in repghost_tf.MODELS, plus MobileNetV3 Large/Small from keras.applications
as mobilenetv3_{large,small}_<alpha x 100>. Weights are random: latency does not depend on them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable, Sequence

import keras
import numpy as np

import repghost_tf
from repghost_tf import litert
from repghost_tf.atomic_files import write_bytes
from repghost_tf.export import tflite
from repghost_tf.fusion import walk_layers

from benchmark import catalog

CALIBRATION_IMAGES = 8
_QUANTIZE = {"float32": "none", "int8": "int8"}


class UnknownModelError(ValueError):
    """A model name that neither repghost_tf.MODELS nor the MobileNetV3 pattern knows."""


@dataclasses.dataclass(frozen=True)
class Exported:
    """One TFLite flatbuffer on disk and what it is."""

    model: str
    form: str
    precision: str
    path: str
    params: int
    macs: int

    @property
    def info(self) -> catalog.ModelInfo:
        return catalog.describe(self.model)

    @property
    def size_bytes(self) -> int:
        return os.path.getsize(self.path)

    @property
    def stem(self) -> str:
        return f"{self.model}-{self.form}-{self.precision}"


def known_models() -> list[str]:
    return [*repghost_tf.MODELS, *catalog.MOBILENETV3_CANDIDATES]


def check_names(names: Sequence[str]) -> None:
    """Raises UnknownModelError naming the first unknown model."""
    for name in names:
        if name not in repghost_tf.MODELS and not catalog.is_mobilenetv3(name):
            raise UnknownModelError(
                f"unknown model {name!r}; choose from {', '.join(known_models())} "
                "or mobilenetv3_{large,small}_<alpha x 100>"
            )


def build(name: str) -> keras.Model:
    """The training-form Keras model for `name`, random weights, taking [0, 255] pixels."""
    check_names([name])
    match = catalog.MOBILENETV3.match(name)
    if match is None:
        return repghost_tf.create_model(name)
    constructor = {
        "large": keras.applications.MobileNetV3Large,
        "small": keras.applications.MobileNetV3Small,
    }[match.group(1)]
    return constructor(
        weights=None, alpha=int(match.group(2)) / 100, minimalistic=False,
        include_preprocessing=True, input_shape=(None, None, 3),
    )


@functools.cache
def multiply_adds(name: str, image_size: int) -> int:
    return repghost_tf.profile(build(name), image_size).macs


def with_closest_mobilenetv3(names: Sequence[str], image_size: int) -> list[str]:
    """`names` plus, for each RepGhostNet among them, the published MobileNetV3 width closest to
    it in multiply-adds (each added once)."""
    result = list(names)
    candidates = {c: multiply_adds(c, image_size) for c in catalog.MOBILENETV3_CANDIDATES}
    for name in names:
        if catalog.describe(name).family != "RepGhostNet":
            continue
        macs = multiply_adds(name, image_size)
        closest = min(candidates, key=lambda c: abs(candidates[c] - macs))
        if closest not in result:
            result.append(closest)
    return result


def has_reparam_branch(model: keras.Model) -> bool:
    """True when the training form carries a re-parameterization branch, i.e. when the unfused
    flatbuffer differs from the fused one; the converter folds plain conv+BatchNorm by itself."""
    return any(getattr(layer, "reparam", "none") != "none" for layer in walk_layers(model))


def random_images(image_size: int, count: int, seed: int = 0) -> np.ndarray:
    """Raw RGB pixels in [0, 255]; enough to calibrate int8 for timing, not for accuracy."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (count, image_size, image_size, 3)).astype(np.float32)


def set_random_image(interpreter) -> None:
    """Sets a `random_images` image as `interpreter`'s input, in its input type and layout
    (NHWC, or NCHW as litert-torch's files take it)."""
    detail = interpreter.get_input_details()[0]
    channels_first = detail["shape"][1] == 3 and detail["shape"][3] != 3
    image = random_images(detail["shape"][2 if channels_first else 1], 1, seed=1)
    if channels_first:
        image = image.transpose(0, 3, 1, 2).copy()
    interpreter.set_tensor(detail["index"], litert.quantize_input(image, detail))


def export_model(
    name: str,
    forms: Sequence[str],
    precisions: Sequence[str],
    image_size: int,
    model_dir: str,
    log: Callable[[str], None] = print,
    reuse: bool = False,
) -> list[Exported]:
    """Writes <model_dir>/<name>-<form>-<precision>.tflite for each form and precision; the
    unfused form only where it differs from the fused one (see has_reparam_branch). With
    `reuse`, a file already there is kept instead of converted again."""
    trained = build(name)
    variants = {"fused": None, "unfused": trained} if has_reparam_branch(trained) else {"fused": trained}
    exported = []
    for form in forms:
        if form not in variants:
            continue
        model = variants[form] or repghost_tf.fuse(trained)
        counts = repghost_tf.profile(model, image_size)
        for precision in precisions:
            item = Exported(
                name, form, precision, os.path.join(model_dir, f"{name}-{form}-{precision}.tflite"),
                counts.params, counts.macs,
            )
            if reuse and os.path.isfile(item.path):
                log(f"reused {item.path}")
            else:
                calibration = (
                    [random_images(image_size, CALIBRATION_IMAGES)] if precision == "int8" else None
                )
                write_bytes(item.path, tflite.convert(
                    model, _QUANTIZE[precision], image_size=image_size,
                    representative_data=calibration,
                ))
                log(f"exported {item.stem}: {item.size_bytes / 1e6:.2f} MB, {counts.macs / 1e6:.1f} MMACs")
            exported.append(item)
    return exported
