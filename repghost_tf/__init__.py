"""RepGhostNet and GhostNet for Keras 3, from training to deploy-form TFLite."""

from repghost_tf.deploy import fuse, is_fused
from repghost_tf.layers import (
    ConvBN,
    FusableLayer,
    GhostBottleneck,
    GhostModule,
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

__version__ = "0.1.0"
