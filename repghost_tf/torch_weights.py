"""Maps a PyTorch state_dict of the official (or timm's) models onto a Keras model by name, and
reads PyTorch and safetensors checkpoints safely.

Every Keras conv, dense and BatchNorm layer of this package is named after its PyTorch module
path, so the mapping is generic: layer `blocks.3.0.ghost1.primary_conv.0` takes the tensors
`blocks.3.0.ghost1.primary_conv.0.weight` (and `.bias`), a BatchNorm takes `.weight`, `.bias`,
`.running_mean` and `.running_var`. The mapping needs NumPy arrays only; torch is imported only
to read `.pth` files, and safetensors files need neither torch nor pickle.

Checkpoints are untrusted input: pickles are read with `torch.load(weights_only=True)`, which
refuses any global outside an explicit allow-list instead of running it.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import warnings
from typing import Any, Mapping

import keras
import numpy as np

from repghost_tf.folding import scale_shift
from repghost_tf.fusion import fuse, is_fused, walk_layers, with_deploy
from repghost_tf.models.layers import ConvBN
from repghost_tf.models.registry import create_model

_IGNORED_SUFFIXES = (".num_batches_tracked",)
_BATCHNORM_TENSORS = ("weight", "bias", "running_mean", "running_var")

INSTALL_HINT = "pip install 'repghost-tf[torch]'"

# The only non-container, non-tensor object that real training checkpoints pickle: timm's
# training script stores its parsed command line under "args".
SAFE_GLOBALS = (argparse.Namespace,)

# In the deploy form that the official convert.py (and timm's convert_to_deploy) writes, each
# RepGhost module's cheap operation is one depthwise conv with bias, stored under this suffix.
_FUSED_CHEAP_OPERATION = ".cheap_operation.weight"


class WeightMismatchError(ValueError):
    """The state_dict does not fit the model; the message names the first offending tensor."""


class CheckpointError(ValueError):
    """The file is not a checkpoint that can be read safely; the message says why in one line."""


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
        return [f"{prefix}.{n}" for n in _BATCHNORM_TENSORS]
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
            tensor = np.asarray(remaining.pop(name))
            # A tensor of the wrong rank does not even transpose to the Keras layout.
            value = (_torch_to_keras(layer, name, tensor)
                     if tensor.ndim == len(variable.shape) else tensor)
            if tuple(value.shape) != tuple(variable.shape):
                raise WeightMismatchError(
                    f"tensor '{name}' has shape {tuple(tensor.shape)}, which does not fit "
                    f"{model.name} (Keras shape {tuple(variable.shape)})"
                )
            assignments.append((variable, value))
    if remaining:
        raise WeightMismatchError(f"unexpected tensor '{next(iter(remaining))}' for {model.name}")
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))


def load_torch_weights(
    model: keras.Model, checkpoint: str | os.PathLike | Mapping[str, Any], ema: bool = True
) -> None:
    """Loads an official or timm PyTorch checkpoint into `model`, in place.

    `checkpoint` is a path (`.pth`, `.pth.tar`, `.bin` or `.safetensors`), a state_dict, or a
    training checkpoint dict as timm's training script saves it; with `ema`, its EMA weights are
    used when present. A training-form checkpoint loads into either form of `model` (the deploy
    form is folded exactly, in float64); a deploy-form checkpoint needs a deploy-form `model`.
    Raises `CheckpointError` for an unreadable or unsafe file and `WeightMismatchError`, naming the
    first offending tensor, when the weights do not fit; `model` is then left unchanged.
    """
    if isinstance(checkpoint, Mapping):
        state_dict, _ = select_state_dict(checkpoint, ema)
    else:
        state_dict, _ = read_checkpoint(checkpoint, ema)
    fused_tensor = deploy_form_tensor(state_dict)
    if not is_fused(model):
        if fused_tensor is not None:
            raise WeightMismatchError(
                f"tensor '{fused_tensor}' is a fused cheap operation: the checkpoint is in deploy "
                f"form, which loads only into a deploy-form model (deploy=True, or --deploy), "
                f"not into the training form of {model.name}"
            )
        load_state_dict(model, state_dict)
    elif fused_tensor is not None:
        twin = _with_unfolded_se_gates(model)
        load_state_dict(twin, _fold_batchnorms(twin, state_dict))
        model.set_weights(fuse(twin).get_weights())
    else:
        twin = with_deploy(model, deploy=False)
        load_state_dict(twin, state_dict)
        model.set_weights(fuse(twin).get_weights())


def convert_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, Any],
    model_name: str,
    *,
    ema: bool = True,
    deploy: bool | None = None,
    logits: bool = False,
) -> keras.Model:
    """Builds `model_name` (a name of `repghost_tf.MODELS`) with the checkpoint's weights.

    `deploy`: True returns the fused deploy form, False the training form (impossible for a
    deploy-form checkpoint), None the checkpoint's own form. `logits` drops the softmax.
    """
    if isinstance(checkpoint, Mapping):
        state_dict, _ = select_state_dict(checkpoint, ema)
    else:
        state_dict, _ = read_checkpoint(checkpoint, ema)
    deploy_form = deploy_form_tensor(state_dict) is not None
    model = create_model(
        model_name,
        deploy=deploy_form and deploy is not False,
        classifier_activation=None if logits else "softmax",
    )
    load_torch_weights(model, state_dict)
    return fuse(model) if deploy and not deploy_form else model


def deploy_form_tensor(state_dict: Mapping[str, Any]) -> str | None:
    """The first fused cheap-operation tensor of a deploy-form RepGhostNet state_dict, else None."""
    return next((k for k in state_dict if k.endswith(_FUSED_CHEAP_OPERATION)), None)


def _fold_batchnorms(model: keras.Model, state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Folds each BatchNorm that the official deploy form keeps into its conv, in float64, so the
    state_dict names exactly the tensors of this package's BatchNorm-free deploy form.

    The fused cheap operations pass through untouched: they already are single convs with bias.
    """
    folded = dict(state_dict)
    for layer in walk_layers(model):
        if not isinstance(layer, ConvBN):
            continue
        conv_key = f"{layer.conv_name}.weight"
        bn_keys = [f"{layer.bn_name}.{n}" for n in _BATCHNORM_TENSORS]
        for key in (conv_key, *bn_keys):
            if key not in folded:
                raise WeightMismatchError(f"missing tensor '{key}' for {model.name}")
        kernel = np.asarray(folded.pop(conv_key), np.float64)
        gamma, beta, mean, variance = (np.asarray(folded.pop(k), np.float64) for k in bn_keys)
        for key, tensor in zip(bn_keys, (gamma, beta, mean, variance)):
            if tensor.shape != kernel.shape[:1]:
                raise WeightMismatchError(
                    f"tensor '{key}' has shape {tensor.shape}, which does not fit '{conv_key}' "
                    f"of shape {kernel.shape}"
                )
        folded.pop(f"{layer.bn_name}.num_batches_tracked", None)
        scale, shift = scale_shift(gamma, beta, mean, variance)
        folded[conv_key] = kernel * scale.reshape(-1, 1, 1, 1)
        folded[f"{layer.conv_name}.bias"] = shift
    return folded


def read_checkpoint(path: str | os.PathLike, ema: bool = True) -> tuple[dict[str, np.ndarray], str]:
    """Reads a `.pth`/`.pth.tar`/`.bin` (pickle, weights only) or `.safetensors` file.

    Returns the state_dict as NumPy arrays and where in the file it came from ("state_dict_ema",
    "state_dict" or "bare state_dict"); see `select_state_dict`. The format is told by content,
    not by the file name. Raises `CheckpointError` for a missing, damaged or unsafe file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            head = file.read(9)
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror}") from None
    # Safetensors: an 8-byte header length, then the JSON header. Neither a zip archive (torch's
    # format) nor a pickle has "{" at offset 8.
    if path.endswith(".safetensors") or head[8:9] == b"{":
        contents = _read_safetensors(path)
    else:
        contents = _read_torch(path)
    return select_state_dict(contents, ema)


def select_state_dict(
    checkpoint: Mapping[str, Any], ema: bool = True
) -> tuple[dict[str, np.ndarray], str]:
    """Picks the state_dict out of a training checkpoint (`state_dict_ema` when `ema` and present,
    else `state_dict`) or takes `checkpoint` as a bare state_dict; drops the `module.` prefix of
    DistributedDataParallel and converts tensors to NumPy. Returns it and its origin.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"the checkpoint holds a {type(checkpoint).__name__}, "
            "not a state_dict or a dict with one"
        )
    if "state_dict" in checkpoint:
        origin = "state_dict_ema" if ema and "state_dict_ema" in checkpoint else "state_dict"
        state_dict = checkpoint[origin]
    else:
        origin, state_dict = "bare state_dict", checkpoint
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise CheckpointError(f"the checkpoint's {origin} is not a non-empty dict of tensors")
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not hasattr(value, "shape"):
            raise CheckpointError(
                f"the checkpoint's {origin} entry {key!r} holds a {type(value).__name__}, "
                "not a tensor"
            )
        arrays[key.removeprefix("module.")] = _to_numpy(value)
    return arrays, origin


def _to_numpy(tensor: Any) -> np.ndarray:
    if hasattr(tensor, "detach"):  # a torch.Tensor; NumPy has no bfloat16
        tensor = tensor.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(tensor)


def _read_torch(path: str) -> Any:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"reading the PyTorch checkpoint {path} needs PyTorch, an optional extra: "
            f"{INSTALL_HINT}"
        ) from None
    if not hasattr(torch.serialization, "safe_globals"):
        raise CheckpointError(
            f"reading {path} safely needs PyTorch 2.5 or newer, found {torch.__version__}: "
            f"{INSTALL_HINT} --upgrade"
        )
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            # A multi-line warning about the pickle protocol would break the one-line CLI errors.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    # torch.load reports damaged or foreign files with many exception types (UnpicklingError,
    # RuntimeError, EOFError, KeyError, ...): any of them means the file cannot be read.
    except Exception as error:  # noqa: BLE001
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if refused:
            allowed = ", ".join(f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS)
            raise CheckpointError(
                f"refusing to load {path}: it asks to unpickle '{refused.group(1)}', which could "
                f"run code; only tensors, plain containers and {allowed} are allowed"
            ) from None
        detail = re.search(r"WeightsUnpickler error: \s*(.+)", str(error))
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated, not a checkpoint, or a "
            "pickle that a weights-only load refuses): "
            f"{detail.group(1).strip() if detail else _first_line(error)}"
        ) from None


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise CheckpointError(
            f"reading the safetensors file {path} needs the safetensors package, an optional "
            f"extra: {INSTALL_HINT}"
        ) from None
    # The safetensors reader reports damaged files with several exception types.
    try:
        return load_file(path)
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated?): {_first_line(error)}"
        ) from None


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _with_unfolded_se_gates(model: keras.Model) -> keras.Model:
    """A new, untrained deploy model like `model` but with its squeeze-excite gates as the
    official deploy form keeps them (hard-sigmoid, `fold_se_gate=False`); `fuse` folds them."""
    config = copy.deepcopy(model.get_config())
    for layer_config in config["layers"]:
        if "fold_se_gate" in layer_config["config"]:
            layer_config["config"]["fold_se_gate"] = False
    return model.__class__.from_config(config)
