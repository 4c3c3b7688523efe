"""Converts an official or timm PyTorch checkpoint of RepGhostNet or GhostNet into a Keras model.

Usage:
  python -m repghost_tf.convert_torch CHECKPOINT --width=0.5 --output=repghostnet_050.keras
  python -m repghost_tf.convert_torch CHECKPOINT --model=ghostnet_100 --output=ghostnet_100.keras
  options: --no-ema (state_dict instead of state_dict_ema), --deploy / --no-deploy, --logits

CHECKPOINT is a `.pth`, `.pth.tar`, `.bin` or `.safetensors` file holding a training checkpoint
as timm's training script saves it, a bare state_dict, or the deploy form that the official
`convert.py` writes. The flags are defined only when this module runs as a program, so that
importing `convert_checkpoint` registers no absl flags in the importing program.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Mapping, NoReturn

import keras
from absl import app, flags

from repghost_tf.atomic_files import save_model
from repghost_tf.deploy import fuse, is_fused
from repghost_tf.models import MODELS, REPGHOSTNET_WIDTHS, create_model, width_tag
from repghost_tf.torch_weights import (
    CheckpointError,
    WeightMismatchError,
    deploy_form_tensor,
    load_torch_weights,
    read_checkpoint,
    select_state_dict,
)

FLAGS = flags.FLAGS


def convert_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, Any],
    model_name: str,
    *,
    ema: bool = True,
    deploy: bool | None = None,
    logits: bool = False,
) -> keras.Model:
    """Builds `model_name` (a key of `repghost_tf.MODELS`) with the checkpoint's weights.

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
        "accuracy is the EMA model's; --no-ema uses state_dict.",
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "deploy", None,
        "Write the fused, BatchNorm-free deploy form. Unset: the checkpoint's own form, so a "
        "deploy-form checkpoint always gives a deploy-form model (--no-deploy with one fails).",
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "logits", False, "Leave out the classifier's softmax, so that the model returns logits.",
        flag_values=flag_values,
    )
    flags.mark_flag_as_required("output", flag_values=flag_values)


def gnu_negations(argv: list[str]) -> list[str]:
    """Rewrites the GNU spelling --no-ema of a boolean flag into absl's --noema."""
    return [re.sub(r"^--no-(\w+)$", r"--no\1", arg) for arg in argv]


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
    model, width = flag_values.model, flag_values.width
    if (model is None) == (width is None):
        _fail("give the architecture with exactly one of --model and --width")
    if model is not None:
        return model
    if width not in REPGHOSTNET_WIDTHS:
        _fail(f"--width must be one of {', '.join(map(str, REPGHOSTNET_WIDTHS))}, got {width}")
    return f"repghostnet_{width_tag(width)}"


def _fail(message: str) -> NoReturn:
    """Exits with status 1 and the message on one line of stderr, without a traceback."""
    sys.exit(f"convert_torch: error: {' '.join(message.split())}")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=lambda argv: app.parse_flags_with_usage(gnu_negations(argv)))
