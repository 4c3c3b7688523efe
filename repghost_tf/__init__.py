"""RepGhostNet, GhostNet and G-GhostNet for Keras 3, from training to int8 TFLite on phones.

Subpackages: `models` (layers, constructors, the registry), `data` (input pipelines and the
built-in dataset), `training` (the recipe under tf.distribute), `export` (TFLite conversion and
verification), `quantization` (int8: QAT, activation ranges, the int8 conversion) and
`detection` (the detector, its data, decoding, metrics and export). docs/architecture.md maps
them.
"""

from repghost_tf.native_logs import import_tensorflow

import_tensorflow()  # before anything else imports it, so its start-up banner can be filtered

from repghost_tf.fusion import FusableLayer, fuse, is_fused  # noqa: E402
from repghost_tf.models import *  # noqa: E402,F401,F403 (constructors, MODELS, profile, ...)
from repghost_tf.models import __all__ as _models_api  # noqa: E402
from repghost_tf.quantization import finalize, quantize_model  # noqa: E402 (registers QAT layers)
from repghost_tf.torch_weights import (  # noqa: E402
    CheckpointError,
    WeightMismatchError,
    load_torch_weights,
)


def _register_keras_hub_classes() -> None:
    """Imports our keras-hub classes where keras-hub is installed, so that any .keras file of this
    project loads after `import repghost_tf`. grain, which keras-hub imports, logs a warning
    through absl when JAX (which this project does not use) is missing: shown only where
    TF_CPP_MIN_LOG_LEVEL=0 asks for every log line."""
    import logging

    from repghost_tf import native_logs

    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    if native_logs.min_log_level() >= 1:
        absl_logger.setLevel(logging.ERROR)
    try:
        import repghost_tf.detection.detector  # noqa: F401 (also imports repghost_tf.hub)
    except ImportError:  # keras-hub is optional
        pass
    finally:
        absl_logger.setLevel(level)


_register_keras_hub_classes()

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
