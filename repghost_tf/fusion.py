"""Re-parameterization of whole models: the training form in, the BatchNorm-free deploy form out.

Every layer that holds a conv+BatchNorm pair is a `FusableLayer` with a `deploy` flag. Each layer
computes its own deploy-form weights (`fused_weights`, with the arithmetic of `folding`); this
module flips the flag in a model's config and copies the weights across, in either direction.
"""

from __future__ import annotations

import copy
from typing import Iterator

import keras
import numpy as np


class FusableLayer(keras.layers.Layer):
    """A layer with a training form and a BatchNorm-free deploy form, chosen by `deploy`."""

    def __init__(self, deploy: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.deploy = deploy

    @property
    def fused(self) -> bool:
        """True when the layer is in its final deploy form, which `fuse` leaves as it is."""
        return self.deploy

    @classmethod
    def deploy_config(cls, config: dict) -> dict:
        """`config`, a config of this class, turned into its deploy form's."""
        return {**config, "deploy": True}

    def fused_weights(self) -> list[np.ndarray]:
        """The weights of this layer's deploy form, in the order of that form's `weights`."""
        raise NotImplementedError

    def get_config(self) -> dict:
        return {**super().get_config(), "deploy": self.deploy}


def walk_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Yields every layer nested in `layer` (a model or a layer), depth first, in build order."""
    children = layer.layers if isinstance(layer, keras.Model) else layer._layers
    for child in children:
        yield child
        yield from walk_layers(child)


def is_fused(model: keras.Model) -> bool:
    """True when no layer of `model`, nested models and layers included, is in training form."""
    return not any(
        isinstance(layer, FusableLayer) and not layer.fused for layer in walk_layers(model)
    )


def with_deploy(model: keras.Model, deploy: bool) -> keras.Model:
    """A new, untrained model built from `model`'s config with every `deploy` flag set to
    `deploy`: the other form of the same architecture. A functional model's layers are flipped
    in its config; a model that its constructor builds from a `deploy` argument (a keras-hub
    backbone or detector) is built again with it."""
    config = copy.deepcopy(model.get_config())
    if "layers" not in config:  # a model built by its constructor (keras-hub backbone, task)
        return model.__class__.from_config({**config, "deploy": deploy})
    for layer_config in config["layers"]:
        layer_class = keras.saving.get_registered_object(layer_config.get("registered_name"))
        if isinstance(layer_class, type) and issubclass(layer_class, FusableLayer):
            if deploy:
                layer_config["config"] = layer_class.deploy_config(layer_config["config"])
            else:
                layer_config["config"]["deploy"] = False
    return model.__class__.from_config(config)


def fuse(model: keras.Model) -> keras.Model:
    """Returns the deploy form of `model`: same outputs, no BatchNorm, no re-parameterization
    branch; `model` itself is left untouched (an already fused model is returned as it is).

    Raises ValueError when `model` nests fusable layers inside an inner model, which its config
    flip cannot reach.
    """
    if is_fused(model):
        return model
    deployed = with_deploy(model, deploy=True)
    if not is_fused(deployed):
        raise ValueError(
            f"{model.name!r} nests fusable layers inside an inner model, which its config does "
            "not reach; fuse the inner model instead"
        )
    _copy_fused_weights(model, deployed)
    return deployed


def _copy_fused_weights(source: keras.Model, target: keras.Model) -> None:
    """Gives each layer of `target` (the deploy form) the fused weights of its namesake in
    `source`, into inner models too (a detector's backbone)."""
    for layer in source.layers:
        twin = target.get_layer(layer.name)
        if isinstance(layer, FusableLayer):
            twin.set_weights(layer.fused_weights())
        elif isinstance(layer, keras.Model):
            _copy_fused_weights(layer, twin)
        else:
            twin.set_weights(layer.get_weights())
