"""RepGhostNet and GhostNet in keras-hub, so that its tasks, presets and losses take them:
`RepGhostNetBackbone` (a `FeaturePyramidBackbone`, P2-P5) and `RepGhostNetImageClassifier`. The
detector on this backbone is `repghost_tf.detection.detector.RepGhostNetDetector`.

keras-hub is optional. Its wheel asks for tensorflow-text, which brings a second TensorFlow
wheel next to tensorflow-cpu; the backbones and presets need none of that, so install it without
its dependencies: `pip install -e ".[hub]"` then `pip install --no-deps keras-hub==0.32.0`.

    backbone = RepGhostNetBackbone("repghostnet_050")    # or .from_model(a converted checkpoint)
    backbone.save_to_preset("presets/repghostnet_050")
    classifier = keras_hub.models.ImageClassifier.from_preset(
        "presets/repghostnet_050", num_classes=10)
"""

from __future__ import annotations

import keras
import keras_hub

from repghost_tf.fusion import is_fused
from repghost_tf.models.applications import ImageNormalization
from repghost_tf.models.registry import resolve

# G-GhostNet's constructors have no pyramid outputs.
NO_PYRAMID_FAMILIES = ("g_ghost_regnetx",)


@keras.saving.register_keras_serializable(package="repghost_tf")
class RepGhostNetBackbone(keras_hub.models.FeaturePyramidBackbone):
    """A model of `repghost_tf.MODELS` (RepGhostNet or GhostNet, any width or ablation) without
    its classifier: the last feature map out, P2-P5 (strides 4-32) as `pyramid_outputs`.

    It takes RGB pixels in [0, 255] and normalises them itself, like the library's models
    (`include_preprocessing=False` for images normalised outside). Layer names are the library's,
    so `repghost_tf.fuse` gives its deploy form with the same outputs.
    """

    def __init__(
        self,
        model_name: str = "repghostnet_050",
        deploy: bool = False,
        include_preprocessing: bool = True,
        image_shape: tuple = (None, None, 3),
        **kwargs,
    ):
        spec = resolve(model_name)
        if spec.family in NO_PYRAMID_FAMILIES:
            raise ValueError(f"{model_name} has no pyramid outputs; choose a RepGhostNet or GhostNet")
        inputs = keras.Input(shape=image_shape, name="images")
        network = spec(
            input_tensor=inputs, include_top=False, pyramid_outputs=True, deploy=deploy,
            include_preprocessing=include_preprocessing,
        )
        pyramid = network.output
        super().__init__(inputs=inputs, outputs=pyramid["P5"], **kwargs)
        self.model_name = spec.name
        self.deploy = deploy
        self.include_preprocessing = include_preprocessing
        self.image_shape = tuple(image_shape)
        self.pyramid_outputs = pyramid

    @classmethod
    def from_model(
        cls, model: keras.Model, image_shape: tuple = (None, None, 3)
    ) -> RepGhostNetBackbone:
        """The backbone of `model`, a model of the registry in either form and with any top (an
        official checkpoint from `repghost_tf.convert_torch`, a run's `best.keras`), with its
        weights."""
        backbone = cls(
            model.name,
            deploy=is_fused(model),
            include_preprocessing=any(isinstance(x, ImageNormalization) for x in model.layers),
            image_shape=image_shape,
        )
        for layer in backbone.layers:
            if layer.weights:
                layer.set_weights(model.get_layer(layer.name).get_weights())
        return backbone

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "model_name": self.model_name,
            "deploy": self.deploy,
            "include_preprocessing": self.include_preprocessing,
            "image_shape": self.image_shape,
        }


@keras.saving.register_keras_serializable(package="repghost_tf")
class RepGhostNetImageClassifier(keras_hub.models.ImageClassifier):
    """keras-hub's image classifier (global pooling, dropout, dense) on a `RepGhostNetBackbone`;
    `keras_hub.models.ImageClassifier.from_preset` picks it for a backbone preset of ours."""

    backbone_cls = RepGhostNetBackbone
