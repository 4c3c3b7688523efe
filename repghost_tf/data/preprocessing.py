"""The ImageNet training and evaluation preprocessing, as timm applies it for the paper's recipe.

Training images are decoded with `decode_and_crop_jpeg` where the source is JPEG, so only the
random crop is ever decoded. Images stay float32 RGB in [0, 255].
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from repghost_tf.models.applications import IMAGENET_MEAN, IMAGENET_STD

EVAL_CROP_FRACTION = 0.875  # 224 / 256
# timm fills RandAugment's empty borders and erased pixels in terms of the ImageNet statistics.
_MEAN_PIXEL = tuple(255 * m for m in IMAGENET_MEAN)
_STD_PIXEL = tuple(255 * s for s in IMAGENET_STD)


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
                # TensorFlow's deterministic mode refuses the op seed 0; the global seed (--seed)
                # still sets which crops come out.
                seed=1,
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
