"""keras-hub's own test harness (`keras_hub.src.tests.test_case.TestCase`, shipped in its wheel)
run on our keras-hub classes, as keras-hub's model tests run it on theirs (MobileNet's backbone
and classifier tests, RetinaNet's detector test).

What runs:
- `RepGhostNetBackbone`: `run_vision_backbone_test` (serialization, eager and compiled predict,
  the name, the precision test in mixed_float16 / mixed_bfloat16 / bfloat16, the pyramid levels
  and their sizes), `run_model_saving_test`.
- `RepGhostNetImageClassifier` with its `RepGhostNetImageClassifierPreprocessor`:
  `run_task_test` (serialization, predict and fit with the preprocessor and with split
  preprocessing, no default compilation); the preprocessor's own
  `run_preprocessing_layer_test` (direct, tf.data and Grain pipelines), which also shows that its
  converter only resizes (the pixels stay in [0, 255]).
- `RepGhostNetDetector` with its `RepGhostNetObjectDetectorPreprocessor`: `run_task_test`, as
  RetinaNet's test runs it; the preprocessor's `run_preprocessing_layer_test` (images and boxes
  resized together).

The task tests fit with SGD (`compile_kwargs`, which the harness takes for that): the default
Adam is the same code path for the harness and triples the time of the first `fit` on 2 CPU cores.

What does not run, and why:
- The quantization check of `run_backbone_test` (`run_quantization_check`): it gives int8 and
  float8 policies to Dense, EinsumDense and Embedding layers only, and the backbone has none, so
  it would build four backbones and quantize nothing. What it also passes, a `DTypePolicyMap` as
  `dtype`, tests/test_hub.py checks (`test_backbone_dtype_reaches_every_layer`).
- `run_model_saving_test` on the two tasks (keras-hub's tests run it on theirs): it saves a
  `.keras` file, loads it in the same process (safe mode) and compares outputs;
  `test_saved_tasks_load_after_import_repghost_tf_alone` does that for both, preprocessors
  included, in a fresh process that imported only `repghost_tf`, and asks for equal outputs.
  (Each model build costs seconds on 2 cores; the file takes about 3 minutes of worker time
  there, so it runs with the end-to-end tests, `-m slow`.)
- The channels_first half of `run_vision_backbone_test` (`run_data_format_check`): the harness
  itself skips it on TensorFlow without a GPU, and our layers are channels_last only (the
  library's models, like the TFLite files they become, are NHWC).
- `run_precision_test` on the detector: the harness asks every sub-layer of the task to be in
  the policy, the anchor generator, label encoder and NMS included. Those stay float32 by design,
  as in keras-hub's RetinaNet (whose test does not run it either): they compute box coordinates
  in pixels. `test_detector_network_takes_the_dtype_policy` checks what does apply instead: every
  layer of the network (backbone, laterals, heads) in the policy, outputs in its compute dtype,
  and predict() decoding them.
- `run_preset_test`: it loads keras-hub's built-in (Kaggle) presets; ours are local
  (tests/test_hub.py round-trips them).
- `run_litert_export_test`: the TFLite files are `repghost_tf.export`'s (tests/test_export.py,
  tests/test_hub.py for the detector).

Registration: a `.keras` file of the classifier and of the detector loads in safe mode in a fresh
process that imported only `keras` and `repghost_tf`, with its preprocessor and image converter.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("keras_hub")
pytest.importorskip("grain")  # keras_hub.src.tests.test_case imports it

import keras  # noqa: E402
from keras_hub.src.tests import test_case  # noqa: E402 (the module: pytest would collect its class)

from repghost_tf.detection.detector import (  # noqa: E402
    RepGhostNetDetector,
    RepGhostNetObjectDetectorPreprocessor,
)
from repghost_tf.hub import (  # noqa: E402
    RepGhostNetBackbone,
    RepGhostNetImageClassifier,
    RepGhostNetImageClassifierPreprocessor,
    RepGhostNetImageConverter,
)
from helpers import random_images, user_environment  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32  # the smallest input the models take (MIN_INPUT_SIZE): P5 is 1 x 1
SGD = {"optimizer": "sgd"}


class HarnessCase(test_case.TestCase):
    # tf.test.TestCase's deprecated `test_session` context manager is not a test.
    test_session = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # One backbone for the class's tests (building one takes seconds on 2 cores).
        cls.backbone = RepGhostNetBackbone("repghostnet_050", image_shape=(SIZE, SIZE, 3))


def _resized(images, size: int) -> np.ndarray:
    """What the converters must give: the images resized, pixel values not rescaled."""
    return np.asarray(keras.layers.Resizing(size, size, crop_to_aspect_ratio=True)(images))


class RepGhostNetBackboneTest(test_case.TestCase):
    test_session = None

    def setUp(self):
        self.init_kwargs = {"model_name": "repghostnet_050", "image_shape": (SIZE, SIZE, 3)}
        self.input_data = random_images(2, SIZE, SIZE, seed=0)

    def test_backbone_basics(self):
        self.run_vision_backbone_test(
            cls=RepGhostNetBackbone,
            init_kwargs=self.init_kwargs,
            input_data=self.input_data,
            expected_output_shape=(2, 1, 1, 480),
            expected_pyramid_output_keys=["P2", "P3", "P4", "P5"],
            expected_pyramid_image_sizes=[(8, 8), (4, 4), (2, 2), (1, 1)],
            run_quantization_check=False,
            run_data_format_check=False,
        )

    def test_saved_model(self):
        self.run_model_saving_test(
            cls=RepGhostNetBackbone, init_kwargs=self.init_kwargs, input_data=self.input_data
        )


class RepGhostNetImageClassifierTest(HarnessCase):
    def setUp(self):
        self.images = random_images(2, 40, 40, seed=1)  # resized to SIZE by the preprocessor
        self.labels = np.array([0, 2])
        self.init_kwargs = {
            "backbone": self.backbone,
            "preprocessor": RepGhostNetImageClassifierPreprocessor(
                RepGhostNetImageConverter(image_size=(SIZE, SIZE))
            ),
            "num_classes": 3,
            "activation": "softmax",
        }
        self.train_data = (self.images, self.labels)

    def test_classifier_basics(self):
        self.run_task_test(
            cls=RepGhostNetImageClassifier,
            init_kwargs=self.init_kwargs,
            train_data=self.train_data,
            expected_output_shape=(2, 3),
            compile_kwargs=SGD,
        )

    def test_preprocessor_only_resizes(self):
        output = self.run_preprocessing_layer_test(
            cls=RepGhostNetImageClassifierPreprocessor,
            init_kwargs={"image_converter": RepGhostNetImageConverter(image_size=(SIZE, SIZE))},
            input_data=self.images,
            return_output=True,  # (its `expected_output` takes no array)
        )
        self.assertAllClose(output, _resized(self.images, SIZE))
        assert np.asarray(output).max() > 200  # [0, 255] pixels: the model normalises them


class RepGhostNetDetectorTest(HarnessCase):
    def setUp(self):
        self.init_kwargs = {
            "backbone": self.backbone,
            "num_classes": 3,
            "head_channels": 16,
            "preprocessor": RepGhostNetObjectDetectorPreprocessor(RepGhostNetImageConverter()),
        }
        self.images = random_images(2, SIZE, SIZE, seed=2)
        # Pixel yxyx boxes (the detector's bounding_box_format); label -1 pads.
        self.labels = {
            "boxes": np.array([[[0, 16, 16, 32], [4, 4, 20, 28]], [[8, 8, 24, 24], [0, 0, 0, 0]]],
                              "float32"),
            "labels": np.array([[0, 2], [1, -1]], "float32"),
        }
        self.train_data = (self.images, self.labels)

    def test_detection_basics(self):
        self.run_task_test(
            cls=RepGhostNetDetector,
            init_kwargs=self.init_kwargs,
            train_data=self.train_data,
            expected_output_shape={
                "boxes": (2, 100, 4),
                "confidence": (2, 100),
                "labels": (2, 100),
                "num_detections": (2,),
            },
            compile_kwargs=SGD,
        )

    def test_preprocessor_resizes_images_and_boxes(self):
        images = random_images(2, 2 * SIZE, 2 * SIZE, seed=3)
        labels = {key: value.copy() for key, value in self.labels.items()}
        labels["boxes"] *= 2  # the same boxes on images twice the size
        self.run_preprocessing_layer_test(
            cls=RepGhostNetObjectDetectorPreprocessor,
            init_kwargs={"image_converter": RepGhostNetImageConverter(image_size=(SIZE, SIZE))},
            input_data=(images, labels),
            expected_output=(_resized(images, SIZE), self.labels),
        )


def test_detector_network_takes_the_dtype_policy():
    """What of `run_precision_test` applies to a detector, in mixed_float16 (compute and variable
    dtypes differ; the backbone's harness test runs all three policies): every layer of its
    network (backbone, laterals, heads) and the task itself in the policy, its outputs in the
    compute dtype; the anchor generator, label encoder and NMS float32 (pixel coordinates), and
    predict() decodes."""
    policy = keras.DTypePolicy("mixed_float16")
    detector = RepGhostNetDetector(
        RepGhostNetBackbone("repghostnet_050", image_shape=(SIZE, SIZE, 3), dtype=policy),
        num_classes=3, head_channels=16,
    )
    box_layers = [detector.anchor_generator, detector.label_encoder, detector.prediction_decoder]
    float32 = {id(layer) for parent in box_layers for layer in parent._flatten_layers()}
    images = random_images(2, SIZE, SIZE, seed=4)
    for value in detector(images).values():
        assert value.dtype == policy.compute_dtype
    for layer in detector._flatten_layers():
        if isinstance(layer, keras.layers.InputLayer):
            continue
        expected = "float32" if id(layer) in float32 else policy.compute_dtype
        assert (layer.compute_dtype, layer.path) == (expected, layer.path)
    for weight in detector.weights:
        assert (weight.dtype, weight.path) == (policy.variable_dtype, weight.path)
    detections = detector.predict(images, verbose=0)
    assert detections["boxes"].dtype == "float32" and detections["boxes"].shape == (2, 100, 4)


# A fresh process that imports only keras and repghost_tf (numpy for the comparison): each file
# loads in safe mode as its class, preprocessor included, and computes the outputs saved with it.
_LOAD = textwrap.dedent("""
    import sys
    import keras
    import numpy as np
    import repghost_tf
    for path in sys.argv[1:]:
        model = keras.saving.load_model(path, safe_mode=True)
        expected = np.load(path + ".npz")
        outputs = model(expected["images"], training=False)
        outputs = outputs if isinstance(outputs, dict) else {"outputs": outputs}
        error = max(float(np.max(np.abs(np.asarray(outputs[key]) - expected[key])))
                    for key in outputs)
        print(type(model).__name__, type(model.preprocessor).__name__,
              type(model.preprocessor.image_converter).__name__, error)
""")


def test_saved_tasks_load_after_import_repghost_tf_alone(tmp_path):
    images = random_images(2, SIZE, SIZE, seed=5)
    converter = RepGhostNetImageConverter(image_size=(SIZE, SIZE))
    backbone = RepGhostNetBackbone("repghostnet_050", image_shape=(SIZE, SIZE, 3))
    tasks = {
        "classifier": RepGhostNetImageClassifier(
            backbone, num_classes=3, preprocessor=RepGhostNetImageClassifierPreprocessor(converter)
        ),
        "detector": RepGhostNetDetector(
            backbone, num_classes=3, head_channels=16,
            preprocessor=RepGhostNetObjectDetectorPreprocessor(converter),
        ),
    }
    paths = []
    for name, task in tasks.items():
        path = str(tmp_path / f"{name}.keras")
        task.save(path)
        outputs = task(images, training=False)
        outputs = outputs if isinstance(outputs, dict) else {"outputs": outputs}
        np.savez(path + ".npz", images=images, **{k: np.asarray(v) for k, v in outputs.items()})
        paths.append(path)
    result = subprocess.run(
        [sys.executable, "-c", _LOAD, *paths],
        env=user_environment(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT),
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.split() for line in result.stdout.strip().splitlines()[-2:]]
    assert [line[:3] for line in lines] == [
        ["RepGhostNetImageClassifier", "RepGhostNetImageClassifierPreprocessor",
         "RepGhostNetImageConverter"],
        ["RepGhostNetDetector", "RepGhostNetObjectDetectorPreprocessor",
         "RepGhostNetImageConverter"],
    ]
    assert all(float(line[3]) == 0.0 for line in lines), lines
