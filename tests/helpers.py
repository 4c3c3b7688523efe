"""Shared test utilities: random BatchNorm statistics, relative error, torch reference models,
and the environment of a command line run as a user runs it."""

from __future__ import annotations

import os
import re

import keras
import numpy as np
import pytest

from repghost_tf.fusion import walk_layers
from repghost_tf.litert import make_interpreter, run_interpreter


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def randomize_batchnorms(model: keras.Model, seed: int = 0) -> None:
    """Gives every BatchNorm non-trivial affine parameters and running statistics."""
    rng = np.random.default_rng(seed)
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.5, 1.5, channels),
                rng.normal(0.0, 0.2, channels),
                rng.normal(0.0, 0.2, channels),
                rng.uniform(0.5, 2.0, channels),
            ])


def assert_fusion_is_exact(model: keras.Model, sizes) -> None:
    """`repghost_tf.fuse(model)` gives the same logits at every (height, width) in `sizes`, has no
    BatchNorm left, and leaves `model` itself in its training form."""
    import repghost_tf

    randomize_batchnorms(model, seed=1)
    deployed = repghost_tf.fuse(model)
    for height, width in sizes:
        images = random_images(2, height, width, seed=height)
        expected = model(images, training=False)
        assert np.linalg.norm(expected) > 1.0
        assert relative_error(deployed(images, training=False), expected) < 1e-5
    assert repghost_tf.is_fused(deployed)
    assert not repghost_tf.is_fused(model), "fuse() must leave the original untouched"
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in walk_layers(deployed)
    )


def random_images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Raw RGB pixels in [0, 255], the input the models take."""
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")


def randomized_timm_model(name: str, seed: int = 0):
    """A timm model in eval mode with random weights and non-trivial BatchNorm statistics."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def timm_logits(model, images: np.ndarray) -> np.ndarray:
    """Runs a timm model on raw [0, 255] NHWC pixels with ImageNet normalisation."""
    import torch

    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    normalized = ((images - mean) / std).astype("float32").transpose(0, 3, 1, 2)
    with torch.no_grad():
        return model(torch.from_numpy(normalized)).numpy()


def numpy_state_dict(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def write_torch_checkpoint(path, form: str, model, ema_model=None):
    """Saves a timm model in one of the checkpoint forms found in the wild; returns the torch
    model whose logits the file holds (the EMA model of a training checkpoint, as read by default).

    Forms: "training_checkpoint" (timm's training script under DistributedDataParallel: `module.`
    prefixes, a different `state_dict_ema`, `args` as an argparse.Namespace), "state_dict",
    "deploy_state_dict" (after timm's re-parameterization) and "safetensors".
    """
    import argparse
    import copy

    import torch

    if form == "training_checkpoint":
        torch.save(
            {
                "epoch": 299,
                "arch": model.default_cfg["architecture"],
                "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                "state_dict_ema": ema_model.state_dict(),
                "metric": 66.95,
                "version": 2,
                "args": argparse.Namespace(
                    model=model.default_cfg["architecture"], lr=0.6, epochs=300, model_ema=True,
                    input_size=(3, 224, 224), mean=None,
                ),
            },
            path,
        )
        return ema_model
    if form == "state_dict":
        torch.save(model.state_dict(), path)
        return model
    if form == "deploy_state_dict":
        deployed = copy.deepcopy(model)
        deployed.convert_to_deploy()
        torch.save(deployed.state_dict(), path)
        return deployed
    if form == "safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))
        return model
    raise ValueError(f"unknown checkpoint form {form!r}")


_NATIVE_LOG_LINE = re.compile(r"^([IWEF]\d{4} \d|WARNING: All log messages before absl::|INFO: )", re.M)


def user_environment(**extra: str) -> dict:
    """os.environ without the tests' TF_CPP_MIN_LOG_LEVEL: the command line's own default applies."""
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**environment, **extra}


def native_log_lines(stderr: str) -> list[str]:
    """The TensorFlow / LiteRT C++ log lines in a command's stderr."""
    return [match.group(0) for match in _NATIVE_LOG_LINE.finditer(stderr)]


def mediapipe_classifier(path: str):
    """MediaPipe Tasks' ImageClassifier on `path`: a function from one uint8 RGB image to
    {class index: (label, score)}."""
    pytest.importorskip("mediapipe")
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=path))
    classifier = vision.ImageClassifier.create_from_options(options)

    def classify(image: np.ndarray) -> dict[int, tuple[str, float]]:
        result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
        return {c.index: (c.category_name, c.score) for c in result.classifications[0].categories}

    return classify


def check_mediapipe_scores(path: str, classify, names: list[str], images: np.ndarray) -> None:
    """MediaPipe's scores equal our LiteRT outputs on every class, with the dataset's names."""
    pixels = np.clip(np.round(images), 0, 255).astype(np.uint8)
    ours = run_interpreter(make_interpreter(open(path, "rb").read()), pixels.astype(np.float32))
    for image, expected in zip(pixels, ours):
        found = classify(image)
        assert sorted(found) == list(range(len(names)))
        assert [found[i][0] for i in range(len(names))] == names
        np.testing.assert_allclose([found[i][1] for i in range(len(names))], expected, rtol=0,
                                   atol=1e-7)


def check_mediapipe_detections(path: str, names: list[str], images: np.ndarray,
                               score_threshold: float = 0.3) -> int:
    """MediaPipe Tasks' ObjectDetector on the detector file `path` finds, on each image, the
    detections above `score_threshold` that our LiteRT run of the file gives: the same classes
    by the dataset's names, the
    same scores, and the same boxes to a pixel where they lie inside the image (MediaPipe clips
    the others its own way). Returns how many boxes were compared."""
    pytest.importorskip("mediapipe")
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    from repghost_tf.detection.export import tflite_detections

    options = vision.ObjectDetectorOptions(base_options=BaseOptions(model_asset_path=path),
                                           score_threshold=score_threshold)
    pixels = np.clip(np.round(images), 0, 255).astype(np.uint8)
    ours = tflite_detections(open(path, "rb").read(), [pixels.astype(np.float32)])
    compared = 0
    with vision.ObjectDetector.create_from_options(options) as detector:
        for image, expected in zip(pixels, ours):
            found = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=image))
            kept = [i for i in range(len(expected["scores"]))
                    if expected["scores"][i] >= score_threshold]
            assert len(found.detections) == len(kept)
            for detection in found.detections:  # int8 scores tie: match each to one of ours
                (category,) = detection.categories
                box = detection.bounding_box
                pixels_box = np.array([box.origin_x, box.origin_y, box.width, box.height])
                matches = [i for i in kept
                           if names[int(expected["classes"][i])] == category.category_name
                           and abs(category.score - expected["scores"][i]) < 1e-6]
                assert matches, (category, expected)
                inside = []
                for i in matches:
                    ymin, xmin, ymax, xmax = expected["boxes"][i]
                    if min(ymin, xmin) >= 0 and max(ymax, xmax) <= image.shape[0]:
                        inside.append((i, np.array([xmin, ymin, xmax - xmin, ymax - ymin])))
                if inside:  # MediaPipe truncates origin and size to pixels; clips the others
                    i, box_ours = min(inside, key=lambda c: np.abs(c[1] - pixels_box).max())
                    assert np.abs(box_ours - pixels_box).max() < 1.01, (pixels_box, box_ours)
                    compared += 1
                kept.remove(matches[0] if not inside else i)
    return compared


def slow_after(values, keep: int = 1) -> list:
    """`values` as pytest parameters, all but the first `keep` marked slow: the default run
    checks a few cases, `-m slow` checks every one."""
    params = []
    for i, value in enumerate(values):
        if i < keep:
            params.append(value)
        elif hasattr(value, "marks"):  # already a pytest.param
            params.append(pytest.param(*value.values, marks=[*value.marks, pytest.mark.slow],
                                       id=value.id))
        else:
            params.append(pytest.param(*(value if isinstance(value, tuple) else (value,)),
                                       marks=pytest.mark.slow))
    return params
