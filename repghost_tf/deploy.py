"""Whole-model re-parameterization: training-form model in, deploy-form model out."""

from __future__ import annotations

import copy

import keras

from repghost_tf.layers import FusableLayer


def is_fused(model: keras.Model) -> bool:
    """True when no layer of `model` is still in its training form."""
    return not any(
        isinstance(layer, FusableLayer) and not layer.deploy for layer in model.layers
    )


def fuse(model: keras.Model) -> keras.Model:
    """Returns the deploy form of `model`: same outputs, no BatchNorm, no re-parameterization
    branch. The deploy model is built from `model`'s config with `deploy=True` and receives the
    fused weights layer by layer; `model` itself is left untouched.
    """
    config = copy.deepcopy(model.get_config())
    for layer_config in config["layers"]:
        layer_class = keras.saving.get_registered_object(layer_config.get("registered_name"))
        if isinstance(layer_class, type) and issubclass(layer_class, FusableLayer):
            layer_config["config"]["deploy"] = True
    deployed = model.__class__.from_config(config)
    for layer in model.layers:
        target = deployed.get_layer(layer.name)
        if isinstance(layer, FusableLayer):
            target.set_weights(layer.fused_weights())
        else:
            target.set_weights(layer.get_weights())
    return deployed
