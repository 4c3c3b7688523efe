"""A detector (`repghost_tf.hub.RepGhostNetDetector`) as a TFLite file with its post-processing:
pixels in; decoded boxes, scores, classes and a count out; builtin ops only, the non-max
suppression as NON_MAX_SUPPRESSION_V5.

The post-processing is keras-hub's (`NonMaxSuppression`): box deltas decoded on the anchors,
each anchor scored by its most likely class (sigmoid), then one class-agnostic non-max
suppression. keras-hub's own NMS layer would need Flex ops, and TFLite_Detection_PostProcess is
a custom op; `tf.image.non_max_suppression_padded` is a builtin.
"""

from __future__ import annotations

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from repghost_tf import native_logs
from repghost_tf.export.tflite import check_builtin_only


def convert_detector(
    detector: keras.Model,
    image_size: int,
    *,
    max_detections: int = 100,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
) -> bytes:
    """A float32 flatbuffer of `detector` at a fixed (1, image_size, image_size, 3) input:
    outputs `boxes` (1, max_detections, 4; yxyx in pixels), `scores` and `classes`
    (1, max_detections; padded past `count` with zeros), `count` (1,)."""
    shape = (image_size, image_size, 3)
    anchors = np.concatenate(
        [np.asarray(level) for level in detector.anchor_generator(np.zeros(shape)).values()]
    )

    @tf.function(input_signature=[tf.TensorSpec((1, *shape), tf.float32, name="images")])
    def detect(images):
        outputs = detector(images, training=False)
        boxes = keras.utils.bounding_boxes.decode_deltas_to_boxes(
            anchors=tf.constant(anchors, tf.float32),
            boxes_delta=outputs["bbox_regression"],
            encoded_format="center_xywh",
            anchor_format=detector.anchor_generator.bounding_box_format,
            box_format="yxyx",
            image_shape=shape,
        )[0]
        class_scores = tf.sigmoid(outputs["cls_logits"][0])
        scores = tf.reduce_max(class_scores, axis=-1)
        indices, _, count = tf.raw_ops.NonMaxSuppressionV5(
            boxes=boxes, scores=scores, max_output_size=max_detections,
            iou_threshold=iou_threshold, score_threshold=score_threshold, soft_nms_sigma=0.0,
            pad_to_max_output_size=True,
        )
        valid = tf.range(max_detections) < count
        return {
            "boxes": tf.where(valid[:, None], tf.gather(boxes, indices), 0.0)[None],
            "scores": tf.where(valid, tf.gather(scores, indices), 0.0)[None],
            "classes": tf.where(
                valid, tf.cast(tf.argmax(tf.gather(class_scores, indices), -1), tf.float32), 0.0
            )[None],
            "count": tf.reshape(count, (1,)),
        }

    archive = keras.export.ExportArchive()
    archive.track(detector)
    archive.add_endpoint("serving_default", detect)
    with tempfile.TemporaryDirectory() as saved, native_logs.silenced():
        path = os.path.join(saved, "detector")
        archive.write_out(path, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(path)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        flatbuffer = converter.convert()
    check_builtin_only(flatbuffer)
    return flatbuffer
