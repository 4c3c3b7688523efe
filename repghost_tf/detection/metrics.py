"""COCO mAP of a detector's detections against ground truth (`coco_map`, by pycocotools)."""

from __future__ import annotations

import contextlib
import io

import numpy as np

from repghost_tf.detection.data import PADDING


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
