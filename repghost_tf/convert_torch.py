"""Converts an official or timm PyTorch checkpoint of RepGhostNet or GhostNet into a Keras model.

Usage:
  python -m repghost_tf.convert_torch CHECKPOINT --width=0.5 --output=repghostnet_050.keras
  python -m repghost_tf.convert_torch CHECKPOINT --model=ghostnet_100 --output=ghostnet_100.keras
  options: --noema (state_dict instead of state_dict_ema), --deploy / --nodeploy, --logits

CHECKPOINT is a `.pth`, `.pth.tar`, `.bin` or `.safetensors` file holding a training checkpoint
as timm's training script saves it, a bare state_dict, or the deploy form that the official
`convert.py` writes. The library function behind it is
`repghost_tf.torch_weights.convert_checkpoint`. The flags are defined only when this module runs
as a program, so that importing it registers no absl flags in the importing program.
"""

from __future__ import annotations

import os
from typing import NoReturn

from absl import app, flags

from repghost_tf import cli
from repghost_tf.atomic_files import TargetError, check_target, save_model
from repghost_tf.fusion import is_fused
from repghost_tf.models.ghostnet import REPGHOSTNET_WIDTHS
from repghost_tf.models.registry import MODELS, UnknownModelError, resolve
from repghost_tf.torch_weights import (
    CheckpointError,
    WeightMismatchError,
    convert_checkpoint,
    read_checkpoint,
)

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the command-line flags; called only when this module runs as a program (or by a
    test, with its own `flag_values`)."""
    flags.DEFINE_enum(
        "model", None, list(MODELS),
        "Architecture of the checkpoint, by its official / timm name, e.g. ghostnet_100.",
        flag_values=flag_values,
    )
    flags.DEFINE_float(
        "width", None,
        f"RepGhostNet width, shorthand for --model=repghostnet_<width>; one of "
        f"{', '.join(map(str, REPGHOSTNET_WIDTHS))}.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "output", None, "Where to write the model, a .keras file (replaced if it exists).",
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "ema", True,
        "Use the checkpoint's EMA weights (state_dict_ema) when present, as the published "
        "accuracy is the EMA model's; --noema uses state_dict.",
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "deploy", None,
        "Write the fused, BatchNorm-free deploy form. Unset: the checkpoint's own form, so a "
        "deploy-form checkpoint always gives a deploy-form model (--nodeploy with one fails).",
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "logits", False, "Leave out the classifier's softmax, so that the model returns logits.",
        flag_values=flag_values,
    )
    flags.mark_flag_as_required("output", flag_values=flag_values)


def main(argv: list[str], flag_values: flags.FlagValues = FLAGS) -> None:
    """Converts and writes the model; any bad input ends in one line on stderr, exit status 1."""
    if len(argv) != 2:
        _fail(f"expected one CHECKPOINT path, got {len(argv) - 1} arguments: {argv[1:]}")
    model_name = _model_name(flag_values)
    output = flag_values.output
    if not output.endswith(".keras"):
        _fail(f"--output must be a .keras file, got {output}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(output))):
        _fail(f"the directory of --output does not exist: {output}")
    try:
        check_target(output)
    except TargetError as error:
        _fail(f"--output: {error}")
    try:
        state_dict, origin = read_checkpoint(argv[1], ema=flag_values.ema)
        model = convert_checkpoint(
            state_dict, model_name, deploy=flag_values.deploy, logits=flag_values.logits
        )
        save_model(model, output)
    except (CheckpointError, WeightMismatchError, OSError) as error:
        _fail(str(error))
    form = "deploy" if is_fused(model) else "training"
    no_ema = flag_values.ema and origin == "state_dict"
    note = " (the checkpoint has no EMA weights)" if no_ema else ""
    print(f"Wrote {output}: {model.name}, {form} form, weights from {origin}{note}.")


def _model_name(flag_values: flags.FlagValues) -> str:
    if flag_values.model is None and flag_values.width is None:
        _fail("give the architecture with --model or --width")
    try:
        return resolve(flag_values.model, flag_values.width).name
    except UnknownModelError as error:
        _fail(str(error))


def _fail(message: str) -> NoReturn:
    cli.fail("convert_torch", message)


if __name__ == "__main__":
    define_flags()
    app.run(main)
