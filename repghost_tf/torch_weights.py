"""Maps a PyTorch state_dict of the official (or timm's) models onto a Keras model by name.

Every Keras conv, dense and BatchNorm layer of this package is named after its PyTorch module
path, so the mapping is generic: layer `blocks.3.0.ghost1.primary_conv.0` takes the tensors
`blocks.3.0.ghost1.primary_conv.0.weight` (and `.bias`), a BatchNorm takes `.weight`, `.bias`,
`.running_mean` and `.running_var`. This module needs NumPy arrays only, not torch.
"""

from __future__ import annotations

from typing import Mapping

import keras
import numpy as np

from repghost_tf.layers import walk_layers

_IGNORED_SUFFIXES = (".num_batches_tracked",)


class WeightMismatchError(ValueError):
    """The state_dict does not fit the model; the message names the first offending tensor."""


def _torch_to_keras(layer: keras.layers.Layer, name: str, tensor: np.ndarray) -> np.ndarray:
    if name.endswith(".weight") and isinstance(layer, keras.layers.DepthwiseConv2D):
        return tensor.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    if name.endswith(".weight") and isinstance(layer, keras.layers.Conv2D):
        return tensor.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
    if name.endswith(".weight") and isinstance(layer, keras.layers.Dense):
        return tensor.T
    return tensor


def _torch_names(layer: keras.layers.Layer) -> list[str]:
    """The state_dict keys of `layer`, in the order of `layer.weights`."""
    prefix = layer.name
    if isinstance(layer, keras.layers.BatchNormalization):
        return [f"{prefix}.{n}" for n in ("weight", "bias", "running_mean", "running_var")]
    return [f"{prefix}.weight"] + ([f"{prefix}.bias"] if layer.use_bias else [])


def _leaf_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [
        layer
        for layer in walk_layers(model)
        if isinstance(
            layer,
            (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense,
             keras.layers.BatchNormalization),
        )
    ]


def load_state_dict(model: keras.Model, state_dict: Mapping[str, np.ndarray]) -> None:
    """Copies `state_dict` (name -> NumPy array, PyTorch layouts) into `model`.

    Every tensor must be used and every weight set; otherwise `WeightMismatchError` names the
    first missing, unexpected or mis-shaped tensor and `model` is left unchanged.
    """
    remaining = {k: v for k, v in state_dict.items() if not k.endswith(_IGNORED_SUFFIXES)}
    assignments = []
    for layer in _leaf_layers(model):
        for variable, name in zip(layer.weights, _torch_names(layer)):
            if name not in remaining:
                raise WeightMismatchError(f"missing tensor '{name}' for {model.name}")
            value = _torch_to_keras(layer, name, np.asarray(remaining.pop(name)))
            if tuple(value.shape) != tuple(variable.shape):
                raise WeightMismatchError(
                    f"tensor '{name}' has shape {tuple(state_dict[name].shape)}, which does not fit "
                    f"{model.name} (Keras shape {tuple(variable.shape)})"
                )
            assignments.append((variable, value))
    if remaining:
        raise WeightMismatchError(f"unexpected tensor '{next(iter(remaining))}' for {model.name}")
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
