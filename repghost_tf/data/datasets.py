"""Datasets: any TFDS image-classification dataset, a folder of class sub-folders
(`repghost_tf.data.folder`), or the built-in `synthetic_shapes`, as batches of (float32 RGB in
[0, 255], int32 label); the models normalise pixels themselves. Preprocessing is in
`repghost_tf.data.preprocessing`; detection datasets (coco, voc, `synthetic_shapes/detection`) in
`repghost_tf.detection.data`.
"""

from __future__ import annotations

import os

import tensorflow as tf
import tensorflow_datasets as tfds

from repghost_tf.data import synthetic_shapes  # noqa: F401  (registers the built-in builder with TFDS)
from repghost_tf.data.folder import FolderError, ImageFolder, open_folder
from repghost_tf.data.preprocessing import Augmentation, TrainPreprocessing, eval_image

BUILTIN_DATASET = "synthetic_shapes"
FOLDER_PREFIX = "folder:"
IMAGENET = "imagenet2012"
IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
# Splits of builders whose metadata may not be on disk yet (e.g. under tfds.testing.mock_data).
_KNOWN_SPLITS = {IMAGENET: {"train", "validation", "test"}}
# Datasets whose test split has no labels (their validation split is scored instead).
_UNLABELLED_TEST = (IMAGENET, "coco", "coco/2014", "coco/2017", "voc/2012")


class DatasetError(ValueError):
    """A dataset that cannot be used as asked; the message says what to do."""


def folder(name: str) -> ImageFolder | None:
    """The folder dataset "folder:/path" names (checked once per process); None for others."""
    if not name.startswith(FOLDER_PREFIX):
        return None
    root = name[len(FOLDER_PREFIX):]
    if not os.path.isdir(root):
        raise DatasetError(f"{name}: {root} is not a directory.")
    try:
        return open_folder(os.path.abspath(root))
    except FolderError as error:
        raise DatasetError(str(error)) from error


def builder(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """The TFDS builder behind a dataset name (not a folder dataset's: see `folder`)."""
    if name.startswith(FOLDER_PREFIX):
        raise DatasetError(f"{name} is a folder dataset, not a TFDS one.")
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise DatasetError(
            f"Unknown dataset {name!r}: give a TFDS name (e.g. {BUILTIN_DATASET}, imagenet2012, "
            f"imagenette, tf_flowers) or {FOLDER_PREFIX}/path/to/images."
        ) from error


def is_detection(name: str, data_dir: str | None = None) -> bool:
    """Whether `name` is laid out as TFDS's coco and voc are: image, objects/bbox, objects/label."""
    if folder(name):
        return False
    features = builder(name, data_dir).info.features
    objects = features["objects"] if "objects" in features else {}
    return ("image" in features and "bbox" in objects and "label" in objects
            and isinstance(objects["label"], tfds.features.ClassLabel))


def check_dataset(
    name: str,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    task: str = "classification",
) -> None:
    """Raises DatasetError, with what to do, when `name` cannot be prepared or does not fit
    `task` (classification: image and label; detection: image and objects with bbox and label)."""
    if folder(name) and task != "detection":
        return
    source = builder(name, data_dir)
    features = source.info.features
    if task == "detection":
        if not is_detection(name, data_dir):
            raise DatasetError(
                f"{name} is not an object detection dataset (image, objects/bbox, objects/label "
                f"as in coco/2017 and voc/2007); the built-in one is {BUILTIN_DATASET}/detection."
            )
    elif not ("image" in features and "label" in features
              and isinstance(features["label"], tfds.features.ClassLabel)):
        raise DatasetError(f"{name} is not an image classification dataset (image and label).")
    if name == IMAGENET and not _is_prepared(source):
        manual = manual_dir or os.path.join(source.data_dir_root, "downloads", "manual")
        missing = [f for f in IMAGENET_MANUAL_FILES if not os.path.isfile(os.path.join(manual, f))]
        if missing:
            raise DatasetError(
                f"imagenet2012 needs {' and '.join(IMAGENET_MANUAL_FILES)} from image-net.org in "
                f"{manual} (or pass --manual_dir); missing: {', '.join(missing)}."
            )


def _is_prepared(source: tfds.core.DatasetBuilder) -> bool:
    return source.is_prepared()


def prepare(
    name: str,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    task: str = "classification",
):
    """Checks the dataset, then downloads/generates it unless already done; returns its builder
    (a folder dataset: its `ImageFolder`)."""
    check_dataset(name, data_dir, manual_dir, task)
    if folder(name):
        return folder(name)
    source = builder(name, data_dir)
    if not _is_prepared(source):
        source.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    return source


def num_classes(name: str, data_dir: str | None = None) -> int:
    """Number of classes of a dataset (of its objects, for detection), read from its metadata."""
    return len(class_names(name, data_dir))


def class_names(name: str, data_dir: str | None = None) -> list[str]:
    """The class names of a dataset (of its objects, for detection), in label order."""
    if folder(name):
        return list(folder(name).class_names)
    features = builder(name, data_dir).info.features
    return list((features["label"] if "label" in features else features["objects"]["label"]).names)


def num_examples(name: str, split: str, data_dir: str | None = None) -> int:
    """Examples in `split`, sub-splits like "train[:90%]" included; 0 without split metadata."""
    if folder(name):
        return len(folder(name).files.get(split, ()))
    splits = builder(name, data_dir).info.splits
    return splits[split].num_examples if splits.keys() else 0


def check_split(
    name: str, split: str, data_dir: str | None = None, task: str = "classification"
) -> None:
    """Raises DatasetError when the split expression `split` (`train`, `train[:10%]`,
    `train+validation`) names a split that dataset `name` (prepared here if needed) lacks."""
    source = prepare(name, data_dir, task=task)
    known = set(source.files) if isinstance(source, ImageFolder) else set(source.info.splits)
    for part in split.split("+"):
        base = part.split("[")[0].strip()
        if base not in known:
            raise DatasetError(f"{name} has no {base!r} split (it has {', '.join(sorted(known))})")


def default_splits(name: str, data_dir: str | None = None) -> tuple[str, str, str | None]:
    """(train, validation, test) split names for a dataset; test is None when there is none.

    The validation split picks the best model; the test split is scored once at the end.
    imagenet2012's, coco's and voc/2012's test splits have no labels, so their validation split
    is scored instead. A folder dataset without test/ has no test split.
    """
    if folder(name):
        return "train", "validation", "test" if "test" in folder(name).files else None
    splits = set(builder(name, data_dir).info.splits.keys()) or _KNOWN_SPLITS.get(name, set())
    if "train" not in splits:
        raise DatasetError(f"{name} has no train split (it has {', '.join(sorted(splits))}).")
    evaluation = [s for s in ("validation", "val", "test") if s in splits]
    if not evaluation:
        return "train[:90%]", "train[90%:]", None
    test = None if name.split(":")[0] in _UNLABELLED_TEST else evaluation[-1]
    return "train", evaluation[0], test if test != evaluation[0] else None


def make_dataset(
    name: str,
    split: str,
    *,
    image_size: int,
    batch_size: int,
    training: bool,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    augmentation: Augmentation | None = None,
    input_context: tf.distribute.InputContext | None = None,
    shuffle_buffer: int = 10_000,
    seed: int | None = None,
    repeat: bool = False,
    deterministic: bool = False,
) -> tf.data.Dataset:
    """Batches of (float32 images in [0, 255], int32 labels) from `split` of dataset `name`.

    training=True: shuffled, repeated forever, augmented, full batches; in a non-deterministic
    order unless `deterministic` (with a `seed`, the same batches on every run).
    training=False: one pass in order, resized to image_size / 0.875 and centre-cropped;
    repeat=True makes that pass endless in full batches, for evaluation under tf.distribute,
    whose caller bounds it with a step count (Keras mis-counts metrics at the end of a finite
    distributed dataset).
    With `input_context` (tf.distribute), the dataset is this input pipeline's shard.
    """
    dataset = read_split(name, split, training=training, data_dir=data_dir,
                         manual_dir=manual_dir, input_context=input_context, seed=seed)
    dataset = dataset.map(lambda example: (example["image"], example["label"]))

    if training:
        preprocess = TrainPreprocessing(image_size, augmentation or Augmentation())
        dataset = dataset.shuffle(shuffle_buffer, seed=seed).repeat()
        dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = dataset.map(
            lambda encoded, label: (eval_image(encoded, image_size), tf.cast(label, tf.int32)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return batch(dataset, batch_size, training=training, repeat=repeat,
                 deterministic=deterministic)


def batch(
    dataset: tf.data.Dataset, batch_size: int, *, training: bool, repeat: bool,
    deterministic: bool,
) -> tf.data.Dataset:
    """Preprocessed examples in batches, as `make_dataset` describes them: full batches when
    training (the data repeats already) or with `repeat` (an endless evaluation pass); ordered
    unless training without `deterministic`; prefetched."""
    if repeat and not training:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=training or repeat)
    options = tf.data.Options()
    options.deterministic = deterministic or not training
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def read_split(
    name: str,
    split: str,
    *,
    training: bool,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    input_context: tf.distribute.InputContext | None = None,
    seed: int | None = None,
    task: str = "classification",
) -> tf.data.Dataset:
    """The examples of `split` (images still encoded), files shuffled when `training`; with
    `input_context`, this input pipeline's shard (by file where there are enough files)."""
    source = prepare(name, data_dir, manual_dir, task)
    pipelines = input_context.num_input_pipelines if input_context else 1
    if isinstance(source, ImageFolder):
        dataset = source.dataset(split)
        if pipelines > 1:
            dataset = dataset.shard(pipelines, input_context.input_pipeline_id)
        return dataset.shuffle(len(source.files[split]), seed=seed) if training else dataset
    shard_files = pipelines > 1 and _num_shards(source, split) >= pipelines
    read_config = tfds.ReadConfig(
        shuffle_seed=seed,
        input_context=input_context if shard_files else None,
    )
    dataset = source.as_dataset(
        split=split,
        shuffle_files=training,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=read_config,
        as_supervised=False,
    )
    if pipelines > 1 and not shard_files:
        dataset = dataset.shard(pipelines, input_context.input_pipeline_id)
    return dataset


def _num_shards(source: tfds.core.DatasetBuilder, split: str) -> int:
    try:
        return len(source.info.splits[split].file_instructions)
    except (KeyError, ValueError, TypeError):
        return 1
