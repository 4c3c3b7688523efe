"""TFLite metadata (`repghost_tf.export.metadata`) and probabilities out: what MediaPipe Tasks
reads from our files. The metadata is read back with MediaPipe's own schema classes and the files
are loaded by its `ImageClassifier`, which must return our LiteRT outputs with the dataset's
label names. The trained tiny run's files are tests/test_export_int8.py's (`-m slow`)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from helpers import random_images

from repghost_tf.export import metadata, pipeline, tflite
from repghost_tf.export.tasks import check_labels
from repghost_tf.litert import make_interpreter, run_interpreter

SIZE = 32


def _schema():
    return pytest.importorskip("mediapipe.tasks.metadata.metadata_schema_py_generated")


def _read(flatbuffer: bytes):
    schema = _schema()
    block = metadata.read_metadata(flatbuffer)
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(block, 0)
    return schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(block, 0))


@pytest.fixture(scope="module")
def model():
    """A small conv net: what the metadata is attached to does not matter, only that it runs."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(16, 3, strides=2)(x))
    return keras.Model(inputs, keras.layers.Dense(4)(x), name="tiny")


def test_classifier_metadata_reads_back_with_mediapipes_schema():
    info = metadata.ModelInfo("repghostnet_050", "a classifier", "7", "someone", "MIT")
    block = metadata.model_metadata(info, [metadata.image_input(48)],
                                    metadata.classifier_outputs("labels.txt", True))
    schema = _schema()
    read = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(block, 0))
    assert (read.name, read.description, read.version, read.author, read.license) == (
        b"repghostnet_050", b"a classifier", b"7", b"someone", b"MIT")
    assert read.minParserVersion == b"1.0.0"
    (subgraph,) = read.subgraphMetadata
    (image,) = subgraph.inputTensorMetadata
    content = image.content
    assert content.contentPropertiesType == schema.ContentProperties.ImageProperties
    assert content.contentProperties.colorSpace == schema.ColorSpaceType.RGB
    assert (content.contentProperties.defaultSize.width,
            content.contentProperties.defaultSize.height) == (48, 48)
    (unit,) = image.processUnits
    assert unit.optionsType == schema.ProcessUnitOptions.NormalizationOptions
    assert list(unit.options.mean) == [0.0] and list(unit.options.std) == [1.0]
    assert list(image.stats.min) == [0.0] and list(image.stats.max) == [255.0]
    (output,) = subgraph.outputTensorMetadata
    assert output.name == b"probability"
    assert output.content.contentPropertiesType == schema.ContentProperties.FeatureProperties
    assert list(output.stats.min) == [0.0] and list(output.stats.max) == [1.0]
    (labels,) = output.associatedFiles
    assert labels.name == b"labels.txt"
    assert labels.type == schema.AssociatedFileType.TENSOR_AXIS_LABELS


def test_detector_metadata_names_mediapipes_four_outputs():
    block = metadata.model_metadata(metadata.ModelInfo("d", "a detector"),
                                    [metadata.image_input(128)],
                                    metadata.detector_outputs("labels.txt"))
    schema = _schema()
    read = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(block, 0))
    outputs = read.subgraphMetadata[0].outputTensorMetadata
    assert [o.name for o in outputs] == [b"location", b"category", b"score",
                                         b"number of detections"]
    box = outputs[0].content
    assert box.contentPropertiesType == schema.ContentProperties.BoundingBoxProperties
    # (ymin, xmin, ymax, xmax): left is element 1, top 0, right 3, bottom 2.
    assert list(box.contentProperties.index) == [1, 0, 3, 2]
    assert box.contentProperties.type == schema.BoundingBoxType.BOUNDARIES
    assert box.contentProperties.coordinateType == schema.CoordinateType.RATIO
    assert outputs[1].associatedFiles[0].name == b"labels.txt"
    assert outputs[1].associatedFiles[0].type == schema.AssociatedFileType.TENSOR_VALUE_LABELS
    assert (box.range.min, box.range.max) == (2, 2)
    assert outputs[0].associatedFiles is None


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_metadata_changes_no_output(model, quantize):
    images = random_images(4, SIZE, SIZE, seed=3)
    plain = tflite.convert(model, quantize, image_size=SIZE, io_type="uint8" if quantize == "int8"
                           else "float32", representative_data=images)
    block = metadata.model_metadata(metadata.ModelInfo("m", "d"), [metadata.image_input(SIZE)],
                                    metadata.classifier_outputs("labels.txt", False))
    labels = b"a\nb\nc\nd\n"
    tagged = metadata.with_metadata(plain, block, {"labels.txt": labels})
    assert metadata.read_metadata(plain) is None
    assert metadata.read_metadata(tagged) == block
    assert metadata.associated_files(tagged) == {"labels.txt": labels}
    # Written twice, the file keeps one metadata block.
    assert metadata.read_metadata(metadata.with_metadata(tagged, b"M001", {})) == b"M001"
    outputs = [run_interpreter(make_interpreter(f), images) for f in (plain, tagged)]
    np.testing.assert_array_equal(*outputs)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """export_tflite.py on the small conv net's .keras file, as it is and with --logits and the
    --metadata_* flags."""
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    files = {}
    for name, options in {"default": {}, "logits": dict(
            logits=True, metadata_description="my shapes", metadata_version="2.1",
            metadata_author="me", metadata_license="Apache-2.0")}.items():
        written = pipeline.export(pipeline.ExportOptions(
            model=str(path), output_dir=str(tmp_path_factory.mktemp(name)), verify=False,
            **options), log=lambda line: None)
        files[name] = {path.rsplit("/", 1)[-1]: open(path, "rb").read() for path in written}
    return files


def test_classifier_files_output_probabilities_unless_logits(exported):
    images = random_images(3, SIZE, SIZE, seed=5)
    probabilities = exported["default"]["tiny_float32.tflite"]
    logits = exported["logits"]["tiny_float32.tflite"]
    assert tflite.op_histogram(probabilities)["SOFTMAX"] == 1
    assert "SOFTMAX" not in tflite.op_histogram(logits)
    expected = run_interpreter(make_interpreter(logits), images).astype(np.float64)
    expected = np.exp(expected - expected.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    got = run_interpreter(make_interpreter(probabilities), images)
    assert np.abs(got - expected).max() < 1e-6
    assert _read(probabilities).subgraphMetadata[0].outputTensorMetadata[0].name == b"probability"
    assert _read(logits).subgraphMetadata[0].outputTensorMetadata[0].name == b"logits"
    assert json.loads(exported["default"]["tiny_float32.json"])["output"] == (
        "probabilities")
    assert json.loads(exported["logits"]["tiny_float32.json"])["output"] == "logits"


def test_metadata_says_what_the_file_is_and_takes_the_flags(exported):
    default = _read(exported["default"]["tiny_float32.tflite"])
    assert (default.name, default.version, default.author, default.license) == (
        b"tiny", b"1", b"repghost-tf", b"MIT")
    assert default.description == b"tiny image classifier; 32x32 RGB input, pixels 0-255; float32"
    flagged = _read(exported["logits"]["tiny_float32.tflite"])
    assert (flagged.name, flagged.description, flagged.version, flagged.author,
            flagged.license) == (b"tiny", b"my shapes", b"2.1", b"me", b"Apache-2.0")


def test_metadata_text_must_be_printable(tmp_path):
    with pytest.raises(tflite.ExportError, match="--metadata_author must be printable text"):
        pipeline.export(pipeline.ExportOptions(
            model="repghostnet_050", classes=4, image_size=SIZE, output_dir=str(tmp_path),
            verify=False, metadata_author="me\x00"), log=lambda line: None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("labels, message", [
    (["cat", " ", "dog"], "class 1 has an empty label"),
    (["cat", "dog", "cat"], "the label 'cat' names two classes"),
])
def test_labels_an_app_cannot_tell_apart_are_refused(labels, message):
    with pytest.raises(tflite.ExportError, match=message):
        check_labels(labels)
