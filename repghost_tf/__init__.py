"""RepGhostNet and GhostNet for Keras 3, from training to deploy-form TFLite."""

from repghost_tf.deploy import fuse, is_fused
from repghost_tf.g_ghost import (
    G_GHOST_MODELS,
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
)
from repghost_tf.layers import (
    ConvBN,
    FusableLayer,
    GhostBottleneck,
    GhostModule,
    GroupedConv2D,
    RepGhostBottleneck,
    RepGhostModule,
    SqueezeExcite,
    make_divisible,
)
from repghost_tf.models import (
    MODELS,
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
    create_model,
)
from repghost_tf.counting import Profile, profile
from repghost_tf.torch_weights import CheckpointError, WeightMismatchError, load_torch_weights

__version__ = "0.1.0"
