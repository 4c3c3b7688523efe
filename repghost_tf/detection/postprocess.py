"""What a detector's raw outputs mean: box decoding and non-max suppression (`postprocess`, the
same in Keras evaluation and in the TFLite file).

The post-processing is keras-hub's RetinaNet one, class-agnostic: box deltas decoded on the
anchors, each anchor scored by its most likely class (sigmoid), then one NMS written as
`NonMaxSuppressionV5`, which TFLite runs as the builtin NON_MAX_SUPPRESSION_V5 (keras-hub's NMS
layer would need Flex ops; TFLite_Detection_PostProcess is a custom op).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf



@dataclasses.dataclass(frozen=True)
class PostProcessing:
    """NMS settings. The low score threshold keeps what COCO mAP needs; apps filter higher."""

    max_detections: int = 100
    iou_threshold: float = 0.5
    score_threshold: float = 0.05


@dataclasses.dataclass(frozen=True)
class Anchors:
    """A detector's anchors at one square input size, all levels, as constants for a graph."""

    boxes: np.ndarray
    bounding_box_format: str
    image_size: int

    @classmethod
    def of(cls, detector: keras.Model, image_size: int) -> Anchors:
        generator = detector.anchor_generator
        levels = generator(np.zeros((image_size, image_size, 3), np.float32))
        boxes = np.concatenate([np.asarray(level) for level in levels.values()])
        return cls(boxes.astype(np.float32), generator.bounding_box_format, image_size)


def postprocess(
    anchors: Anchors,
    bbox_regression: tf.Tensor,
    cls_logits: tf.Tensor,
    settings: PostProcessing = PostProcessing(),
) -> dict[str, tf.Tensor]:
    """Detections of one image from its raw outputs ((A, 4) deltas, (A, C) logits): `boxes`
    (max_detections, 4; yxyx in pixels), `scores`, `classes` (float) and `count` (scalar int32);
    rows past `count` are zeros."""
    boxes = keras.utils.bounding_boxes.decode_deltas_to_boxes(
        anchors=tf.constant(anchors.boxes),
        boxes_delta=bbox_regression[None],
        encoded_format="center_xywh",
        anchor_format=anchors.bounding_box_format,
        box_format="yxyx",
        image_shape=(anchors.image_size, anchors.image_size, 3),
    )[0]
    class_scores = tf.sigmoid(cls_logits)
    scores = tf.reduce_max(class_scores, axis=-1)
    indices, _, count = tf.raw_ops.NonMaxSuppressionV5(
        boxes=boxes, scores=scores, max_output_size=settings.max_detections,
        iou_threshold=settings.iou_threshold, score_threshold=settings.score_threshold,
        soft_nms_sigma=0.0, pad_to_max_output_size=True,
    )
    valid = tf.range(settings.max_detections) < count
    return {
        "boxes": tf.where(valid[:, None], tf.gather(boxes, indices), 0.0),
        "scores": tf.where(valid, tf.gather(scores, indices), 0.0),
        "classes": tf.where(
            valid, tf.cast(tf.argmax(tf.gather(class_scores, indices), -1), tf.float32), 0.0
        ),
        "count": count,
    }


def keras_detections(
    detector: keras.Model,
    batches,
    image_size: int,
    settings: PostProcessing = PostProcessing(),
) -> list[dict[str, np.ndarray]]:
    """Detections of the Keras `detector` on each image of `batches` (of images, or of (images,
    targets)): one dict of numpy arrays per image, cut to its count."""
    anchors = Anchors.of(detector, image_size)

    @tf.function(reduce_retracing=True)
    def detect(images):
        outputs = detector(images, training=False)
        return tf.map_fn(
            lambda raw: postprocess(anchors, raw[0], raw[1], settings),
            (outputs["bbox_regression"], outputs["cls_logits"]),
            fn_output_signature={
                "boxes": tf.float32, "scores": tf.float32, "classes": tf.float32,
                "count": tf.int32,
            },
        )

    detections = []
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        found = {key: value.numpy() for key, value in detect(tf.constant(images)).items()}
        for index in range(len(found["count"])):
            detections.append(trim({key: value[index] for key, value in found.items()}))
    return detections


def trim(detections: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One image's padded detections cut to its count."""
    count = int(np.asarray(detections["count"]).reshape(()))
    return {key: np.asarray(detections[key])[:count] for key in ("boxes", "scores", "classes")}
