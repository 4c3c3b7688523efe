"""`RepGhostNetDetector`: an SSDLite-style object detector on a `RepGhostNetBackbone`, built from
keras-hub's RetinaNet parts (anchors, label encoder, losses, NMS), with its `SeparableHead`s
(docs/detection.md), and its `RepGhostNetObjectDetectorPreprocessor`. Needs keras-hub, like
`repghost_tf.hub`."""

from __future__ import annotations

import math

import keras
import keras_hub
# Not exported by keras-hub 0.32, which RetinaNetObjectDetector uses as its label encoder.
from keras_hub.src.models.retinanet.retinanet_label_encoder import RetinaNetLabelEncoder

from repghost_tf.fusion import FusableLayer
from repghost_tf.hub import (
    RepGhostNetBackbone,
    RepGhostNetImageConverter,
    converter_kwargs,
    dtype_policy_scope,
)
from repghost_tf.models.layers import ConvBN


@keras.saving.register_keras_serializable(package="repghost_tf")
class SeparableHead(FusableLayer):
    """An SSDLite prediction head for one pyramid level: `depth` blocks of depthwise 3x3 and 1x1
    convs (BatchNorm, ReLU) at `channels`, then a depthwise 3x3 and a linear 1x1 conv to
    `outputs` whose bias starts at `bias_init`."""

    def __init__(
        self, outputs: int, channels: int = 64, depth: int = 1, bias_init: float = 0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.outputs = outputs
        self.channels = channels
        self.depth = depth
        self.bias_init = bias_init

    def build(self, input_shape):
        self.blocks = []
        shape = input_shape
        for index in range(self.depth):
            pair = (
                ConvBN(shape[-1], 3, depthwise=True, deploy=self.deploy,
                       name=f"{self.name}.{index}.dw"),
                ConvBN(self.channels, 1, deploy=self.deploy, name=f"{self.name}.{index}.pw"),
            )
            pair[0].build(shape)
            pair[1].build(shape)
            shape = (*shape[:-1], self.channels)
            self.blocks.append(pair)
        self.final_dw = ConvBN(
            shape[-1], 3, depthwise=True, deploy=self.deploy, name=f"{self.name}.final_dw"
        )
        self.final_dw.build(shape)
        self.final = keras.layers.Conv2D(
            self.outputs, 1, bias_initializer=keras.initializers.Constant(self.bias_init),
            name=f"{self.name}.final",
        )
        self.final.build(shape)

    def call(self, inputs, training=None):
        x = inputs
        for depthwise, pointwise in self.blocks:
            x = keras.ops.relu(depthwise(x, training=training))
            x = keras.ops.relu(pointwise(x, training=training))
        return self.final(keras.ops.relu(self.final_dw(x, training=training)))

    def fused_weights(self) -> list:
        weights = []
        for depthwise, pointwise in self.blocks:
            weights += depthwise.fused_weights() + pointwise.fused_weights()
        return weights + self.final_dw.fused_weights() + self.final.get_weights()

    def get_config(self) -> dict:
        return {**super().get_config(), "outputs": self.outputs, "channels": self.channels,
                "depth": self.depth, "bias_init": self.bias_init}


@keras.saving.register_keras_serializable(package="repghost_tf")
class RepGhostNetObjectDetectorPreprocessor(keras_hub.models.ObjectDetectorPreprocessor):
    """The detector's preprocessor: its `RepGhostNetImageConverter` (resizing only, the images
    in [0, 255]) on the images and, given labels `{"boxes", "labels"}` in the converter's
    `bounding_box_format`, on their boxes too. Without a converter, one that resizes nothing."""

    backbone_cls = RepGhostNetBackbone
    image_converter_cls = RepGhostNetImageConverter

    def __init__(self, image_converter=None, **kwargs):
        if image_converter is None:
            image_converter = RepGhostNetImageConverter()
        super().__init__(image_converter=image_converter, **kwargs)

    @classmethod
    def _add_missing_kwargs(cls, loader, kwargs):
        return super()._add_missing_kwargs(loader, converter_kwargs(cls, loader, kwargs))


@keras.saving.register_keras_serializable(package="repghost_tf")
class RepGhostNetDetector(keras_hub.models.RetinaNetObjectDetector):
    """An SSDLite-style detector on a `RepGhostNetBackbone`: P3-P5 (strides 8-32), each brought
    to `head_channels` by a 1x1 conv, then a box and a class `SeparableHead` per level. (One head
    shared by the levels would mix their BatchNorm statistics: each level is normalised by its
    own batch in training, by the blend of all three in inference, and its validation loss was
    several times its training loss.) Anchors, label encoding, focal + Huber losses, box
    decoding and NMS are
    keras-hub's RetinaNet ones; the class head's bias starts at the prior probability (keras-hub's
    RetinaNet puts that prior on its box head). No FPN and no 256-channel towers, so the
    detector stays within a small multiple of the backbone's multiply-adds. `repghost_tf.fuse`
    gives its deploy form (`deploy=True`: backbone, laterals and heads without BatchNorm).

    `dtype` is the dtype policy of the laterals and heads (the backbone's by default, as in
    keras-hub's RetinaNet); the anchor generator, label encoder and NMS stay float32, as there.
    """

    backbone_cls = RepGhostNetBackbone
    preprocessor_cls = RepGhostNetObjectDetectorPreprocessor
    LEVELS = ("P3", "P4", "P5")

    def __init__(
        self,
        backbone: RepGhostNetBackbone,
        num_classes: int,
        head_channels: int = 64,
        head_depth: int = 1,
        bounding_box_format: str = "yxyx",
        anchor_generator=None,
        label_encoder=None,
        classification_head_prior_probability: float = 0.01,
        preprocessor=None,
        activation=None,
        prediction_decoder=None,
        deploy: bool = False,
        dtype=None,
        **kwargs,
    ):
        if backbone.deploy != deploy:  # the other form of it, weights to come (`fuse`)
            backbone = backbone.__class__.from_config({**backbone.get_config(), "deploy": deploy})
        anchor_generator = anchor_generator or keras_hub.layers.AnchorGenerator(
            bounding_box_format, min_level=3, max_level=5, num_scales=3,
            aspect_ratios=[0.5, 1.0, 2.0], anchor_size=4,
        )
        label_encoder = label_encoder or RetinaNetLabelEncoder(
            anchor_generator, bounding_box_format=bounding_box_format,
            encoding_format="center_xywh",
        )
        anchors = anchor_generator.num_base_anchors
        prior = classification_head_prior_probability
        head_dtype = keras.dtype_policies.get(backbone.dtype_policy if dtype is None else dtype)
        with dtype_policy_scope(head_dtype):  # every layer below, the heads' sub-layers too
            box_heads = {level: SeparableHead(
                anchors * 4, head_channels, head_depth, deploy=deploy, name=f"box_head_{level}"
            ) for level in self.LEVELS}
            classification_heads = {level: SeparableHead(
                anchors * num_classes, head_channels, head_depth,
                bias_init=-math.log((1 - prior) / prior), deploy=deploy,
                name=f"classification_head_{level}",
            ) for level in self.LEVELS}

            images = keras.Input(backbone.image_shape, name="images")
            pyramid = keras.Model(
                backbone.input, {level: backbone.pyramid_outputs[level] for level in self.LEVELS},
                name="pyramid",
            )(images)
            boxes, classes = [], []
            for level in self.LEVELS:
                x = ConvBN(head_channels, 1, deploy=deploy, name=f"lateral_{level}")(
                    pyramid[level])
                x = keras.layers.ReLU(name=f"lateral_{level}_relu")(x)
                boxes.append(keras.layers.Reshape((-1, 4), name=f"box_pred_{level}")(
                    box_heads[level](x)))
                classes.append(keras.layers.Reshape((-1, num_classes), name=f"cls_pred_{level}")(
                    classification_heads[level](x)))
            outputs = {
                "bbox_regression": keras.layers.Concatenate(axis=1, name="bbox_regression")(
                    boxes),
                "cls_logits": keras.layers.Concatenate(axis=1, name="cls_logits")(classes),
            }
        kwargs.setdefault("name", f"{backbone.model_name}_detector")
        # RetinaNetObjectDetector's own constructor builds its 256-channel heads: skip it.
        compile_now = kwargs.pop("compile", True)
        keras_hub.models.ObjectDetector.__init__(
            self, inputs=images, outputs=outputs, compile=False, **kwargs
        )

        self.backbone = backbone
        self.preprocessor = preprocessor
        self.deploy = deploy
        self.num_classes = num_classes
        self.head_channels = head_channels
        self.head_depth = head_depth
        self.head_dtype_policy = head_dtype
        self.bounding_box_format = bounding_box_format
        self.classification_head_prior_probability = prior
        self.activation = activation
        self.box_heads = box_heads
        self.classification_heads = classification_heads
        self.anchor_generator = anchor_generator
        self.label_encoder = label_encoder
        self._prediction_decoder = prediction_decoder or keras_hub.layers.NonMaxSuppression(
            from_logits=activation != keras.activations.sigmoid,
            bounding_box_format=bounding_box_format,
        )
        # The task's own policy is the heads', as keras-hub's Task takes its backbone's, before
        # its default compile() (which then scales the loss under mixed_float16).
        self.dtype_policy = head_dtype
        if compile_now:
            self.compile()

    def decode_predictions(self, predictions, data):
        """keras-hub's box decoding and NMS, in float32 (that of the anchors) whatever the
        network's dtype policy."""
        predictions = {key: keras.ops.cast(value, "float32") for key, value in predictions.items()}
        return super().decode_predictions(predictions, data)

    def get_config(self) -> dict:
        return {
            **keras_hub.models.ObjectDetector.get_config(self),
            "num_classes": self.num_classes,
            "deploy": self.deploy,
            "head_channels": self.head_channels,
            "head_depth": self.head_depth,
            "dtype": keras.dtype_policies.serialize(self.head_dtype_policy),
            "bounding_box_format": self.bounding_box_format,
            "classification_head_prior_probability": self.classification_head_prior_probability,
            "anchor_generator": keras.layers.serialize(self.anchor_generator),
            "label_encoder": keras.layers.serialize(self.label_encoder),
            "prediction_decoder": keras.layers.serialize(self._prediction_decoder),
        }
