"""The paper's ImageNet recipe under tf.distribute: `config` (settings and recipe defaults),
`distribute` (strategies), `trainer` (EMA training step, learning-rate schedule), `checkpoints`
(per-epoch state) and `loop` (the run itself)."""

from repghost_tf.training.config import (
    BUILTIN_RECIPE,
    DTYPES,
    STRATEGIES,
    ConfigError,
    TrainConfig,
    TrainingDiverged,
    recipe,
    validate,
)
from repghost_tf.training.loop import train

__all__ = [
    "BUILTIN_RECIPE",
    "DTYPES",
    "STRATEGIES",
    "ConfigError",
    "TrainConfig",
    "TrainingDiverged",
    "recipe",
    "validate",
    "train",
]
