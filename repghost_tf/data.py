"""Input pipelines: any TFDS image-classification dataset, a folder of class sub-folders, or the
built-in `synthetic_shapes`, with the ImageNet training and evaluation preprocessing.

Images come out as float32 RGB in [0, 255] (the models normalise them themselves) and labels as
int32 class ids. Training images are decoded with `decode_and_crop_jpeg` where the source is JPEG,
so only the random crop is ever decoded.
"""

from __future__ import annotations

import dataclasses
import math
import os

import tensorflow as tf
import tensorflow_datasets as tfds

import repghost_tf.datasets  # noqa: F401  (registers the built-in builder with TFDS)

BUILTIN_DATASET = "synthetic_shapes"
FOLDER_PREFIX = "folder:"
IMAGENET = "imagenet2012"
IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
# Splits of builders whose metadata may not be on disk yet (e.g. under tfds.testing.mock_data).
_KNOWN_SPLITS = {IMAGENET: {"train", "validation", "test"}}
EVAL_CROP_FRACTION = 0.875  # 224 / 256
# timm fills RandAugment's empty borders and erased pixels in terms of the ImageNet statistics.
_MEAN_PIXEL = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_STD_PIXEL = (0.229 * 255, 0.224 * 255, 0.225 * 255)


class DatasetError(ValueError):
    """A dataset that cannot be used as asked; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training augmentation, defaulting to the paper's recipe (without RandAugment).

    As in timm, colour jitter is skipped when RandAugment is on.
    """

    min_crop_scale: float = 0.08
    color_jitter: float = 0.4
    randaugment_magnitude: float = 0.0
    randaugment_std: float = 0.5
    random_erasing: float = 0.2


def builder(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """The TFDS builder behind a dataset name, "folder:/path" included."""
    if name.startswith(FOLDER_PREFIX):
        root = name[len(FOLDER_PREFIX):]
        if not os.path.isdir(root):
            raise DatasetError(f"{name}: {root} is not a directory.")
        return tfds.ImageFolder(root)
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise DatasetError(
            f"Unknown dataset {name!r}: give a TFDS name (e.g. {BUILTIN_DATASET}, imagenet2012, "
            f"imagenette, tf_flowers) or {FOLDER_PREFIX}/path/to/images."
        ) from error


def check_dataset(name: str, data_dir: str | None = None, manual_dir: str | None = None) -> None:
    """Raises DatasetError, with what to do, when `name` cannot be prepared or is no classifier."""
    source = builder(name, data_dir)
    features = source.info.features
    if not ("image" in features and "label" in features
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
    return isinstance(source, tfds.ImageFolder) or source.is_prepared()


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None):
    """Checks the dataset, then downloads/generates it unless already done; returns its builder."""
    check_dataset(name, data_dir, manual_dir)
    source = builder(name, data_dir)
    if not _is_prepared(source):
        source.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    return source


def num_classes(name: str, data_dir: str | None = None) -> int:
    """Number of classes of a dataset, read from its metadata."""
    return builder(name, data_dir).info.features["label"].num_classes


def num_examples(name: str, split: str, data_dir: str | None = None) -> int:
    """Examples in `split`, sub-splits like "train[:90%]" included; 0 without split metadata."""
    splits = builder(name, data_dir).info.splits
    return splits[split].num_examples if splits.keys() else 0


def default_splits(name: str, data_dir: str | None = None) -> tuple[str, str, str | None]:
    """(train, validation, test) split names for a dataset; test is None when there is none.

    The validation split picks the best model; the test split is scored once at the end.
    imagenet2012's test split has no labels, so its validation split is its test split.
    """
    splits = set(builder(name, data_dir).info.splits.keys()) or _KNOWN_SPLITS.get(name, set())
    if "train" not in splits:
        raise DatasetError(f"{name} has no train split (it has {', '.join(sorted(splits))}).")
    evaluation = [s for s in ("validation", "val", "test") if s in splits]
    if not evaluation:
        if name.startswith(FOLDER_PREFIX):
            raise DatasetError(
                f"{name} needs a val/ (or test/) sub-folder next to train/, each holding one "
                "sub-folder per class."
            )
        return "train[:90%]", "train[90%:]", None
    test = None if name == IMAGENET else evaluation[-1]
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
) -> tf.data.Dataset:
    """Batches of (float32 images in [0, 255], int32 labels) from `split` of dataset `name`.

    training=True: shuffled, repeated forever, augmented, non-deterministic order, full batches.
    training=False: one pass in order, resized to image_size / 0.875 and centre-cropped;
    repeat=True makes that pass endless in full batches, for evaluation under tf.distribute,
    whose caller bounds it with a step count (Keras mis-counts metrics at the end of a finite
    distributed dataset).
    With `input_context` (tf.distribute), the dataset is this input pipeline's shard.
    """
    source = prepare(name, data_dir, manual_dir)
    pipelines = input_context.num_input_pipelines if input_context else 1
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
    dataset = dataset.map(lambda example: (example["image"], example["label"]))

    if training:
        preprocess = TrainPreprocessing(image_size, augmentation or Augmentation())
        dataset = dataset.shuffle(shuffle_buffer, seed=seed).repeat()
        dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.batch(batch_size, drop_remainder=True)
    else:
        dataset = dataset.map(
            lambda encoded, label: (eval_image(encoded, image_size), tf.cast(label, tf.int32)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        if repeat:
            dataset = dataset.repeat()
        dataset = dataset.batch(batch_size, drop_remainder=repeat)
    options = tf.data.Options()
    options.deterministic = not training
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _num_shards(source: tfds.core.DatasetBuilder, split: str) -> int:
    try:
        return len(source.info.splits[split].file_instructions)
    except (KeyError, ValueError, TypeError):
        return 1


def _decode(encoded: tf.Tensor) -> tf.Tensor:
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def eval_image(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes, resizes the short side to image_size / 0.875 and centre-crops image_size."""
    image = _decode(encoded)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    resize = math.floor(image_size / EVAL_CROP_FRACTION + 0.5)
    scale = resize / tf.reduce_min(shape)
    new_shape = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, new_shape, method="bicubic", antialias=True)
    top = (new_shape[0] - image_size) // 2
    left = (new_shape[1] - image_size) // 2
    image = image[top:top + image_size, left:left + image_size]
    image.set_shape([image_size, image_size, 3])
    return tf.clip_by_value(image, 0.0, 255.0)


class TrainPreprocessing:
    """Per-example training transform: random-resized-crop (decoding only the crop for JPEG),
    random interpolation, flip, then colour jitter or RandAugment, then random erasing.
    Built once; called by `Dataset.map`.
    """

    def __init__(self, image_size: int, augmentation: Augmentation):
        self.image_size = image_size
        self.augmentation = augmentation
        self.randaugment = (
            RandAugment(augmentation.randaugment_magnitude, augmentation.randaugment_std)
            if augmentation.randaugment_magnitude > 0
            else None
        )

    def __call__(self, encoded: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = self.random_resized_crop(encoded)
        image = tf.image.random_flip_left_right(image)
        if self.randaugment is not None:
            image = self.randaugment(image)
        elif self.augmentation.color_jitter > 0:
            image = color_jitter(image, self.augmentation.color_jitter)
        if self.augmentation.random_erasing > 0:
            image = random_erasing(image, self.augmentation.random_erasing)
        return image, tf.cast(label, tf.int32)

    def random_resized_crop(self, encoded: tf.Tensor) -> tf.Tensor:
        """Crop of 8%-100% of the area (by default) with aspect 3/4-4/3, then bilinear or bicubic
        resize to image_size."""

        def crop_window(shape):
            begin, size, _ = tf.image.sample_distorted_bounding_box(
                shape,
                bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
                min_object_covered=0.0,
                aspect_ratio_range=(3 / 4, 4 / 3),
                area_range=(self.augmentation.min_crop_scale, 1.0),
                max_attempts=10,
                use_image_if_no_bounding_boxes=True,
            )
            return begin, size

        def from_jpeg():
            begin, size = crop_window(tf.image.extract_jpeg_shape(encoded))
            window = tf.stack([begin[0], begin[1], size[0], size[1]])
            return tf.image.decode_and_crop_jpeg(encoded, window, channels=3)

        def from_other():
            image = _decode(encoded)
            begin, size = crop_window(tf.shape(image))
            return tf.slice(image, begin, size)

        image = tf.cond(tf.io.is_jpeg(encoded), from_jpeg, from_other)
        size = [self.image_size, self.image_size]
        image = tf.cond(
            tf.random.uniform([]) < 0.5,
            lambda: tf.image.resize(image, size, method="bilinear"),
            lambda: tf.image.resize(image, size, method="bicubic"),
        )
        image.set_shape([self.image_size, self.image_size, 3])
        return tf.clip_by_value(image, 0.0, 255.0)


def _grayscale(image: tf.Tensor) -> tf.Tensor:
    return tf.image.rgb_to_grayscale(image)


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """PIL.ImageEnhance: factor 0 gives `degenerate`, 1 the image, >1 extrapolates."""
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def color_jitter(image: tf.Tensor, strength: float) -> tf.Tensor:
    """Brightness, contrast and saturation, each by a factor in [1 - s, 1 + s], in random order
    (torchvision's ColorJitter(s, s, s) as timm uses it)."""

    def factor():
        return tf.random.uniform([], 1 - strength, 1 + strength)

    def brightness(x):
        return _blend(tf.zeros_like(x), x, factor())

    def contrast(x):
        return _blend(tf.reduce_mean(_grayscale(x)) * tf.ones_like(x), x, factor())

    def saturation(x):
        return _blend(_grayscale(x) * tf.ones_like(x), x, factor())

    for index in tf.unstack(tf.random.shuffle(tf.range(3))):
        image = tf.switch_case(
            index, [lambda: brightness(image), lambda: contrast(image), lambda: saturation(image)]
        )
    return image


def random_erasing(image: tf.Tensor, probability: float) -> tf.Tensor:
    """timm's RandomErasing(mode="pixel"): with `probability`, one rectangle of 2%-33% of the
    area, log-uniform aspect 0.3-3.3, filled with per-pixel normal noise in normalised space."""
    height, width = image.shape[0], image.shape[1]
    area = tf.random.uniform([], 0.02, 1 / 3) * height * width
    aspect = tf.exp(tf.random.uniform([], math.log(0.3), math.log(1 / 0.3)))
    erase_h = tf.minimum(tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32), height)
    erase_w = tf.minimum(tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32), width)
    top = tf.random.uniform([], 0, height - erase_h + 1, dtype=tf.int32)
    left = tf.random.uniform([], 0, width - erase_w + 1, dtype=tf.int32)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = (rows >= top) & (rows < top + erase_h) & (cols >= left) & (cols < left + erase_w)
    inside &= tf.random.uniform([]) < probability
    noise = tf.constant(_MEAN_PIXEL) + tf.constant(_STD_PIXEL) * tf.random.normal(tf.shape(image))
    return tf.where(inside[..., None], tf.clip_by_value(noise, 0.0, 255.0), image)


class RandAugment:
    """timm's rand-m{magnitude}-mstd{std}: two of fifteen operations per image, each applied with
    probability 0.5, at a magnitude drawn from N(magnitude, std) clipped to [0, 10]."""

    NUM_OPS = 2
    MAX_LEVEL = 10.0

    def __init__(self, magnitude: float = 9.0, std: float = 0.5):
        self.magnitude = magnitude
        self.std = std
        self.ops = (
            self._auto_contrast, self._equalize, self._invert, self._rotate, self._posterize,
            self._solarize, self._solarize_add, self._color, self._contrast, self._brightness,
            self._sharpness, self._shear_x, self._shear_y, self._translate_x, self._translate_y,
        )

    def __call__(self, image: tf.Tensor) -> tf.Tensor:
        for _ in range(self.NUM_OPS):
            level = tf.clip_by_value(
                tf.random.normal([], self.magnitude, self.std), 0.0, self.MAX_LEVEL
            ) / self.MAX_LEVEL
            index = tf.random.uniform([], 0, len(self.ops), dtype=tf.int32)
            augmented = tf.switch_case(
                index, [lambda op=op: op(image, level) for op in self.ops]
            )
            image = tf.where(tf.random.uniform([]) < 0.5, augmented, image)
        return image

    @staticmethod
    def _signed(value: tf.Tensor) -> tf.Tensor:
        return tf.where(tf.random.uniform([]) < 0.5, -value, value)

    def _auto_contrast(self, image, level):
        low = tf.reduce_min(image, axis=[0, 1])
        high = tf.reduce_max(image, axis=[0, 1])
        scale = tf.where(high > low, 255.0 / tf.maximum(high - low, 1e-3), 1.0)
        offset = tf.where(high > low, low, 0.0)
        return tf.clip_by_value((image - offset) * scale, 0.0, 255.0)

    def _equalize(self, image, level):
        def channel(values):
            values = tf.cast(values, tf.int32)
            histogram = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256)
            nonzero = tf.boolean_mask(histogram, histogram > 0)
            step = (tf.reduce_sum(histogram) - nonzero[-1]) // 256
            lut = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
            lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
            equalized = tf.gather(lut, values)
            return tf.cast(tf.where(step > 0, equalized, values), tf.float32)

        return tf.stack([channel(image[..., c]) for c in range(3)], axis=-1)

    def _invert(self, image, level):
        return 255.0 - image

    def _posterize(self, image, level):
        bits = tf.cast(level * 4, tf.int32) + 4
        shift = tf.cast(8 - bits, tf.uint8)
        pixels = tf.cast(image, tf.uint8)
        return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(pixels, shift), shift), tf.float32)

    def _solarize(self, image, level):
        threshold = 256.0 - level * 256.0
        return tf.where(image >= threshold, 255.0 - image, image)

    def _solarize_add(self, image, level):
        added = tf.clip_by_value(image + tf.floor(level * 110.0), 0.0, 255.0)
        return tf.where(image < 128.0, added, image)

    def _color(self, image, level):
        return _blend(_grayscale(image) * tf.ones_like(image), image, 1 + self._signed(level * 0.9))

    def _contrast(self, image, level):
        mean = tf.reduce_mean(_grayscale(image))
        return _blend(mean * tf.ones_like(image), image, 1 + self._signed(level * 0.9))

    def _brightness(self, image, level):
        return _blend(tf.zeros_like(image), image, 1 + self._signed(level * 0.9))

    def _sharpness(self, image, level):
        kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
        kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
        smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
        degenerate = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
        border = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]])
        degenerate = border * degenerate + (1 - border) * image
        return _blend(degenerate, image, 1 + self._signed(level * 0.9))

    def _affine(self, image, transform):
        """Applies the inverse map output (x, y) -> input (a0 x + a1 y + a2, b0 x + b1 y + b2)."""
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        transformed = tf.raw_ops.ImageProjectiveTransformV3(
            images=image[None],
            transforms=tf.reshape(tf.concat([transform, [0.0, 0.0]], 0), [1, 8]),
            output_shape=tf.stack([height, width]),
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )[0]
        inside = tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.ones_like(image[None, ..., :1]),
            transforms=tf.reshape(tf.concat([transform, [0.0, 0.0]], 0), [1, 8]),
            output_shape=tf.stack([height, width]),
            fill_value=0.0,
            interpolation="NEAREST",
            fill_mode="CONSTANT",
        )[0]
        return transformed * inside + tf.constant(_MEAN_PIXEL) * (1 - inside)

    def _rotate(self, image, level):
        angle = self._signed(level * 30.0) * math.pi / 180
        height = tf.cast(tf.shape(image)[0], tf.float32)
        width = tf.cast(tf.shape(image)[1], tf.float32)
        cos, sin = tf.cos(angle), tf.sin(angle)
        cx, cy = (width - 1) / 2, (height - 1) / 2
        return self._affine(image, tf.stack([
            cos, -sin, cx - cos * cx + sin * cy,
            sin, cos, cy - sin * cx - cos * cy,
        ]))

    def _shear_x(self, image, level):
        shear = self._signed(level * 0.3)
        return self._affine(image, tf.stack([1.0, shear, 0.0, 0.0, 1.0, 0.0]))

    def _shear_y(self, image, level):
        shear = self._signed(level * 0.3)
        return self._affine(image, tf.stack([1.0, 0.0, 0.0, shear, 1.0, 0.0]))

    def _translate_x(self, image, level):
        pixels = self._signed(level * 0.45) * tf.cast(tf.shape(image)[1], tf.float32)
        return self._affine(image, tf.stack([1.0, 0.0, pixels, 0.0, 1.0, 0.0]))

    def _translate_y(self, image, level):
        pixels = self._signed(level * 0.45) * tf.cast(tf.shape(image)[0], tf.float32)
        return self._affine(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, pixels]))
