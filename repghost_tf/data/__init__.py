"""Input pipelines (`datasets`), their preprocessing (`preprocessing`) and the built-in
`synthetic_shapes` dataset."""

from repghost_tf.data.datasets import (
    BUILTIN_DATASET,
    FOLDER_PREFIX,
    IMAGENET,
    IMAGENET_MANUAL_FILES,
    DatasetError,
    builder,
    check_dataset,
    default_splits,
    make_dataset,
    num_classes,
    num_examples,
    prepare,
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
    "default_splits",
    "make_dataset",
    "num_classes",
    "num_examples",
    "prepare",
    "Augmentation",
    "TrainPreprocessing",
    "eval_image",
]
