"""Trains RepGhostNet / GhostNet / G-GhostNet on any TFDS image-classification dataset, or a
RepGhostNet / GhostNet detector on any TFDS detection dataset.

    python train.py --width=0.5                            # built-in dataset, short schedule
    python train.py --width=0.5 --dataset=imagenet2012     # the paper's ImageNet recipe
    python train.py --init_from=runs/repghostnet_050 --dataset=folder:photos   # fine-tune
    python train.py --qat                                  # int8-aware fine-tuning of the last run
    python train.py --task=detection --width=0.5           # a detector on the built-in shapes

Writes best.keras, last.keras, deploy.keras, checkpoints/ and logs/ to --output_dir, then records
that directory in --latest_file for export_tflite.py. Re-running the same command resumes.
"""

from __future__ import annotations

import os

# TensorFlow's C++ logs stay quiet unless the user sets a level (0 shows them all).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags, logging  # noqa: E402

from repghost_tf import cli, runs  # noqa: E402
from repghost_tf.models.registry import MODELS, UnknownModelError, resolve  # noqa: E402
from repghost_tf.training import (  # noqa: E402
    BUILTIN_DETECTION_RECIPE,
    BUILTIN_RECIPE,
    DETECTION_DATASET,
    DETECTION_RECIPE,
    DTYPES,
    FINETUNE_RECIPE,
    QAT_RECIPE,
    STRATEGIES,
    TASKS,
    ConfigError,
    TrainConfig,
    TrainingDiverged,
    backbone_source,
    check_source,
    pretrained_source,
    qat_source,
    recipe,
    train,
    validate,
)

# After repghost_tf, which imports TensorFlow with its native start-up logs filtered.
import tensorflow as tf  # noqa: E402

DEFAULTS = TrainConfig()


def _recipe_help(name: str, text: str) -> str:
    """`text` plus the other recipes' defaults, for the flags they set."""
    recipes = (("built-in dataset", BUILTIN_RECIPE), ("--init_from", FINETUNE_RECIPE),
               ("--qat", QAT_RECIPE),
               ("detection", DETECTION_RECIPE), ("built-in detection", BUILTIN_DETECTION_RECIPE))
    notes = [f"{label}: {table[name]}" for label, table in recipes if name in table]
    return f"{text} ({'; '.join(notes)})" if notes else text


flags.DEFINE_string("model", None, f"Model to train: one of {', '.join(MODELS)}.")
flags.DEFINE_float("width", None, "RepGhostNet width shorthand: 0.5 trains repghostnet_050, etc.")
flags.DEFINE_enum(
    "task", DEFAULTS.task, TASKS,
    "classification, or detection: an SSDLite-style detector on the model (needs keras-hub; "
    "writes runs/<model>_detection).",
)
flags.DEFINE_string(
    "dataset", None,
    "A TFDS name (imagenet2012, imagenette, tf_flowers, ...), folder:/path with a train/ "
    "sub-folder of class folders (val/ and test/ optional), or the built-in synthetic_shapes (no "
    "download; synthetic_shapes/transfer to try fine-tuning). Detection: "
    f"coco/2017, voc/2007, ... (default: the built-in {DETECTION_DATASET}); default "
    f"{DEFAULTS.dataset}.",
)
flags.DEFINE_string(
    "data_dir", None, "TFDS data directory (default: TFDS's, ~/tensorflow_datasets)."
)
flags.DEFINE_string(
    "manual_dir", None,
    "Where ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar are, for imagenet2012 "
    "(default: <data_dir>/downloads/manual).",
)
flags.DEFINE_string("output_dir", None, "Run directory (default: runs/<model name>).")
flags.DEFINE_string(
    "latest_file", DEFAULTS.latest_file,
    "File that receives the run directory at the end, for export_tflite.py; empty to skip.",
)
flags.DEFINE_integer(
    "image_size", DEFAULTS.image_size,
    _recipe_help("image_size", "Training and evaluation image side."),
)
flags.DEFINE_integer(
    "batch_size", DEFAULTS.batch_size,
    _recipe_help(
        "batch_size", "Batch per replica; the global batch is this times the number of replicas."
    ),
)
flags.DEFINE_integer(
    "epochs", DEFAULTS.epochs, _recipe_help("epochs", "Total epochs of the schedule.")
)
flags.DEFINE_integer(
    "min_steps", DEFAULTS.min_steps,
    _recipe_help("min_steps", "More epochs where the recipe's would make fewer optimizer steps "
                 "(a small dataset); not applied when --epochs is given."),
)
flags.DEFINE_integer(
    "steps_per_epoch", DEFAULTS.steps_per_epoch,
    "Optimizer steps per epoch; 0 = one pass over the training split.",
)
flags.DEFINE_float(
    "base_lr", DEFAULTS.base_lr,
    _recipe_help("base_lr", "Peak learning rate at global batch 1024, scaled linearly."),
)
flags.DEFINE_float(
    "warmup_epochs", DEFAULTS.warmup_epochs,
    _recipe_help("warmup_epochs", "Epochs of linear warm-up."),
)
flags.DEFINE_float("warmup_lr", DEFAULTS.warmup_lr, "Learning rate at the start of warm-up.")
flags.DEFINE_float(
    "min_lr", DEFAULTS.min_lr,
    _recipe_help("min_lr", "Learning rate at the end of the cosine decay."),
)
flags.DEFINE_float("momentum", DEFAULTS.momentum, "SGD momentum.")
flags.DEFINE_float(
    "weight_decay", DEFAULTS.weight_decay,
    _recipe_help(
        "weight_decay", "L2 weight decay of conv and dense kernels (not BatchNorm, not biases)."
    ),
)
flags.DEFINE_float(
    "label_smoothing", DEFAULTS.label_smoothing, _recipe_help("label_smoothing", "Label smoothing.")
)
flags.DEFINE_float(
    "dropout", DEFAULTS.dropout, _recipe_help("dropout", "Dropout before the classifier.")
)
flags.DEFINE_float(
    "ema_decay", DEFAULTS.ema_decay,
    _recipe_help(
        "ema_decay", "Decay of the weight EMA, warmed up as min(decay, (1 + step) / (10 + step))."
    ),
)
flags.DEFINE_bool(
    "randaugment", None,
    "RandAugment on/off; default on for RepGhostNet and GhostNet from width 1.3 (the paper).",
)
flags.DEFINE_float(
    "randaugment_magnitude", DEFAULTS.randaugment_magnitude, "RandAugment magnitude (0-10)."
)
flags.DEFINE_float("randaugment_std", DEFAULTS.randaugment_std, "RandAugment magnitude noise std.")
flags.DEFINE_float(
    "min_crop_scale", DEFAULTS.min_crop_scale,
    _recipe_help("min_crop_scale", "Smallest area fraction of random-resized-crop."),
)
flags.DEFINE_float(
    "color_jitter", DEFAULTS.color_jitter,
    _recipe_help("color_jitter", "Colour jitter strength (not applied with RandAugment)."),
)
flags.DEFINE_float(
    "random_erasing", DEFAULTS.random_erasing,
    _recipe_help("random_erasing", "Random erasing probability."),
)
flags.DEFINE_enum("dtype", DEFAULTS.dtype, DTYPES, "Compute dtype policy.")
flags.DEFINE_bool("xla", DEFAULTS.xla, "Compile the training step with XLA.")
flags.DEFINE_enum(
    "strategy", DEFAULTS.strategy, STRATEGIES,
    "tf.distribute strategy; auto: multi_worker under a TF_CONFIG cluster, tpu with --tpu, "
    "mirrored over several GPUs, else one_device.",
)
flags.DEFINE_string(
    "tpu", DEFAULTS.tpu, "TPU name or address for --strategy=tpu ('local' on a TPU VM)."
)
flags.DEFINE_integer(
    "logical_cpus", DEFAULTS.logical_cpus,
    "Split the CPU into this many logical devices (to try mirrored training without GPUs).",
)
flags.DEFINE_bool(
    "resume", None,
    "Default: resume when --output_dir has a checkpoint. --resume: require one. "
    "--noresume: delete existing checkpoints and start over.",
)
flags.DEFINE_integer("seed", DEFAULTS.seed, "Random seed.")
flags.DEFINE_bool(
    "deterministic", DEFAULTS.deterministic,
    "Repeatable training: TensorFlow's deterministic ops and a seeded, ordered input pipeline "
    "give the same weights on every run of the same command on the same machine (slower).",
)
flags.DEFINE_integer("shuffle_buffer", DEFAULTS.shuffle_buffer, "Shuffle buffer, in images.")
flags.DEFINE_integer(
    "verbose", DEFAULTS.verbose,
    "Keras verbosity: 0 silent, 1 progress bar, 2 one line per epoch.",
)

flags.DEFINE_bool(
    "qat", DEFAULTS.qat,
    "Quantization-aware training: fine-tune a trained float model (--init_from, default the run "
    "in --latest_file) in its int8 form, for export_tflite.py --quantize int8. Writes its own run "
    "directory (default: runs/<model>_qat).",
)
flags.DEFINE_string(
    "init_from", None,
    "Fine-tune this pretrained model to --dataset's classes (its architecture and image size "
    "unless given): a converted official checkpoint, a run directory or a .keras it wrote, or a "
    "keras-hub preset directory of RepGhostNetBackbone. With --qat: the float model to start "
    "from, a .keras file or a run directory. With --task=detection: the classifier of the same "
    "architecture whose backbone weights the detector starts from.",
)
flags.DEFINE_float(
    "head_epochs", DEFAULTS.head_epochs,
    _recipe_help("head_epochs", "With --init_from: epochs in which only the classifier head "
                 "trains, before the pretrained layers move."),
)
flags.DEFINE_bool(
    "freeze_backbone", DEFAULTS.freeze_backbone,
    "With --init_from: train the classifier head alone (the linear probe).",
)
flags.DEFINE_bool(
    "freeze_batchnorm", DEFAULTS.freeze_batchnorm,
    "With --init_from: keep the pretrained BatchNorm statistics and scales (inference mode).",
)
flags.DEFINE_bool(
    "distill", DEFAULTS.distill,
    "With --qat: learn the float model's predictions (KL divergence); --nodistill: the labels.",
)
flags.DEFINE_float(
    "temperature", DEFAULTS.temperature, "With --qat: the distillation temperature."
)
flags.DEFINE_float(
    "freeze_ranges_at", DEFAULTS.freeze_ranges_at,
    "With --qat: the fraction of the epochs after which activation ranges stop moving.",
)
flags.DEFINE_integer(
    "max_boxes", DEFAULTS.max_boxes,
    "With --task=detection: objects per image kept for training.",
)

FLAGS = flags.FLAGS


def config_from_flags() -> TrainConfig:
    """The TrainConfig the command line asks for: the flags given, over the dataset's recipe.

    Raises ConfigError if the flags disagree.
    """
    given = {
        field: FLAGS[field].value
        for field in TrainConfig.__dataclass_fields__
        if field != "model" and field in FLAGS and FLAGS[field].present
    }
    given.setdefault(
        "dataset", DETECTION_DATASET if FLAGS.task == "detection" else DEFAULTS.dataset
    )
    finetune = bool(FLAGS.init_from) and FLAGS.task == "classification" and not FLAGS.qat
    defaults = recipe(given["dataset"], qat=FLAGS.qat, task=FLAGS.task, finetune=finetune)
    if FLAGS.model is not None or FLAGS.width is not None:
        try:
            given["model"] = resolve(FLAGS.model, FLAGS.width).name
        except UnknownModelError as error:
            raise ConfigError(str(error)) from error
    if finetune:
        # The source decides the architecture and image size unless they are given.
        given["init_from"] = pretrained_source(FLAGS.init_from)
        given.setdefault("model", check_source(given["init_from"]))
        if "image_size" not in given:
            source = (runs.summary_of_model(given["init_from"])
                      if os.path.isfile(given["init_from"]) else None)
            given["image_size"] = source.image_size if source else resolve(
                given["model"]).input_size
    if FLAGS.task == "detection" and FLAGS.init_from:
        given["init_from"] = backbone_source(FLAGS.init_from)
    if FLAGS.qat:
        # The source run decides the architecture, dataset and image size unless they are given.
        given["init_from"] = qat_source(FLAGS.init_from, FLAGS.latest_file)
        given.setdefault("model", runs.keras_model_name(given["init_from"]) or "")
        source = runs.summary_of_model(given["init_from"])
        if source and not FLAGS["dataset"].present:
            given["dataset"] = source.dataset
            defaults = recipe(source.dataset, qat=True)
        if source and "image_size" not in given:
            given["image_size"] = source.image_size
    if "epochs" in given:
        defaults.pop("min_steps", None)  # a schedule given is the schedule run
    return TrainConfig(**{**defaults, **given})


def main() -> None:
    logging.set_verbosity(logging.WARNING)  # TFDS logs every file it opens at INFO.
    config = config_from_flags()
    validate(config)
    train(config)
    print(f"Next, for phones: {export_command(config)}")


def export_command(config: TrainConfig) -> str:
    """The export_tflite.py command that picks up this run."""
    if config.latest_file == DEFAULTS.latest_file:
        return "python export_tflite.py --quantize int8"
    model = os.path.join(config.resolved_output_dir(), runs.DEPLOY_MODEL)
    return f"python export_tflite.py --model={model} --quantize int8"


if __name__ == "__main__":
    cli.run(main, "train.py",
            (ConfigError, TrainingDiverged, runs.RunDirectoryBusy, tf.errors.OpError),
            interrupted="interrupted; run the same command again to resume after the last "
                        "finished epoch")
