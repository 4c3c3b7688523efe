"""RepGhostNet and GhostNet in keras-hub, so that its tasks, presets and losses take them:
`RepGhostNetBackbone` (a `FeaturePyramidBackbone`, P2-P5), `RepGhostNetImageClassifier` with its
`RepGhostNetImageClassifierPreprocessor`, and `RepGhostNetImageConverter`, the image converter of
both (resizing only: the models take [0, 255] pixels and normalise them themselves). The detector
on this backbone is `repghost_tf.detection.detector.RepGhostNetDetector`. keras-hub's own test
harness runs on them in tests/test_keras_hub_harness.py.

keras-hub is optional. Its wheel asks for tensorflow-text, which brings a second TensorFlow
wheel next to tensorflow-cpu; the backbones and presets need none of that, so install it without
its dependencies: `pip install -e ".[hub]"` then `pip install --no-deps keras-hub==0.32.0`.

    backbone = RepGhostNetBackbone("repghostnet_050")    # or .from_model(a converted checkpoint)
    backbone.save_to_preset("presets/repghostnet_050")
    classifier = keras_hub.models.ImageClassifier.from_preset(
        "presets/repghostnet_050", num_classes=10)
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import keras
import keras_hub
# Not exported by keras-hub 0.32: how its preset loader tells whether a file is in a preset.
from keras_hub.src.utils.preset_utils import IMAGE_CONVERTER_CONFIG_FILE, check_file_exists

from repghost_tf.fusion import is_fused
from repghost_tf.models.applications import ImageNormalization
from repghost_tf.models.registry import resolve

# G-GhostNet's constructors have no pyramid outputs.
NO_PYRAMID_FAMILIES = ("g_ghost_regnetx",)


@contextlib.contextmanager
def dtype_policy_scope(dtype) -> Iterator[None]:
    """Layers created inside take `dtype` (a policy name such as "mixed_float16", a
    `keras.DTypePolicy` or a `keras.dtype_policies.DTypePolicyMap`) as their dtype policy, as
    keras-hub's own models pass `dtype=` to every layer they build; so do the sub-layers that a
    layer creates in `build()` when it is first called inside. The library's constructors take no
    `dtype` argument, so this is how one reaches all of their layers. `None` changes nothing.

    Keras keeps its default policy per thread; the one in force before is restored on exit."""
    if dtype is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(keras.dtype_policies.get(dtype))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@keras.saving.register_keras_serializable(package="repghost_tf")
class RepGhostNetBackbone(keras_hub.models.FeaturePyramidBackbone):
    """A model of `repghost_tf.MODELS` (RepGhostNet or GhostNet, any width or ablation) without
    its classifier: the last feature map out, P2-P5 (strides 4-32) as `pyramid_outputs`.

    It takes RGB pixels in [0, 255] and normalises them itself, like the library's models
    (`include_preprocessing=False` for images normalised outside). Layer names are the library's,
    so `repghost_tf.fuse` gives its deploy form with the same outputs. `dtype` (a dtype policy:
    "float32", the default, "mixed_float16", "bfloat16", ...) is that of every layer it builds.
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
            raise ValueError(
                f"{model_name} has no pyramid outputs; choose a RepGhostNet or GhostNet"
            )
        inputs = keras.Input(shape=image_shape, name="images")
        with dtype_policy_scope(kwargs.get("dtype")):
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
class RepGhostNetImageConverter(keras_hub.layers.ImageConverter):
    """keras-hub's image converter for our models: it resizes to `image_size` (none by default)
    and nothing else. Our models take RGB pixels in [0, 255] and normalise them inside, so the
    converter must not rescale: `scale` and `offset` stay None unless a model was built with
    `include_preprocessing=False`."""

    backbone_cls = RepGhostNetBackbone


def converter_kwargs(preprocessor_cls, loader, kwargs: dict) -> dict:
    """`kwargs` for a preprocessor loaded from a preset, with a `RepGhostNetImageConverter` to
    the backbone's static image size (or none) where the preset has no image converter: a
    backbone saved alone has none, and keras-hub's loader would fail to read its file."""
    if "image_converter" not in kwargs and not check_file_exists(
        loader.preset, IMAGE_CONVERTER_CONFIG_FILE
    ):
        height, width = getattr(loader, "config", {}).get("config", {}).get(
            "image_shape", (None, None, 3))[:2]
        image_size = (height, width) if height and width else None
        kwargs["image_converter"] = preprocessor_cls.image_converter_cls(image_size=image_size)
    return kwargs


@keras.saving.register_keras_serializable(package="repghost_tf")
class RepGhostNetImageClassifierPreprocessor(keras_hub.models.ImageClassifierPreprocessor):
    """The image classifier's preprocessor: its `RepGhostNetImageConverter` (resizing only), the
    labels passed through. Called by `fit` / `predict` / `evaluate` of a classifier that has one;
    `ImageClassifierPreprocessor.from_preset` picks it for a preset of ours."""

    backbone_cls = RepGhostNetBackbone
    image_converter_cls = RepGhostNetImageConverter

    @classmethod
    def _add_missing_kwargs(cls, loader, kwargs):
        return super()._add_missing_kwargs(loader, converter_kwargs(cls, loader, kwargs))


@keras.saving.register_keras_serializable(package="repghost_tf")
class RepGhostNetImageClassifier(keras_hub.models.ImageClassifier):
    """keras-hub's image classifier (global pooling, dropout, dense) on a `RepGhostNetBackbone`;
    `keras_hub.models.ImageClassifier.from_preset` picks it for a preset of ours, with a
    `RepGhostNetImageClassifierPreprocessor`. The head takes the backbone's dtype policy."""

    backbone_cls = RepGhostNetBackbone
    preprocessor_cls = RepGhostNetImageClassifierPreprocessor
