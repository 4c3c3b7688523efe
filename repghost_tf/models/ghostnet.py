"""RepGhostNet and GhostNet as keras.applications-style constructors.

One builder, `_ghost_net`, makes both families from a stage table; the public constructors only
choose the table, the block and the width. Layer names follow the official PyTorch module paths.
"""

from __future__ import annotations

from typing import Callable

import keras
from keras import layers

from repghost_tf.models.applications import (
    check_arguments,
    image_input,
    load_weights_file,
    pool_features,
)
from repghost_tf.models.layers import (
    REPARAM_BRANCHES,
    ConvBN,
    GhostBottleneck,
    RepGhostBottleneck,
    make_divisible,
)

HEAD_CHANNELS = 1280

# Stages of the official definitions; one row per bottleneck:
# (kernel size, expansion channels, output channels, SE ratio, stride).
REPGHOSTNET_STAGES = (
    ((3, 8, 16, 0, 1),),
    ((3, 24, 24, 0, 2),),
    ((3, 36, 24, 0, 1),),
    ((5, 36, 40, 0.25, 2),),
    ((5, 60, 40, 0.25, 1),),
    ((3, 120, 80, 0, 2),),
    (
        (3, 100, 80, 0, 1),
        (3, 120, 80, 0, 1),
        (3, 120, 80, 0, 1),
        (3, 240, 112, 0.25, 1),
        (3, 336, 112, 0.25, 1),
    ),
    ((5, 336, 160, 0.25, 2),),
    (
        (5, 480, 160, 0, 1),
        (5, 480, 160, 0.25, 1),
        (5, 480, 160, 0, 1),
        (5, 480, 160, 0.25, 1),
    ),
)
GHOSTNET_STAGES = (
    ((3, 16, 16, 0, 1),),
    ((3, 48, 24, 0, 2),),
    ((3, 72, 24, 0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((5, 120, 40, 0.25, 1),),
    ((3, 240, 80, 0, 2),),
    (
        (3, 200, 80, 0, 1),
        (3, 184, 80, 0, 1),
        (3, 184, 80, 0, 1),
        (3, 480, 112, 0.25, 1),
        (3, 672, 112, 0.25, 1),
    ),
    ((5, 672, 160, 0.25, 2),),
    (
        (5, 960, 160, 0, 1),
        (5, 960, 160, 0.25, 1),
        (5, 960, 160, 0, 1),
        (5, 960, 160, 0.25, 1),
    ),
)

REPGHOSTNET_WIDTHS = (0.5, 0.58, 0.8, 1.0, 1.11, 1.3, 1.5, 2.0)
GHOSTNET_WIDTHS = (0.5, 1.0, 1.3)


def width_tag(width: float) -> str:
    """0.5 -> "050", 1.11 -> "111": the suffix of the official and timm model names."""
    return f"{round(width * 100):03d}"


def RepGhostNet(
    width: float = 1.0,
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
    reparam: str = "bn",
    shortcut: bool = True,
    pyramid_outputs: bool = False,
    name: str | None = None,
) -> keras.Model:
    """Instantiates RepGhostNet (Chen et al., 2022, arXiv 2211.06088).

    Args:
        width: channel multiplier; the paper's widths are 0.5, 0.58, 0.8, 1.0, 1.11, 1.3, 1.5, 2.0.
        include_top: whether to include the 1x1 conv head and the classifier.
        weights: None (random initialisation) or a path to a `.weights.h5` or `.keras` file.
        input_shape: (height, width, 3); defaults to (None, None, 3), any size from 32x32 up.
        input_tensor: optional Keras tensor to use as the image input.
        pooling: without the top, None (4D features), "avg" or "max".
        classes: number of classes of the classifier.
        classifier_activation: activation of the classifier; None returns logits.
        dropout_rate: dropout before the classifier.
        include_preprocessing: the model takes raw RGB in [0, 255] and normalises it itself.
        deploy: build the fused, BatchNorm-free deploy form (see `repghost_tf.fuse`).
        reparam: re-parameterization branch of each module: "bn" (paper), "identity", "none",
            or "post_bn" (QARepVGG-style: identity branch, one BatchNorm after the sum).
        shortcut: False drops the identity shortcuts (the paper's "w/o shortcut" ablation).
        pyramid_outputs: return a feature extractor whose outputs are the dict
            {"P2", "P3", "P4", "P5"} of the last feature maps at strides 4, 8, 16 and 32.
        name: model name; defaults to "repghostnet_<width>", e.g. "repghostnet_050".
    """
    if reparam not in REPARAM_BRANCHES:
        raise ValueError(f"reparam must be one of {REPARAM_BRANCHES}, got {reparam!r}.")

    def block(mid: int, out: int, kernel: int, stride: int, se: float, name: str):
        return RepGhostBottleneck(
            mid, out, kernel, stride, se, reparam=reparam, shortcut=shortcut, deploy=deploy, name=name
        )

    return _ghost_net(
        stages=REPGHOSTNET_STAGES,
        block=block,
        final_expansion=2,
        width=width,
        include_top=include_top,
        weights=weights,
        input_shape=input_shape,
        input_tensor=input_tensor,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        dropout_rate=dropout_rate,
        include_preprocessing=include_preprocessing,
        deploy=deploy,
        pyramid_outputs=pyramid_outputs,
        family="repghostnet",
        name=name,
    )


def GhostNet(
    width: float = 1.0,
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
    """Instantiates GhostNet (Han et al., 2020), the Concat-based baseline of RepGhostNet.

    Arguments are those of `RepGhostNet`, without the re-parameterization ones.
    """

    def block(mid: int, out: int, kernel: int, stride: int, se: float, name: str):
        return GhostBottleneck(mid, out, kernel, stride, se, deploy=deploy, name=name)

    return _ghost_net(
        stages=GHOSTNET_STAGES,
        block=block,
        final_expansion=1,
        width=width,
        include_top=include_top,
        weights=weights,
        input_shape=input_shape,
        input_tensor=input_tensor,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        dropout_rate=dropout_rate,
        include_preprocessing=include_preprocessing,
        deploy=deploy,
        pyramid_outputs=pyramid_outputs,
        family="ghostnet",
        name=name,
    )


def _ghost_net(
    *,
    stages,
    block,
    final_expansion,
    width,
    include_top,
    weights,
    input_shape,
    input_tensor,
    pooling,
    classes,
    classifier_activation,
    dropout_rate,
    include_preprocessing,
    deploy,
    pyramid_outputs,
    family,
    name,
) -> keras.Model:
    if not width > 0:
        raise ValueError(f"width must be positive, got {width}.")
    check_arguments(weights, input_shape, pooling, include_top, pyramid_outputs)
    inputs, x = image_input(input_shape, input_tensor, include_preprocessing)
    channels = make_divisible(16 * width)
    x = ConvBN(channels, 3, 2, conv_name="conv_stem", bn_name="bn1", deploy=deploy, name="stem")(x)
    x = layers.ReLU(name="act1")(x)

    pyramid, stride = {}, 2
    for stage_index, stage in enumerate(stages):
        for block_index, (kernel, expansion, out, se_ratio, block_stride) in enumerate(stage):
            if block_stride > 1:
                pyramid[f"P{stride.bit_length() - 1}"] = x
                stride *= block_stride
            x = block(
                make_divisible(expansion * width),
                make_divisible(out * width),
                kernel,
                block_stride,
                se_ratio,
                f"blocks.{stage_index}.{block_index}",
            )(x)
    last = f"blocks.{len(stages)}.0"
    x = ConvBN(
        make_divisible(expansion * width * final_expansion),
        1,
        conv_name=f"{last}.conv",
        bn_name=f"{last}.bn1",
        deploy=deploy,
        name=last,
    )(x)
    x = layers.ReLU(name=f"{last}.act1")(x)
    pyramid[f"P{stride.bit_length() - 1}"] = x

    if pyramid_outputs:
        outputs = {level: pyramid[level] for level in ("P2", "P3", "P4", "P5")}
    elif include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True, name="global_pool")(x)
        x = layers.Conv2D(HEAD_CHANNELS, 1, name="conv_head")(x)
        x = layers.ReLU(name="act2")(x)
        x = layers.Flatten(name="flatten")(x)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="dropout")(x)
        outputs = layers.Dense(classes, activation=classifier_activation, name="classifier")(x)
    else:
        outputs = pool_features(x, pooling, name="global_pool")

    model = keras.Model(inputs, outputs, name=name or f"{family}_{width_tag(width)}")
    if weights is not None:
        load_weights_file(model, weights)
    return model


def _named(constructor: Callable, width: float, doc_name: str, **fixed) -> Callable:
    def build(**kwargs) -> keras.Model:
        return constructor(width=width, **fixed, **kwargs)

    build.__doc__ = f"{doc_name}; keyword arguments as for `{constructor.__name__}`."
    return build


RepGhostNet050 = _named(RepGhostNet, 0.5, "RepGhostNet 0.5x")
RepGhostNet058 = _named(RepGhostNet, 0.58, "RepGhostNet 0.58x")
RepGhostNet080 = _named(RepGhostNet, 0.8, "RepGhostNet 0.8x")
RepGhostNet100 = _named(RepGhostNet, 1.0, "RepGhostNet 1.0x")
RepGhostNet111 = _named(RepGhostNet, 1.11, "RepGhostNet 1.11x")
RepGhostNet130 = _named(RepGhostNet, 1.3, "RepGhostNet 1.3x")
RepGhostNet150 = _named(RepGhostNet, 1.5, "RepGhostNet 1.5x")
RepGhostNet200 = _named(RepGhostNet, 2.0, "RepGhostNet 2.0x")
RepGhostNet050RepIdentity = _named(
    RepGhostNet, 0.5, "RepGhostNet 0.5x ablation: identity re-parameterization branch",
    reparam="identity", name="repghostnet_repid_050",
)
RepGhostNet050NoReparam = _named(
    RepGhostNet, 0.5, "RepGhostNet 0.5x ablation: no re-parameterization",
    reparam="none", name="repghostnet_norep_050",
)
RepGhostNet050PostBN = _named(
    RepGhostNet, 0.5, "RepGhostNet 0.5x variant: identity branch and a BatchNorm after the sum "
    "(QARepVGG-style, for int8)", reparam="post_bn", name="repghostnet_postbn_050",
)
RepGhostNet050NoShortcut = _named(
    RepGhostNet, 0.5, "RepGhostNet 0.5x ablation: no identity shortcuts",
    shortcut=False, name="repghostnet_wo_050",
)
GhostNet050 = _named(GhostNet, 0.5, "GhostNet 0.5x")
GhostNet100 = _named(GhostNet, 1.0, "GhostNet 1.0x")
GhostNet130 = _named(GhostNet, 1.3, "GhostNet 1.3x")
