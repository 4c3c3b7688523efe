"""A training run's settings: `TrainConfig`, the per-dataset recipe defaults, and validation."""

from __future__ import annotations

import dataclasses
import json
import math
import os

from repghost_tf import data, runs
from repghost_tf.atomic_files import TargetError, check_target
from repghost_tf.models.registry import MODELS, UnknownModelError, resolve
from repghost_tf.training.distribute import tf_config_workers

DTYPES = ("float32", "mixed_float16", "mixed_bfloat16")
TASKS = ("classification", "detection")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
# The learning rate is given per this many images and scaled linearly with the global batch.
LR_REFERENCE_BATCH = 1024
# The built-in dataset's short schedule, in place of the paper's 300 ImageNet epochs. The
# regularisation meant for ImageNet is off: in about 1,250 steps it only slows learning.
BUILTIN_RECIPE = dict(
    image_size=48, batch_size=64, epochs=8, warmup_epochs=1.0, base_lr=3.2, min_crop_scale=1.0,
    color_jitter=0.0, random_erasing=0.0, label_smoothing=0.0, dropout=0.0,
)
# Quantization-aware fine-tuning of a trained float model (`qat`): a short, low learning-rate
# schedule (3 epochs, and at least 100 steps on a small dataset: docs/finetuning.md) without
# warm-up, weight decay, label smoothing or weight EMA (the EMA would average the activation
# ranges' state too), distilled from the float model.
QAT_RECIPE = dict(
    epochs=3, min_steps=100, warmup_epochs=0.0, base_lr=0.005, min_lr=0.0, weight_decay=0.0,
    ema_decay=0.0, label_smoothing=0.0, randaugment=False,
)
# Fine-tuning a pretrained classifier (`init_from`) on a dataset of its own classes; the numbers
# behind these values are in docs/finetuning.md.
FINETUNE_RECIPE = dict(
    epochs=20, batch_size=32, warmup_epochs=0.0, head_epochs=2.0, base_lr=1.6, min_lr=0.0,
    weight_decay=1e-5, ema_decay=0.0, label_smoothing=0.1, dropout=0.2, randaugment=False,
    min_crop_scale=0.25, color_jitter=0.0, random_erasing=0.0,
)
# Detection (`task="detection"`), trained from scratch: SSDLite's input size and weight decay;
# the classification regularisers do not apply.
DETECTION_DATASET = f"{data.BUILTIN_DATASET}/detection"
DETECTION_RECIPE = dict(
    image_size=320, batch_size=32, epochs=50, warmup_epochs=1.0, base_lr=0.8, weight_decay=4e-5,
    ema_decay=0.9998, label_smoothing=0.0, dropout=0.0, randaugment=False,
)
# The built-in detection set's short schedule: 1,000 steps, under 10 minutes on 2 CPU cores; a
# peak learning rate of 0.2 learns in them what 0.05 does not (docs/detection.md).
BUILTIN_DETECTION_RECIPE = dict(
    DETECTION_RECIPE, image_size=128, epochs=4, warmup_epochs=0.3, base_lr=6.4, ema_decay=0.998,
)


@dataclasses.dataclass
class TrainConfig:
    """One training run; the defaults are the paper's recipe for RepGhostNet 1.0x."""

    model: str = "repghostnet_100"
    # classification, or detection: a `detection.detector.RepGhostNetDetector` on the model.
    task: str = "classification"
    dataset: str = data.BUILTIN_DATASET
    data_dir: str | None = None
    manual_dir: str | None = None
    output_dir: str | None = None
    latest_file: str = runs.default_latest_file()
    image_size: int = 224
    batch_size: int = 128
    epochs: int = 300
    # More epochs where `epochs` would make fewer steps than this (a small dataset).
    min_steps: int = 0
    steps_per_epoch: int = 0
    base_lr: float = 0.6
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-4
    min_lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 1e-5
    label_smoothing: float = 0.1
    dropout: float = 0.2
    ema_decay: float = 0.9999
    randaugment: bool | None = None
    randaugment_magnitude: float = 9.0
    randaugment_std: float = 0.5
    min_crop_scale: float = 0.08
    color_jitter: float = 0.4
    random_erasing: float = 0.2
    dtype: str = "float32"
    xla: bool = False
    strategy: str = "auto"
    tpu: str = ""
    logical_cpus: int = 0
    resume: bool | None = None
    seed: int = 0
    deterministic: bool = False
    shuffle_buffer: int = 10_000
    verbose: int = 1
    # Classification: fine-tune the pretrained model `init_from` (a .keras file or a keras-hub
    # preset directory) to the dataset's classes; with `qat`, quantization-aware training of the
    # float model `init_from` (a .keras file). Detection: start the backbone from it.
    qat: bool = False
    init_from: str | None = None
    # Fine-tuning: train the classifier head alone for the first `head_epochs`, or for the whole
    # run (`freeze_backbone`, the linear probe); keep the pretrained BatchNorm statistics and
    # scales fixed (`freeze_batchnorm`).
    head_epochs: float = 0.0
    freeze_backbone: bool = False
    freeze_batchnorm: bool = False
    distill: bool = True
    temperature: float = 3.0
    freeze_ranges_at: float = 0.67
    # Detection: objects per image kept for training (the rest of a crowded image is dropped).
    max_boxes: int = 100

    def resolved_output_dir(self) -> str:
        if self.output_dir:
            return self.output_dir
        return runs.default_run_dir(self.model + self._run_suffix())

    def _run_suffix(self) -> str:
        if self.qat:
            return "_qat"
        if self.task == "detection":
            return "_detection"
        return "_finetuned" if self.finetune else ""

    @property
    def finetune(self) -> bool:
        """Whether this run fine-tunes a pretrained classifier to the dataset's classes."""
        return bool(self.init_from) and self.task == "classification" and not self.qat


class ConfigError(ValueError):
    """A setting the run cannot use; the message (one line) says which and why."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN; the last good checkpoint is kept."""


# The share of the epochs a warm-up that does not fit is shortened to.
SHORT_WARMUP_SHARE = 1 / 8


def recipe(
    dataset: str, qat: bool = False, task: str = "classification", finetune: bool = False
) -> dict:
    """The settings in which `dataset`'s default recipe (or QAT or fine-tuning recipe) for `task`
    differs from TrainConfig's (the paper's ImageNet classification)."""
    builtin = dataset.split("/")[0] == data.BUILTIN_DATASET
    if task == "detection":
        return dict(BUILTIN_DETECTION_RECIPE if builtin else DETECTION_RECIPE)
    defaults = dict(BUILTIN_RECIPE) if builtin else {}
    if qat:
        return {**defaults, **QAT_RECIPE}
    return {**defaults, **FINETUNE_RECIPE} if finetune else defaults


def qat_source(init_from: str | None, latest_file: str) -> str:
    """The float .keras model a QAT run starts from: `init_from` (a file or a run directory),
    else the run `latest_file` names; when that is a QAT run, the float model it started from
    (so that re-running `train.py --qat` resumes). Raises ConfigError when there is none."""
    if init_from:
        path = runs.model_to_export(init_from) if os.path.isdir(init_from) else init_from
        if not path or not os.path.isfile(path):
            raise ConfigError(
                f"--init_from={init_from} is neither a .keras file nor a run directory")
        return path
    hint = "train a float model first (python train.py --width=0.5) or pass --init_from=PATH"
    try:
        path = runs.latest_model(os.path.dirname(latest_file) or ".", hint=hint)
        summary = runs.summary_of_model(path)
    except runs.RunError as error:
        raise ConfigError(f"--qat needs a float model to start from: {error}") from error
    return summary.init_from if summary and summary.init_from else path


def augmentation(config: TrainConfig) -> data.Augmentation:
    """The training augmentation of `config`; RandAugment by default where the paper used it."""
    randaugment = config.randaugment
    if randaugment is None:
        randaugment = resolve(config.model).randaugment
    return data.Augmentation(
        min_crop_scale=config.min_crop_scale,
        color_jitter=config.color_jitter,
        randaugment_magnitude=config.randaugment_magnitude if randaugment else 0.0,
        randaugment_std=config.randaugment_std,
        random_erasing=config.random_erasing,
    )


def fitted_warmup(config: TrainConfig) -> float:
    """--warmup_epochs, or an eighth of the run (the built-in recipe's share) when it does not fit
    in --epochs: `--epochs=1` on a recipe with a longer warm-up still trains."""
    if config.warmup_epochs < config.epochs:
        return config.warmup_epochs
    return config.epochs * SHORT_WARMUP_SHARE


def validate(config: TrainConfig) -> None:
    """Raises ConfigError (one line) for any invalid setting, before any work starts."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{field.name} must be a finite number, got {value}.")
    if config.task not in TASKS:
        raise ConfigError(f"--task must be one of {', '.join(TASKS)}, got {config.task!r}.")
    if config.qat:
        if config.task != "classification":
            raise ConfigError("--qat trains classifiers only; export a detector with "
                              "post-training int8 (export_tflite.py --quantize int8).")
        _validate_qat(config)
    try:
        resolve(config.model)
    except UnknownModelError as error:
        raise ConfigError(str(error)) from error
    if config.task == "detection":
        _validate_detection(config)
    if config.finetune:
        _validate_finetune(config)
    elif config.freeze_backbone or config.freeze_batchnorm or config.head_epochs:
        raise ConfigError("--freeze_backbone, --freeze_batchnorm and --head_epochs fine-tune a "
                          "pretrained classifier: give --init_from.")
    if config.dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {config.dtype!r}.")
    if config.strategy not in STRATEGIES:
        raise ConfigError(
            f"--strategy must be one of {', '.join(STRATEGIES)}, got {config.strategy!r}."
        )
    if config.strategy == "multi_worker" and not tf_config_workers():
        raise ConfigError("--strategy=multi_worker needs TF_CONFIG with a cluster (see README).")
    if config.strategy == "tpu" and config.dtype == "mixed_float16":
        raise ConfigError("TPUs train in --dtype=mixed_bfloat16 (or float32), not mixed_float16.")
    if config.logical_cpus and config.strategy in ("multi_worker", "tpu"):
        raise ConfigError("--logical_cpus only applies to --strategy=auto|one_device|mirrored.")
    if config.image_size < 32:
        raise ConfigError(f"--image_size must be at least 32, got {config.image_size}.")
    if not 0 <= config.ema_decay < 1:
        raise ConfigError(f"--ema_decay must be in [0, 1), got {config.ema_decay}.")
    if not 0 < config.min_crop_scale <= 1:
        raise ConfigError(f"--min_crop_scale must be in (0, 1], got {config.min_crop_scale}.")
    for name in ("warmup_epochs", "min_steps", "steps_per_epoch", "seed", "logical_cpus",
                 "weight_decay", "warmup_lr", "min_lr"):
        if getattr(config, name) < 0:
            raise ConfigError(f"--{name} must be 0 or more, got {getattr(config, name)}.")
    for name in ("batch_size", "epochs", "base_lr", "shuffle_buffer"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"--{name} must be positive, got {getattr(config, name)}.")
    for name in ("label_smoothing", "dropout"):
        if not 0 <= getattr(config, name) < 1:
            raise ConfigError(f"--{name} must be in [0, 1), got {getattr(config, name)}.")
    _validate_outputs(config)
    try:
        data.check_dataset(config.dataset, config.data_dir, config.manual_dir, config.task)
    except data.DatasetError as error:
        raise ConfigError(str(error)) from error


def _validate_outputs(config: TrainConfig) -> None:
    """The run directory and the latest-run file must not be occupied by the other kind of
    thing (a run never replaces what is not its own), and their folders must take new files; so
    must the folder above a --data_dir that does not exist yet (an existing one may be a
    read-only copy of a prepared dataset)."""
    outputs = [("output_dir", config.resolved_output_dir(), True),
               ("latest_file", config.latest_file, False)]
    if config.data_dir and not os.path.exists(config.data_dir):
        outputs.append(("data_dir", config.data_dir, True))
    for flag, path, folder in outputs:
        try:
            if path:
                check_target(path, folder)
        except TargetError as error:
            raise ConfigError(f"--{flag}: {error}.") from error


def backbone_source(init_from: str) -> str:
    """The classifier a detector's backbone starts from: `init_from`, a .keras file or a run
    directory (its best.keras: the training form, with BatchNorm to train)."""
    path = os.path.join(init_from, runs.BEST_MODEL) if os.path.isdir(init_from) else init_from
    if not os.path.isfile(path):
        raise ConfigError(f"--init_from={init_from} is neither a .keras file nor a run directory "
                          f"with {runs.BEST_MODEL}")
    return path


def _validate_detection(config: TrainConfig) -> None:
    try:
        from repghost_tf.hub import NO_PYRAMID_FAMILIES
    except ImportError as error:
        raise ConfigError(
            f"--task=detection needs keras-hub ({error}): pip install -e \".[hub]\" && "
            "pip install --no-deps keras-hub==0.32.0"
        ) from error
    if resolve(config.model).family in NO_PYRAMID_FAMILIES:
        raise ConfigError(f"{config.model} has no pyramid outputs to detect on; choose a "
                          "RepGhostNet or GhostNet.")
    if config.image_size % 32:
        raise ConfigError(
            f"--task=detection needs an --image_size divisible by 32 (the stride of P5), got "
            f"{config.image_size}."
        )
    if config.max_boxes < 1:
        raise ConfigError(f"--max_boxes must be positive, got {config.max_boxes}.")
    if config.init_from:
        source_model = runs.keras_model_name(config.init_from)
        if source_model != config.model:
            raise ConfigError(f"--init_from={config.init_from} holds "
                              f"{source_model or 'no .keras model'}, not {config.model}")


# What a keras-hub preset directory holds (keras_hub.src.utils.preset_utils).
_PRESET_CONFIG = "config.json"
_PRESET_METADATA = "metadata.json"


def pretrained_source(init_from: str) -> str:
    """The file or preset directory `--init_from` names: a .keras file, a keras-hub preset
    directory, or a run directory (its best.keras, the training form)."""
    if os.path.isfile(init_from):
        return init_from
    if os.path.isfile(os.path.join(init_from, _PRESET_METADATA)):
        return init_from
    best = os.path.join(init_from, runs.BEST_MODEL)
    if os.path.isfile(best):
        return best
    raise ConfigError(f"--init_from={init_from} is neither a .keras file, a run directory with "
                      f"{runs.BEST_MODEL} nor a keras-hub preset directory")


def pretrained_model_name(source: str) -> str | None:
    """The registry name of the architecture in `source`, read without loading it; None when
    it is not a model of the registry."""
    if os.path.isdir(source):
        try:
            with open(os.path.join(source, _PRESET_CONFIG), encoding="utf-8") as file:
                config = json.load(file)
        except (OSError, ValueError):
            return None
        if config.get("class_name") != "RepGhostNetBackbone":
            return None
        name = config.get("config", {}).get("model_name")
    else:
        name = runs.keras_model_name(source)
    return name if name in MODELS else None


def check_source(source: str) -> str:
    """The architecture of `source`; raises ConfigError (one line) when it is not a classifier or
    backbone of the registry that can be fine-tuned, without loading it."""
    if not os.path.isdir(source) and runs.keras_class_name(source) is None:
        raise ConfigError(f"--init_from={source} is not a .keras model")
    name = pretrained_model_name(source)
    if name is None:
        kind = runs.keras_class_name(source) if not os.path.isdir(source) else "preset"
        detail = "a detector: give the classifier it started from" if (
            kind and "Detector" in kind) else f"{kind}, not a model of the registry"
        raise ConfigError(f"--init_from={source} holds {detail}")
    return name


def _validate_finetune(config: TrainConfig) -> None:
    source_model = check_source(pretrained_source(config.init_from))
    if source_model != config.model:
        raise ConfigError(f"--init_from={config.init_from} holds {source_model}, not "
                          f"{config.model}; leave out --model/--width to take the source's")
    if not 0 <= config.head_epochs < config.epochs:
        raise ConfigError(f"--head_epochs must be in [0, --epochs={config.epochs}), got "
                          f"{config.head_epochs}.")


def _validate_qat(config: TrainConfig) -> None:
    if not config.init_from:
        raise ConfigError("--qat needs --init_from (train.py finds it from runs/LATEST)")
    source_model = runs.keras_model_name(config.init_from)
    if source_model is None:
        raise ConfigError(f"--init_from={config.init_from} is not a .keras model")
    if source_model != config.model:
        raise ConfigError(
            f"--init_from={config.init_from} holds {source_model}, not {config.model}"
        )
    if config.ema_decay:
        raise ConfigError("--qat trains without a weight EMA: set --ema_decay=0")
    if config.temperature <= 0:
        raise ConfigError(f"--temperature must be positive, got {config.temperature}.")
    if not 0 <= config.freeze_ranges_at <= 1:
        raise ConfigError(f"--freeze_ranges_at must be in [0, 1], got {config.freeze_ranges_at}.")
