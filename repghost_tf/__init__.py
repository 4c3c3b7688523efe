"""RepGhostNet, GhostNet and G-GhostNet for Keras 3, from training to int8 TFLite on phones.

Subpackages: `models` (layers, constructors, the registry), `data` (input pipelines and the
built-in dataset), `training` (the recipe under tf.distribute), `export` (TFLite conversion,
calibration and verification), and `qat` (the quantization-aware form of a model). docs/architecture.md maps them.
"""

from repghost_tf.native_logs import import_tensorflow

import_tensorflow()  # before anything else imports it, so its start-up banner can be filtered

from repghost_tf.fusion import FusableLayer, fuse, is_fused  # noqa: E402
from repghost_tf.models import *  # noqa: E402,F401,F403 (constructors, MODELS, profile, ...)
from repghost_tf.models import __all__ as _models_api  # noqa: E402
from repghost_tf.qat import finalize, quantize_model  # noqa: E402 (also registers QAT layers)
from repghost_tf.torch_weights import (  # noqa: E402
    CheckpointError,
    WeightMismatchError,
    load_torch_weights,
)

__all__ = [
    *_models_api,
    "FusableLayer",
    "fuse",
    "is_fused",
    "quantize_model",
    "finalize",
    "CheckpointError",
    "WeightMismatchError",
    "load_torch_weights",
]
__version__ = "0.1.0"
