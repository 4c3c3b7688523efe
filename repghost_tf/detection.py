"""What a detector's raw outputs mean: box decoding and non-max suppression
(`postprocess`, the same in Keras evaluation and in the TFLite file), and COCO mAP of
detections against ground truth (`coco_map`, computed by pycocotools).

The post-processing is keras-hub's RetinaNet one, class-agnostic: box deltas decoded on the
anchors, each anchor scored by its most likely class (sigmoid), then one NMS written as
`NonMaxSuppressionV5`, which TFLite runs as the builtin NON_MAX_SUPPRESSION_V5 (keras-hub's NMS
layer would need Flex ops; TFLite_Detection_PostProcess is a custom op).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io

import keras
import numpy as np
import tensorflow as tf

from repghost_tf.data.detection import PADDING


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


def ground_truth(batches) -> list[dict[str, np.ndarray]]:
    """Per image, the boxes (yxyx pixels) and labels of `batches` of (images, targets), padding
    removed."""
    truth = []
    for _, targets in batches:
        for boxes, labels in zip(np.asarray(targets["boxes"]), np.asarray(targets["labels"])):
            keep = labels != PADDING
            truth.append({"boxes": boxes[keep], "labels": labels[keep]})
    return truth


def coco_map(
    truth: list[dict[str, np.ndarray]], detections: list[dict[str, np.ndarray]]
) -> dict[str, float]:
    """COCO mAP@[.5:.95] (`map`) and mAP@.5 (`map50`) of per-image detections against the
    ground truth, by pycocotools; boxes yxyx in pixels."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(truth) != len(detections):
        raise ValueError(f"{len(truth)} images of ground truth, {len(detections)} of detections")
    classes = sorted({int(c) for image in truth for c in image["labels"]})
    annotations, results = [], []
    for image_id, (image, found) in enumerate(zip(truth, detections)):
        for box, label in zip(image["boxes"], image["labels"]):
            y0, x0, y1, x1 = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
            })
        for box, score, label in zip(found["boxes"], found["scores"], found["classes"]):
            y0, x0, y1, x1 = (float(v) for v in box)
            results.append([image_id, x0, y0, x1 - x0, y1 - y0, float(score), int(label)])
    if not annotations or not results:
        return {"map": 0.0, "map50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco = COCO()
        coco.dataset = {
            "images": [{"id": i} for i in range(len(truth))],
            "annotations": annotations,
            "categories": [{"id": c} for c in classes],
        }
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(np.asarray(results, np.float64)), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {"map": max(float(evaluation.stats[0]), 0.0),
            "map50": max(float(evaluation.stats[1]), 0.0)}
