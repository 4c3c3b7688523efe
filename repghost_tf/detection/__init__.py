"""Object detection, in one place: the detector (`detector`: `RepGhostNetDetector` and its heads,
on keras-hub), its input pipeline (`data`: coco / voc-layout TFDS datasets as pixel boxes), what
its raw outputs mean (`postprocess`: box decoding and NMS, the same in Keras and in the TFLite
file), how it is scored (`metrics`: COCO mAP) and its TFLite file (`export`).

`detector` needs keras-hub, and `export` the converter; import them by name. The rest is here:
"""

from repghost_tf.detection.data import PADDING, make_detection_dataset
from repghost_tf.detection.metrics import coco_map, ground_truth
from repghost_tf.detection.postprocess import (
    Anchors,
    PostProcessing,
    keras_detections,
    postprocess,
    trim,
)

__all__ = [
    "PADDING",
    "make_detection_dataset",
    "coco_map",
    "ground_truth",
    "Anchors",
    "PostProcessing",
    "keras_detections",
    "postprocess",
    "trim",
]
