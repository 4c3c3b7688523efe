"""A detector (`RepGhostNetDetector`) as a TFLite file with its post-processing: pixels in;
decoded boxes, scores, classes and a count out; builtin ops only, the non-max suppression as
NON_MAX_SUPPRESSION_V5. The post-processing is `postprocess.postprocess`, the one Keras
evaluation uses. The outputs are those of TFLite's SSD post-processing, which MediaPipe Tasks'
ObjectDetector reads: boxes as fractions of the image, then classes, scores and the count, all
float32, in that order.

int8: the network is quantized (uint8 or int8 pixels in, per-channel int8 weights, calibrated
activation ranges as for classifiers); the post-processing stays in float32, so boxes and scores
keep their precision and the NMS runs on TFLite's float kernel.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from repghost_tf import native_logs, quantization
from repghost_tf.detection.metrics import coco_map
from repghost_tf.detection.postprocess import Anchors, PostProcessing, postprocess, trim
from repghost_tf.export.metadata import schema_text
from repghost_tf.export.tflite import ExportError, check_builtin_only
from repghost_tf.litert import make_interpreter, quantize_input

# Name scope of the post-processing ops: their tensors stay float in an int8 file.
_POSTPROCESS = "postprocess"
OUTPUTS = ("boxes", "classes", "scores", "count")  # the file's output order


def convert_detector(
    detector: keras.Model,
    image_size: int,
    settings: PostProcessing = PostProcessing(),
    *,
    quantize: str = "none",
    input_type: str = "float32",
    representative_images: Callable[[], Iterable[np.ndarray]] | None = None,
    ranges: str = "mse",
) -> bytes:
    """A flatbuffer of `detector` at a fixed (1, image_size, image_size, 3) input: outputs
    `boxes` (1, max_detections, 4; ymin, xmin, ymax, xmax as fractions of the image), `classes`
    and `scores` (1, max_detections; zeros past `count`), `count` (1,; float32), in that order.

    quantize="int8" quantizes the network with `input_type` pixels in ("uint8": scale 1, zero
    point 0) over the activation ranges of `representative_images` (a callable returning
    (1, H, W, 3) float32 images; read twice) by `ranges` ("mse" or "minmax").
    """
    if quantize not in ("none", "int8"):
        raise ExportError(f"a detector exports as float32 (none) or int8, not {quantize}")
    if quantize == "int8" and representative_images is None:
        raise ExportError("int8 quantization needs representative images for calibration")
    if quantize == "none" and input_type != "float32":
        raise ExportError(f"a float32 detector takes float32 pixels, not {input_type}")
    anchors = Anchors.of(detector, image_size)

    @tf.function(input_signature=[
        tf.TensorSpec((1, image_size, image_size, 3), tf.float32, name="images")
    ])
    def detect(images):
        outputs = detector(images, training=False)
        with tf.name_scope(_POSTPROCESS):
            found = postprocess(
                anchors, outputs["bbox_regression"][0], outputs["cls_logits"][0], settings
            )
            return {
                "boxes": found["boxes"][None] / image_size,
                "classes": found["classes"][None],
                "scores": found["scores"][None],
                "count": tf.cast(tf.reshape(found["count"], (1,)), tf.float32),
            }

    archive = keras.export.ExportArchive()
    archive.track(detector)
    archive.add_endpoint("serving_default", detect)
    with tempfile.TemporaryDirectory() as saved, native_logs.silenced():
        path = os.path.join(saved, "detector")
        archive.write_out(path, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(path)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "none":
            flatbuffer = converter.convert()
        else:
            # Both halves of keep_float are needed: without ranges the quantizer still quantizes
            # LOGISTIC (fixed int8 output range) and the range-preserving ops after it unless
            # they are denylisted; with the denylist alone, the recorded ranges still change the
            # file's boxes. The outputs take the signature's names ("StatefulPartitionedCall:0").
            flatbuffer = quantization.quantize_flatbuffer(
                converter, representative_images, input_type=input_type,
                output_type="float32", ranges=ranges,
                keep_float=lambda name: name.startswith(
                    (f"{_POSTPROCESS}/", "StatefulPartitionedCall")),
            )
    check_builtin_only(flatbuffer)
    return _outputs_in_order(flatbuffer)


def _outputs_in_order(flatbuffer: bytes) -> bytes:
    """`flatbuffer` with its subgraph's outputs in OUTPUTS' order (the converter sorts them by
    name), where MediaPipe looks for them; the signature names each output by its tensor, so it
    is unchanged."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    (signature,) = model.signatureDefs
    by_name = {schema_text(t.name): t.tensorIndex for t in signature.outputs}
    model.subgraphs[0].outputs = [by_name[name] for name in OUTPUTS]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def tflite_detections(
    flatbuffer: bytes, images: Iterable[np.ndarray], num_threads: int = 1
) -> list[dict[str, np.ndarray]]:
    """The file's detections on each image of `images` (batches of float32 pixels), cut to each
    image's count, with boxes in pixels (yxyx) as Keras gives them."""
    interpreter = make_interpreter(flatbuffer, num_threads=num_threads)
    runner = interpreter.get_signature_runner()
    detail = runner.get_input_details()["images"]
    size = detail["shape"][1]
    found = []
    for batch in images:
        for image in np.asarray(batch, np.float32):
            outputs = runner(images=quantize_input(image[None], detail))
            detections = trim({key: value[0] for key, value in outputs.items()})
            found.append({**detections, "boxes": detections["boxes"] * size})
    return found


def compare_detections(
    truth: list[dict[str, np.ndarray]],
    keras_found: list[dict[str, np.ndarray]],
    tflite_found: list[dict[str, np.ndarray]],
) -> dict:
    """COCO mAP of the file's and the Keras model's detections on the same images, and how
    often they found the same number of objects above the score threshold."""
    keras_map, tflite_map = coco_map(truth, keras_found), coco_map(truth, tflite_found)
    same_count = np.mean([len(a["scores"]) == len(b["scores"])
                          for a, b in zip(keras_found, tflite_found)])
    return {
        "examples": len(truth),
        "keras_map": keras_map["map"],
        "keras_map50": keras_map["map50"],
        "tflite_map": tflite_map["map"],
        "tflite_map50": tflite_map["map50"],
        "map_drop": keras_map["map"] - tflite_map["map"],
        "map50_drop": keras_map["map50"] - tflite_map["map50"],
        "same_count": float(same_count),
    }
