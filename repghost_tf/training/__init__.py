"""The paper's ImageNet recipe under tf.distribute: `config` (settings and recipe defaults),
`distribute` (strategies), `trainer` (EMA training step, learning-rate schedule), `checkpoints`
(per-epoch state) and `loop` (the run itself)."""

from repghost_tf.training.config import (
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
    validate,
)
from repghost_tf.training.loop import train

__all__ = [
    "BUILTIN_DETECTION_RECIPE",
    "BUILTIN_RECIPE",
    "DETECTION_DATASET",
    "DETECTION_RECIPE",
    "DTYPES",
    "FINETUNE_RECIPE",
    "QAT_RECIPE",
    "STRATEGIES",
    "TASKS",
    "ConfigError",
    "TrainConfig",
    "TrainingDiverged",
    "backbone_source",
    "check_source",
    "pretrained_source",
    "qat_source",
    "recipe",
    "validate",
    "train",
]
