"""Params and multiply-adds equal the official counts (conv and FC layers only, BN excluded)."""

import keras
import pytest

import repghost_tf
from repghost_tf.fusion import walk_layers
from repghost_tf.models.layers import RepGhostModule

from helpers import slow_after

# (width, training-form params, official deploy-form params, multiply-adds at 224x224)
OFFICIAL_REPGHOSTNET = [
    (0.5, 2_296_904, 2_299_384, 43_314_720),
    (0.58, 2_526_532, 2_529_416, 59_804_016),
    (0.8, 3_251_776, 3_255_728, 95_518_948),
    (1.0, 4_039_580, 4_044_524, 142_394_128),
    (1.11, 4_502_328, 4_507_800, 170_124_224),
    (1.3, 5_434_356, 5_440_788, 231_123_652),
    (1.5, 6_524_248, 6_531_672, 301_315_856),
    (2.0, 9_728_076, 9_737_964, 515_869_856),
]
OFFICIAL_GHOSTNET = [
    (0.5, 2_576_308, 42_328_152),
    (1.0, 5_160_540, 141_150_512),
    (1.3, 7_330_284, 227_003_256),
]


def _folded_batchnorm_channels(model: keras.Model) -> int:
    """Channels of the BatchNorms that the official deploy form keeps but ours folds into conv
    biases: every BN except those of the RepGhost cheap operations and fusion branches."""
    absorbed = set()
    for layer in walk_layers(model):
        if isinstance(layer, RepGhostModule):
            absorbed.add(f"{layer.name}.cheap_operation.1")
            absorbed.add(f"{layer.name}.fusion_bn.0")
    return sum(
        layer.gamma.shape[0]
        for layer in walk_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.name not in absorbed
    )


@pytest.mark.parametrize("width,params,deploy_params,macs", slow_after(OFFICIAL_REPGHOSTNET, 2))
def test_repghostnet_counts_match_official(width, params, deploy_params, macs):
    model = repghost_tf.RepGhostNet(width=width)
    counted = repghost_tf.profile(model, image_size=224)
    assert counted.params == params
    assert counted.macs == macs

    deployed = repghost_tf.fuse(model)
    deployed_count = repghost_tf.profile(deployed, image_size=224)
    # The official deploy form fuses only the cheap operations; ours folds every other BN too,
    # each adding one bias per channel and no multiply-add.
    assert deployed_count.params == deploy_params + _folded_batchnorm_channels(model)
    assert deployed_count.macs == macs


@pytest.mark.parametrize("width,params,macs", OFFICIAL_GHOSTNET)
def test_ghostnet_counts_match_official(width, params, macs):
    counted = repghost_tf.profile(repghost_tf.GhostNet(width=width), image_size=224)
    assert (counted.params, counted.macs) == (params, macs)


def test_macs_scale_with_image_size():
    model = repghost_tf.RepGhostNet050()
    at_224 = repghost_tf.profile(model, 224).macs
    at_112 = repghost_tf.profile(model, 112).macs
    # Every conv scales with the area; only the 1x1-spatial head and SE layers do not.
    assert at_112 < at_224 / 3
