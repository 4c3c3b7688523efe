"""G-GhostNet: GPU-efficient Ghost stages on RegNetX (Han et al., IJCV 2022, arXiv 2201.03297).

The GPU-efficient half of the Ghost family applies the cheap-operation idea to a whole stage of
RegNetX X-blocks: a stage keeps only a narrow stack of X-blocks over part of its channels and
generates the other ("ghost") channels from the stage's first block by a 1x1 conv, steered by a
global "mix" of every intermediate feature map.

Layers follow the conventions of `repghost_tf.models.layers`: every conv+BatchNorm holder is a
`FusableLayer` with a training form and a BatchNorm-free deploy form, and every Keras conv, dense
and BatchNorm layer is named after the module path of the official PyTorch code
(`layer3.base.conv2`, `layer3.layers.0.bn3`, `layer3.merge.1`, `layer3.cheap.0`, ...), so
`repghost_tf.torch_weights.load_state_dict` maps official checkpoints by name.
"""

from __future__ import annotations

from typing import Callable

import keras
import numpy as np
from keras import layers, ops

from repghost_tf.fusion import FusableLayer
from repghost_tf.models.applications import (
    check_arguments,
    image_input,
    load_weights_file,
    pool_features,
)
from repghost_tf.models.layers import ConvBN, channels_shape

_register = keras.saving.register_keras_serializable(package="repghost_tf")

STEM_CHANNELS = 32
CHEAP_RATIO = 0.5
NARROW_GROUP_WIDTH_RATIO = 0.75

# The official variants: (depths of the four stages, their widths, group width).
G_GHOST_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], int]] = {
    "002": ((1, 1, 4, 7), (24, 56, 152, 368), 8),
    "004": ((1, 2, 7, 12), (32, 64, 160, 384), 16),
    "006": ((1, 3, 5, 7), (48, 96, 240, 528), 24),
    "008": ((1, 3, 7, 5), (64, 128, 288, 672), 16),
    "016": ((2, 4, 10, 2), (72, 168, 408, 912), 24),
    "032": ((2, 6, 15, 2), (96, 192, 432, 1008), 48),
    "040": ((2, 5, 14, 2), (80, 240, 560, 1360), 40),
    "064": ((2, 4, 10, 1), (168, 392, 784, 1624), 56),
    "080": ((2, 5, 15, 1), (80, 240, 720, 1920), 120),
    "120": ((2, 5, 11, 1), (224, 448, 896, 2240), 112),
    "160": ((2, 6, 13, 1), (256, 512, 896, 2048), 128),
    "320": ((2, 7, 13, 1), (336, 672, 1344, 2520), 168),
}


def is_ghost_stage(stage_index: int, depth: int) -> bool:
    """Stage 3 (index 2) is always a G-Ghost stage; stages 2 and 4 are when deeper than 2."""
    return stage_index == 2 or (stage_index in (1, 3) and depth > 2)


def ghost_stage_split(filters: int, group_width: int) -> tuple[int, int, int]:
    """(narrow group width, raw channels, cheap channels) of a G-Ghost stage, as officially."""
    narrow_group_width = int(group_width * NARROW_GROUP_WIDTH_RATIO)
    if narrow_group_width < 1:
        raise ValueError(f"group_width {group_width} is too small for a G-Ghost stage.")
    raw = int(filters * (1 - CHEAP_RATIO) / narrow_group_width) * narrow_group_width
    return narrow_group_width, raw, filters - raw


@_register
class XBlock(FusableLayer):
    """RegNetX bottleneck (expansion 1): 1x1 conv-BN-ReLU, 3x3 grouped conv-BN-ReLU (stride s,
    groups = filters // min(filters, group_width)), 1x1 conv-BN, plus the shortcut, then ReLU.

    The shortcut is the identity, or a strided 1x1 conv-BN (`downsample`) when the stride or the
    width changes, as in the official `_make_layer` and `Stage`. Deploy form: the same convs with
    biases, no BatchNorm.
    """

    def __init__(self, filters: int, strides: int = 1, group_width: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.group_width = group_width
        self.groups = filters // min(filters, group_width)

    def build(self, input_shape):
        name = self.name
        features = channels_shape(self.filters)
        self.conv1 = ConvBN(self.filters, 1, conv_name=f"{name}.conv1", bn_name=f"{name}.bn1",
                            deploy=self.deploy, name=f"{name}.unit1")
        self.conv1.build(input_shape)
        self.conv2 = ConvBN(self.filters, 3, self.strides, groups=self.groups,
                                   conv_name=f"{name}.conv2", bn_name=f"{name}.bn2",
                                   deploy=self.deploy, name=f"{name}.unit2")
        self.conv2.build(features)
        self.conv3 = ConvBN(self.filters, 1, conv_name=f"{name}.conv3", bn_name=f"{name}.bn3",
                            deploy=self.deploy, name=f"{name}.unit3")
        self.conv3.build(features)
        self.projection = self.strides != 1 or input_shape[-1] != self.filters
        self.downsample = None
        if self.projection:
            self.downsample = ConvBN(self.filters, 1, self.strides, deploy=self.deploy,
                                     name=f"{name}.downsample")
            self.downsample.build(input_shape)

    def call(self, inputs, training=None):
        x = ops.relu(self.conv1(inputs, training=training))
        x = ops.relu(self.conv2(x, training=training))
        x = self.conv3(x, training=training)
        shortcut = self.downsample(inputs, training=training) if self.projection else inputs
        return ops.relu(x + shortcut)

    def fused_weights(self) -> list[np.ndarray]:
        weights = (self.conv1.fused_weights() + self.conv2.fused_weights()
                   + self.conv3.fused_weights())
        if self.projection:
            weights += self.downsample.fused_weights()
        return weights

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "group_width": self.group_width,
        }


@_register
class GGhostStage(FusableLayer):
    """A G-Ghost stage of `depth` X-blocks (in width C_in, out width C = `filters`).

    base (X-block C_in -> C, stride s) gives x0; its first `raw` channels go through depth-2
    narrow X-blocks (`layers.i`, group width int(0.75 g)); the mix (`merge`) global-average-pools
    x0 and every narrow output, then 1x1 conv-BN-ReLU-1x1 conv-BN to `cheap` = C - raw channels;
    the cheap path is a 1x1 conv-BN of x0's last `cheap` channels plus the mix (broadcast over
    space), then ReLU; the narrow output and the cheap path, concatenated, go through `end`
    (X-block C -> C). Deploy form: every conv with bias, no BatchNorm.
    """

    def __init__(self, filters: int, group_width: int, depth: int, strides: int = 2, **kwargs):
        super().__init__(**kwargs)
        if depth < 3:
            raise ValueError(f"A G-Ghost stage needs depth >= 3, got {depth}.")
        self.filters = filters
        self.group_width = group_width
        self.depth = depth
        self.strides = strides
        self.narrow_group_width, self.raw_channels, self.cheap_channels = ghost_stage_split(
            filters, group_width
        )
        if self.raw_channels < 1:
            raise ValueError(
                f"filters {filters} leave no narrow channels at group width {group_width}."
            )

    def _narrow_blocks(self) -> list[XBlock]:
        return [getattr(self, f"narrow{i}") for i in range(self.depth - 2)]

    def build(self, input_shape):
        name, deploy = self.name, self.deploy
        self.base = XBlock(self.filters, self.strides, self.group_width, deploy=deploy,
                           name=f"{name}.base")
        self.base.build(input_shape)
        raw = channels_shape(self.raw_channels)
        for i in range(self.depth - 2):
            block = XBlock(self.raw_channels, 1, self.narrow_group_width, deploy=deploy,
                           name=f"{name}.layers.{i}")
            block.build(raw)
            setattr(self, f"narrow{i}", block)
        cheap = channels_shape(self.cheap_channels)
        mixed = self.filters + self.raw_channels * (self.depth - 2)
        self.merge_reduce = ConvBN(self.cheap_channels, 1, conv_name=f"{name}.merge.1",
                                   bn_name=f"{name}.merge.2", deploy=deploy,
                                   name=f"{name}.merge_reduce")
        self.merge_reduce.build(channels_shape(mixed))
        self.merge_expand = ConvBN(self.cheap_channels, 1, conv_name=f"{name}.merge.4",
                                   bn_name=f"{name}.merge.5", deploy=deploy,
                                   name=f"{name}.merge_expand")
        self.merge_expand.build(cheap)
        self.cheap = ConvBN(self.cheap_channels, 1, deploy=deploy, name=f"{name}.cheap")
        self.cheap.build(cheap)
        self.end = XBlock(self.filters, 1, self.group_width, deploy=deploy, name=f"{name}.end")
        self.end.build(channels_shape(self.filters))

    def call(self, inputs, training=None):
        x0 = self.base(inputs, training=training)
        narrow = x0[..., : self.raw_channels]
        # Global average pool of the concatenation == concatenation of the pooled maps.
        pooled = [ops.mean(x0, axis=(1, 2), keepdims=True)]
        for block in self._narrow_blocks():
            narrow = block(narrow, training=training)
            pooled.append(ops.mean(narrow, axis=(1, 2), keepdims=True))
        mix = ops.relu(self.merge_reduce(ops.concatenate(pooled, axis=-1), training=training))
        mix = self.merge_expand(mix, training=training)
        cheap = ops.relu(self.cheap(x0[..., self.raw_channels:], training=training) + mix)
        return self.end(ops.concatenate([narrow, cheap], axis=-1), training=training)

    def fused_weights(self) -> list[np.ndarray]:
        weights = self.base.fused_weights()
        for block in self._narrow_blocks():
            weights += block.fused_weights()
        for layer in (self.merge_reduce, self.merge_expand, self.cheap, self.end):
            weights += layer.fused_weights()
        return weights

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "group_width": self.group_width,
            "depth": self.depth,
            "strides": self.strides,
        }


def GGhostRegNetX(
    variant: str = "032",
    include_top: bool = True,
    weights: str | None = None,
    input_shape: tuple | None = None,
    input_tensor=None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | Callable | None = "softmax",
    dropout_rate: float = 0.2,
    include_preprocessing: bool = True,
    deploy: bool = False,
    pyramid_outputs: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Instantiates G-GhostNet on RegNetX (Han et al., IJCV 2022, arXiv 2201.03297).

    Args:
        variant: "002", "004", "006", "008", "016", "032", "040", "064", "080", "120", "160"
            or "320" (the RegNetX flop regime, e.g. "032" for 3.2 GF).
        include_top: whether to include the pooled dropout + dense classifier.
        weights: None (random initialisation) or a path to a `.weights.h5` or `.keras` file.
        input_shape: (height, width, 3); defaults to (None, None, 3), any size from 32x32 up.
        input_tensor: optional Keras tensor to use as the image input.
        pooling: without the top, None (4D features), "avg" or "max".
        classes: number of classes of the classifier.
        classifier_activation: activation of the classifier; None returns logits.
        dropout_rate: dropout before the classifier.
        include_preprocessing: the model takes raw RGB in [0, 255] and normalises it itself.
        deploy: build the fused, BatchNorm-free deploy form (see `repghost_tf.fuse`).
        pyramid_outputs: return a feature extractor whose outputs are the dict
            {"P2", "P3", "P4", "P5"} of the four stages' outputs (strides 4, 8, 16 and 32).
        name: model name; defaults to "g_ghost_regnetx_<variant>".
    """
    variant = str(variant)
    if variant not in G_GHOST_VARIANTS:
        raise ValueError(
            f"variant must be one of {', '.join(G_GHOST_VARIANTS)}, got {variant!r}."
        )
    check_arguments(weights, input_shape, pooling, include_top, pyramid_outputs)
    depths, widths, group_width = G_GHOST_VARIANTS[variant]

    inputs, x = image_input(input_shape, input_tensor, include_preprocessing)
    x = ConvBN(STEM_CHANNELS, 3, 2, conv_name="conv1", bn_name="bn1", deploy=deploy,
               name="stem")(x)
    x = layers.ReLU(name="relu")(x)

    pyramid = {}
    for index, (depth, width) in enumerate(zip(depths, widths)):
        stage = f"layer{index + 1}"
        if is_ghost_stage(index, depth):
            x = GGhostStage(width, group_width, depth, strides=2, deploy=deploy, name=stage)(x)
        else:
            for block in range(depth):
                x = XBlock(width, 2 if block == 0 else 1, group_width, deploy=deploy,
                           name=f"{stage}.{block}")(x)
        pyramid[f"P{index + 2}"] = x

    if pyramid_outputs:
        outputs = pyramid
    elif include_top:
        x = layers.GlobalAveragePooling2D(name="avgpool")(x)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="dropout")(x)
        outputs = layers.Dense(classes, activation=classifier_activation, name="fc")(x)
    else:
        outputs = pool_features(x, pooling, name=f"{pooling}pool")

    model = keras.Model(inputs, outputs, name=name or f"g_ghost_regnetx_{variant}")
    if weights is not None:
        load_weights_file(model, weights)
    return model


def _named(variant: str) -> Callable[..., keras.Model]:
    def build(**kwargs) -> keras.Model:
        return GGhostRegNetX(variant=variant, **kwargs)

    build.__name__ = f"GGhostRegNetX{variant}"
    build.__doc__ = f"G-GhostNet RegNetX-{variant}; keyword arguments as for `GGhostRegNetX`."
    return build


GGhostRegNetX002 = _named("002")
GGhostRegNetX004 = _named("004")
GGhostRegNetX006 = _named("006")
GGhostRegNetX008 = _named("008")
GGhostRegNetX016 = _named("016")
GGhostRegNetX032 = _named("032")
GGhostRegNetX040 = _named("040")
GGhostRegNetX064 = _named("064")
GGhostRegNetX080 = _named("080")
GGhostRegNetX120 = _named("120")
GGhostRegNetX160 = _named("160")
GGhostRegNetX320 = _named("320")
