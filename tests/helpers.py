"""Shared test utilities: random BatchNorm statistics, relative error, torch reference models."""

from __future__ import annotations

import keras
import numpy as np

from repghost_tf.layers import walk_layers


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
