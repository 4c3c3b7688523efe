"""RepGhostNet, GhostNet and G-GhostNet for Keras 3, from training to int8 TFLite on phones.

Subpackages: `models` (layers, constructors, the registry), `data` (input pipelines and the
built-in dataset), `training` (the recipe under tf.distribute), `export` (TFLite conversion,
calibration and verification). docs/architecture.md maps them.
"""

from repghost_tf.native_logs import import_tensorflow

import_tensorflow()  # before anything else imports it, so its start-up banner can be filtered

from repghost_tf.fusion import FusableLayer, fuse, is_fused  # noqa: E402
from repghost_tf.models import (  # noqa: E402
    Profile,
    profile,
    GGhostRegNetX,
    GGhostRegNetX002,
    GGhostRegNetX004,
    GGhostRegNetX006,
    GGhostRegNetX008,
    GGhostRegNetX016,
    GGhostRegNetX032,
    GGhostRegNetX040,
    GGhostRegNetX064,
    GGhostRegNetX080,
    GGhostRegNetX120,
    GGhostRegNetX160,
    GGhostRegNetX320,
    GGhostStage,
    XBlock,
    GhostNet,
    GhostNet050,
    GhostNet100,
    GhostNet130,
    RepGhostNet,
    RepGhostNet050,
    RepGhostNet050NoReparam,
    RepGhostNet050NoShortcut,
    RepGhostNet050RepIdentity,
    RepGhostNet058,
    RepGhostNet080,
    RepGhostNet100,
    RepGhostNet111,
    RepGhostNet130,
    RepGhostNet150,
    RepGhostNet200,
    ConvBN,
    GhostBottleneck,
    GhostModule,
    GroupedConv2D,
    RepGhostBottleneck,
    RepGhostModule,
    SqueezeExcite,
    make_divisible,
    MODELS,
    ModelSpec,
    UnknownModelError,
    create_model,
    resolve,
)
from repghost_tf.torch_weights import (  # noqa: E402
    CheckpointError,
    WeightMismatchError,
    load_torch_weights,
)

__version__ = "0.1.0"
