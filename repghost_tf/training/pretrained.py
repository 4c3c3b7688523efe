"""Fine-tuning's starting point: loading the pretrained model `--init_from` names (a converted
official or timm checkpoint, a run or any classifier `.keras` it wrote, a keras-hub preset
directory of `RepGhostNetBackbone`; `config.pretrained_source` resolves the name), and the copy
of its weights, by layer name, into a classifier of the dataset's classes."""

from __future__ import annotations

import functools
import os

import keras

from repghost_tf import quantization, runs
from repghost_tf.fusion import is_fused
from repghost_tf.models.registry import resolve
from repghost_tf.training.config import ConfigError


def load_source(source: str) -> keras.Model:
    """The pretrained model (a classifier, or the backbone of a preset), checked to be in the
    training form and not quantization-aware. Raises ConfigError (one line)."""
    try:
        if os.path.isdir(source):
            import keras_hub

            model = keras_hub.models.Backbone.from_preset(source)
        else:
            model = keras.saving.load_model(source, compile=False, safe_mode=True)
    except ImportError as error:
        raise ConfigError(f"--init_from={source} is a keras-hub preset, which needs keras-hub "
                          f"({error})") from error
    except Exception as error:  # Keras raises many types for a bad file.
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ConfigError(f"cannot load --init_from={source}: {first}") from error
    if quantization.is_quantized(model):
        raise ConfigError(f"--init_from={source} is a QAT model; give the float model it started "
                          "from")
    if is_fused(model):
        raise ConfigError(f"--init_from={source} is in deploy form (no BatchNorm to train); give "
                          f"the training form ({runs.BEST_MODEL} of its run, or convert_torch "
                          "--nodeploy)")
    return model


@functools.lru_cache(maxsize=None)
def head_layers(model_name: str) -> frozenset[str]:
    """The layers of the classifier `model_name` after its features (RepGhostNet's and GhostNet's
    1x1 conv head and classifier, G-GhostNet's classifier): what a new class count starts fresh,
    and what trains alone in the first epochs of fine-tuning."""
    spec = resolve(model_name)
    features = {layer.name for layer in spec(include_top=False, input_shape=(64, 64, 3)).layers}
    classifier = spec(classes=2, input_shape=(64, 64, 3))
    return frozenset(layer.name for layer in classifier.layers
                     if layer.weights and layer.name not in features)


def copy_pretrained(model: keras.Model, source: keras.Model, origin: str) -> list[str]:
    """Copies `source`'s weights into `model` layer by layer; returns the head layers that start
    fresh (the source has none of that name and shape). Raises ConfigError naming the first
    feature layer or tensor that the source lacks or has in another shape."""
    head = head_layers(model.name)
    fresh = []
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            pretrained = source.get_layer(layer.name)
        except ValueError:
            pretrained = None
        shapes = [tuple(w.shape) for w in layer.weights]
        if pretrained is None or [tuple(w.shape) for w in pretrained.weights] != shapes:
            if layer.name in head:
                fresh.append(layer.name)
                continue
            if pretrained is None:
                raise ConfigError(f"--init_from={origin} has no layer {layer.name} of {model.name}")
            mismatch = next(
                (f"{w.path}: {tuple(p.shape)} in the source, {tuple(w.shape)} here"
                 for w, p in zip(layer.weights, pretrained.weights) if w.shape != p.shape),
                f"{layer.name}: {len(pretrained.weights)} tensors in the source, "
                f"{len(layer.weights)} here",
            )
            raise ConfigError(f"--init_from={origin} does not fit {model.name}: {mismatch}")
        layer.set_weights(pretrained.get_weights())
    return fresh
