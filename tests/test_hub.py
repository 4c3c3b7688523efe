"""keras-hub backbones: pyramid outputs, preset round trip, fusion, dtype policies, the
image-classifier and detector tasks and their preprocessors. keras-hub's own test harness runs on
them in tests/test_keras_hub_harness.py."""

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import repghost_tf  # noqa: E402
from repghost_tf import litert  # noqa: E402
from repghost_tf.detection import PostProcessing  # noqa: E402
from repghost_tf.detection.detector import (  # noqa: E402
    RepGhostNetDetector,
    RepGhostNetObjectDetectorPreprocessor,
)
from repghost_tf.detection.export import convert_detector  # noqa: E402
from repghost_tf.export.tflite import op_histogram  # noqa: E402
from repghost_tf.fusion import walk_layers  # noqa: E402
from repghost_tf.hub import (  # noqa: E402
    RepGhostNetBackbone,
    RepGhostNetImageClassifier,
    RepGhostNetImageClassifierPreprocessor,
    RepGhostNetImageConverter,
    dtype_policy_scope,
)
from helpers import randomize_batchnorms, random_images, relative_error  # noqa: E402


def _pyramid(backbone, images) -> dict[str, np.ndarray]:
    outputs = keras.Model(backbone.input, backbone.pyramid_outputs)(images, training=False)
    return {level: np.asarray(value) for level, value in outputs.items()}


@pytest.fixture(scope="module")
def backbone():
    model = RepGhostNetBackbone("repghostnet_050")
    randomize_batchnorms(model, seed=3)
    return model


def test_pyramid_levels_are_the_library_models(backbone):
    images = random_images(2, 96, 96, seed=1)
    pyramid = _pyramid(backbone, images)
    assert {level: value.shape for level, value in pyramid.items()} == {
        "P2": (2, 24, 24, 12), "P3": (2, 12, 12, 20), "P4": (2, 6, 6, 56), "P5": (2, 3, 3, 480)
    }
    # The same layers and weights as repghost_tf's own model with pyramid outputs.
    library = repghost_tf.RepGhostNet050(include_top=False, pyramid_outputs=True)
    library.set_weights(backbone.get_weights())
    expected = library(images, training=False)
    for level, value in pyramid.items():
        np.testing.assert_array_equal(value, np.asarray(expected[level]))


def test_preset_round_trip_is_exact(backbone, tmp_path):
    images = random_images(2, 64, 64, seed=2)
    backbone.save_to_preset(str(tmp_path / "preset"))
    loaded = keras_hub.models.Backbone.from_preset(str(tmp_path / "preset"))
    assert isinstance(loaded, RepGhostNetBackbone) and loaded.model_name == "repghostnet_050"
    for level, value in _pyramid(loaded, images).items():
        np.testing.assert_array_equal(value, _pyramid(backbone, images)[level])


def test_fused_backbone_has_the_same_pyramid(backbone, tmp_path):
    images = random_images(2, 64, 64, seed=3)
    deployed = repghost_tf.fuse(backbone)
    assert isinstance(deployed, RepGhostNetBackbone) and deployed.deploy
    assert repghost_tf.is_fused(deployed) and not repghost_tf.is_fused(backbone)
    expected = _pyramid(backbone, images)
    for level, value in _pyramid(deployed, images).items():
        assert relative_error(value, expected[level]) < 1e-5, level
    deployed.save_to_preset(str(tmp_path / "deployed"))
    reloaded = keras_hub.models.Backbone.from_preset(str(tmp_path / "deployed"))
    assert reloaded.deploy and repghost_tf.is_fused(reloaded)


def test_image_classifier_from_a_backbone_preset(backbone, tmp_path):
    backbone.save_to_preset(str(tmp_path / "preset"))
    classifier = keras_hub.models.ImageClassifier.from_preset(
        str(tmp_path / "preset"), num_classes=10
    )
    assert isinstance(classifier, RepGhostNetImageClassifier)
    # A backbone saved alone has no image converter: its preprocessor gets one that resizes to
    # the backbone's image size, here none, and never rescales the [0, 255] pixels.
    assert isinstance(classifier.preprocessor, RepGhostNetImageClassifierPreprocessor)
    converter = classifier.preprocessor.image_converter
    assert isinstance(converter, RepGhostNetImageConverter)
    assert (converter.image_size, converter.scale, converter.offset) == (None, None, None)
    assert classifier.predict(random_images(3, 64, 64, seed=4), verbose=0).shape == (3, 10)


@pytest.mark.slow
def test_tasks_from_a_static_size_backbone_preset_resize_to_it(tmp_path):
    RepGhostNetBackbone("repghostnet_050", image_shape=(64, 64, 3)).save_to_preset(
        str(tmp_path / "preset"))
    images = random_images(2, 80, 80, seed=11)
    classifier = keras_hub.models.ImageClassifier.from_preset(
        str(tmp_path / "preset"), num_classes=4)
    assert classifier.preprocessor.image_converter.image_size == (64, 64)
    assert classifier.predict(images, verbose=0).shape == (2, 4)
    detector = keras_hub.models.ObjectDetector.from_preset(str(tmp_path / "preset"), num_classes=4)
    assert isinstance(detector, RepGhostNetDetector)
    assert isinstance(detector.preprocessor, RepGhostNetObjectDetectorPreprocessor)
    assert detector.preprocessor.image_converter.image_size == (64, 64)
    assert detector.predict(images, verbose=0)["boxes"].shape == (2, 100, 4)


@pytest.mark.parametrize("deploy", [False, True])
def test_backbone_of_a_library_model_keeps_its_weights(deploy):
    """A converted checkpoint or a run's model (any top, either form) gives its backbone."""
    model = repghost_tf.RepGhostNet050(classes=10)
    randomize_batchnorms(model, seed=5)
    if deploy:
        model = repghost_tf.fuse(model)
    backbone = RepGhostNetBackbone.from_model(model)
    assert backbone.deploy == deploy
    images = random_images(2, 64, 64, seed=6)
    trunk = keras.Model(model.input, model.get_layer("blocks.9.0.act1").output)
    np.testing.assert_array_equal(backbone(images), trunk(images, training=False))


@pytest.mark.slow
def test_backbone_dtype_reaches_every_layer():
    """`dtype` is the policy of every layer the backbone builds (keras-hub's precision test), and
    the default, float32 path is the library model's, layer for layer and name for name."""
    images = random_images(2, 32, 32, seed=12)
    default = RepGhostNetBackbone("repghostnet_050", image_shape=(32, 32, 3))
    randomize_batchnorms(default, seed=13)
    mixed = RepGhostNetBackbone("repghostnet_050", image_shape=(32, 32, 3), dtype="mixed_float16")
    mixed.set_weights(default.get_weights())
    library = repghost_tf.RepGhostNet050(include_top=False, pyramid_outputs=True)

    def built(model):  # the layers built, not the input (float32 whatever the policy)
        return [layer for layer in walk_layers(model)
                if not isinstance(layer, keras.layers.InputLayer)]

    def names(model):
        return [(layer.name, type(layer).__name__) for layer in built(model)]
    assert names(default) == names(library) == names(mixed)
    assert keras.config.dtype_policy().name == "float32"  # the scope is gone
    for model, compute, variables in ((default, "float32", "float32"),
                                      (mixed, "float16", "float32")):
        assert {layer.compute_dtype for layer in built(model)} == {compute}
        assert {weight.dtype for weight in model.weights} == {variables}
    expected = default(images, training=False)
    assert mixed(images, training=False).dtype == "float16"
    assert relative_error(mixed(images, training=False), expected) < 1e-2
    # Its deploy form keeps the policy.
    deployed = repghost_tf.fuse(mixed)
    assert deployed.dtype_policy.name == "mixed_float16"
    assert {layer.compute_dtype for layer in built(deployed)} == {"float16"}
    assert relative_error(deployed(images, training=False), expected) < 1e-2
    # A DTypePolicyMap (how keras-hub passes per-layer quantization policies) reaches them too.
    policy_map = keras.dtype_policies.DTypePolicyMap("float32")
    mapped = RepGhostNetBackbone("repghostnet_050", image_shape=(32, 32, 3), dtype=policy_map)
    assert all(layer.dtype_policy is policy_map for layer in built(mapped))
    assert RepGhostNetBackbone.from_config(mapped.get_config()).get_config() == mapped.get_config()


def test_dtype_policy_scope_restores_the_default_policy():
    with dtype_policy_scope(None):
        assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(RuntimeError):
        with dtype_policy_scope("bfloat16"):
            assert keras.layers.ReLU().dtype_policy.name == "bfloat16"
            raise RuntimeError
    assert keras.config.dtype_policy().name == "float32"


def test_ghostnet_backbone_and_no_g_ghostnet():
    ghostnet = RepGhostNetBackbone("ghostnet_050", image_shape=(64, 64, 3))
    assert set(ghostnet.pyramid_outputs) == {"P2", "P3", "P4", "P5"}
    with pytest.raises(ValueError, match="g_ghost_regnetx_002 has no pyramid outputs"):
        RepGhostNetBackbone("g_ghost_regnetx_002")


@pytest.fixture(scope="module")
def detector():
    return RepGhostNetDetector(
        RepGhostNetBackbone("repghostnet_050", image_shape=(64, 64, 3)), num_classes=3
    )


def test_detector_costs_a_fraction_of_its_backbone():
    """SSDLite-style heads on P3-P5: at 320 px the whole detector stays under 3x the backbone's
    multiply-adds (measured 130.0 M against 84.4 M)."""
    backbone = RepGhostNetBackbone("repghostnet_050", image_shape=(320, 320, 3))
    detector = RepGhostNetDetector(backbone, num_classes=10)
    backbone_macs = repghost_tf.profile(backbone, 320).macs
    detector_macs = repghost_tf.profile(detector, 320).macs
    assert backbone_macs < detector_macs < 3 * backbone_macs
    outputs = detector(random_images(1, 320, 320, seed=7))
    anchors = 9 * (40 * 40 + 20 * 20 + 10 * 10)
    assert outputs["bbox_regression"].shape == (1, anchors, 4)
    assert outputs["cls_logits"].shape == (1, anchors, 10)


def test_prior_probability_sits_on_the_class_head(detector):
    prior_bias = -np.log((1 - 0.01) / 0.01)
    for level in ("P3", "P4", "P5"):
        np.testing.assert_allclose(
            detector.classification_heads[level].final.bias.numpy(), prior_bias, rtol=1e-6
        )
        np.testing.assert_array_equal(detector.box_heads[level].final.bias.numpy(), 0.0)


def _iou(box, anchors):
    """IoU of one yxyx box with each yxyx anchor, written out for the test."""
    top = np.maximum(box[0], anchors[:, 0])
    left = np.maximum(box[1], anchors[:, 1])
    bottom = np.minimum(box[2], anchors[:, 2])
    right = np.minimum(box[3], anchors[:, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(anchors) - inter)


def test_label_encoding_of_a_box_that_is_an_anchor(detector):
    """A ground-truth box equal to the square P3 anchor at (0, 32)-(32, 64): that anchor is
    positive with zero regression targets; anchors with IoU < 0.4 are background (-1), those in
    [0.4, 0.5) ignored (-2), those >= 0.5 positive."""
    image = np.zeros((1, 64, 64, 3), np.float32)
    anchors = np.concatenate([np.asarray(a) for a in detector.anchor_generator(image[0]).values()])
    box = np.array([0.0, 32.0, 32.0, 64.0], np.float32)
    (index,) = np.flatnonzero((anchors == box).all(axis=1))  # exactly one such anchor
    assert index < 8 * 8 * 9  # a P3 anchor: stride 8, base size 4 x 8 = 32 px, ratio 1
    targets, labels = detector.label_encoder(
        images=image, gt_boxes=box[None, None], gt_classes=np.array([[2.0]], np.float32)
    )
    targets, labels = np.asarray(targets)[0], np.asarray(labels)[0]
    assert labels[index] == 2
    np.testing.assert_allclose(targets[index], 0.0, atol=1e-6)
    iou = _iou(box, anchors)
    np.testing.assert_array_equal(labels == 2, iou >= 0.5)
    np.testing.assert_array_equal(labels == -1, iou < 0.4)
    np.testing.assert_array_equal(labels == -2, (iou >= 0.4) & (iou < 0.5))


def test_detector_round_trips_and_decodes(detector, tmp_path):
    images = random_images(2, 64, 64, seed=8)
    detector.save(tmp_path / "detector.keras")
    loaded = keras.saving.load_model(tmp_path / "detector.keras", safe_mode=True)
    assert isinstance(loaded, RepGhostNetDetector)
    for key, value in detector(images).items():
        np.testing.assert_array_equal(loaded(images)[key], value)
    detections = loaded.predict(images, verbose=0)
    assert {key: np.asarray(value).shape for key, value in detections.items()} == {
        "boxes": (2, 100, 4), "confidence": (2, 100), "labels": (2, 100), "num_detections": (2,)
    }


def test_fused_detector_predicts_the_same():
    detector = RepGhostNetDetector(
        RepGhostNetBackbone("repghostnet_050", image_shape=(64, 64, 3)), num_classes=3
    )
    randomize_batchnorms(detector, seed=9)
    images = random_images(2, 64, 64, seed=10)
    deployed = repghost_tf.fuse(detector)
    assert deployed.deploy and repghost_tf.is_fused(deployed) and not repghost_tf.is_fused(detector)
    expected = detector(images, training=False)
    for key, value in deployed(images, training=False).items():
        assert relative_error(value, expected[key]) < 1e-5, key


@pytest.mark.slow
def test_tflite_detector_reproduces_keras_hub_decoding_and_nms():
    """The file's boxes, scores and classes are those of keras-hub's decoding and NMS of the same
    fused detector on a fixed image; builtin ops only, the NMS as NON_MAX_SUPPRESSION_V5.

    Greedy NMS visits the boxes in score order, and the file's scores differ from Keras's by
    float error (~1e-7): two boxes whose scores are within 1e-5 of each other may be visited in
    either order on another CPU. The detections are compared up to the first such near-tie among
    all candidates, which the fixed weights put after the 16th detection."""
    keras.utils.set_random_seed(1)  # the heads' initial kernels: the near-ties depend on them
    decoder = keras_hub.layers.NonMaxSuppression(
        bounding_box_format="yxyx", from_logits=True, iou_threshold=0.5,
        confidence_threshold=0.3, max_detections=20,
    )
    detector = RepGhostNetDetector(
        RepGhostNetBackbone("repghostnet_050", image_shape=(96, 96, 3)), num_classes=3,
        prediction_decoder=decoder,
    )
    randomize_batchnorms(detector, seed=1)
    # Class scores around 0.5 instead of the 0.01 prior, so that many boxes compete in the NMS.
    for head in detector.classification_heads.values():
        head.final.bias.assign(np.zeros(9 * 3, np.float32))
    deployed = repghost_tf.fuse(detector)
    flatbuffer = convert_detector(
        deployed, 96, PostProcessing(max_detections=20, iou_threshold=0.5, score_threshold=0.3)
    )
    assert op_histogram(flatbuffer)["NON_MAX_SUPPRESSION_V5"] == 1
    image = random_images(1, 96, 96, seed=2)
    ours = litert.make_interpreter(flatbuffer).get_signature_runner()(images=image)
    expected = deployed.predict(image, verbose=0)
    count = int(ours["count"][0])
    assert count == int(expected["num_detections"][0]) == 20

    # Every candidate's score (keras-hub's NMS is class-agnostic: the best class per anchor).
    logits = np.asarray(deployed(image, training=False)["cls_logits"])[0].max(axis=-1)
    candidates = np.sort(keras.ops.convert_to_numpy(keras.ops.sigmoid(logits)))[::-1]
    candidates = candidates[candidates > 0.3]
    first_tie = int(np.argmax(-np.diff(candidates) < 1e-5))
    decided = int((expected["confidence"][0] > candidates[first_tie]).sum())
    assert decided == 16
    np.testing.assert_allclose(96 * ours["boxes"][0, :decided], expected["boxes"][0, :decided],
                               atol=1e-3)
    np.testing.assert_allclose(ours["scores"][0, :decided],
                               expected["confidence"][0, :decided], atol=1e-5)
    np.testing.assert_array_equal(ours["classes"][0, :decided], expected["labels"][0, :decided])
