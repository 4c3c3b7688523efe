"""Input pipelines (`datasets`; `repghost_tf.detection.data` for boxes), their preprocessing
(`preprocessing`), folder datasets (`folder`) and the built-in `synthetic_shapes` dataset."""

from repghost_tf.data.datasets import (
    BUILTIN_DATASET,
    FOLDER_PREFIX,
    IMAGENET,
    IMAGENET_MANUAL_FILES,
    DatasetError,
    builder,
    check_dataset,
    class_names,
    check_split,
    default_splits,
    folder,
    is_detection,
    make_dataset,
    num_classes,
    num_examples,
    prepare,
    read_split,
)
from repghost_tf.data.preprocessing import Augmentation, TrainPreprocessing, eval_image

__all__ = [
    "BUILTIN_DATASET",
    "FOLDER_PREFIX",
    "IMAGENET",
    "IMAGENET_MANUAL_FILES",
    "DatasetError",
    "builder",
    "check_dataset",
    "class_names",
    "check_split",
    "default_splits",
    "folder",
    "is_detection",
    "make_dataset",
    "num_classes",
    "num_examples",
    "prepare",
    "read_split",
    "Augmentation",
    "TrainPreprocessing",
    "eval_image",
]
