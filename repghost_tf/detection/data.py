"""Detection input pipelines: any TFDS dataset laid out as coco and voc are (`image`,
`objects/bbox` as normalised (ymin, xmin, ymax, xmax), `objects/label`), the built-in
`synthetic_shapes/detection` among them, as the batches keras-hub's detectors train on:
(float32 RGB in [0, 255] at image_size x image_size, {"boxes": yxyx in pixels, "labels"}), both
padded with -1 to `max_boxes` objects.

Images are resized to the square input without keeping their aspect ratio (as SSD does), so the
boxes scale with them; training adds random horizontal flips. Crowd annotations (coco's
`is_crowd`) are left out, and boxes are clipped to the image.
"""

from __future__ import annotations

import tensorflow as tf

from repghost_tf.data.datasets import batch, read_split

PADDING = -1


def _objects(example: dict, image_size: int, max_boxes: int, flip: tf.Tensor) -> tuple:
    """The decoded, resized image and its first `max_boxes` boxes (pixels) and labels, padded."""
    image = tf.image.decode_image(example["image"], channels=3, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size))
    image = tf.clip_by_value(image, 0.0, 255.0)
    objects = example["objects"]
    boxes = tf.clip_by_value(tf.reshape(tf.cast(objects["bbox"], tf.float32), (-1, 4)), 0.0, 1.0)
    labels = tf.cast(objects["label"], tf.int32)
    if "is_crowd" in objects:
        keep = tf.logical_not(objects["is_crowd"])
        boxes, labels = tf.boolean_mask(boxes, keep), tf.boolean_mask(labels, keep)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    if flip is not None:
        image = tf.where(flip, tf.reverse(image, axis=[1]), image)
        xmin, xmax = tf.where(flip, 1.0 - xmax, xmin), tf.where(flip, 1.0 - xmin, xmax)
    boxes = tf.stack([ymin, xmin, ymax, xmax], axis=-1)[:max_boxes] * float(image_size)
    labels = labels[:max_boxes]
    missing = max_boxes - tf.shape(labels)[0]
    boxes = tf.pad(boxes, [[0, missing], [0, 0]], constant_values=PADDING)
    labels = tf.pad(labels, [[0, missing]], constant_values=PADDING)
    boxes = tf.ensure_shape(boxes, (max_boxes, 4))
    labels = tf.ensure_shape(labels, (max_boxes,))
    return image, {"boxes": boxes, "labels": labels}


def make_detection_dataset(
    name: str,
    split: str,
    *,
    image_size: int,
    batch_size: int,
    training: bool,
    max_boxes: int = 100,
    data_dir: str | None = None,
    input_context: tf.distribute.InputContext | None = None,
    shuffle_buffer: int = 10_000,
    seed: int | None = None,
    repeat: bool = False,
    deterministic: bool = False,
) -> tf.data.Dataset:
    """Batches of (float32 images, {"boxes": (B, max_boxes, 4), "labels": (B, max_boxes)}) from
    `split` of dataset `name`; the arguments mean what they do for `make_dataset`."""
    dataset = read_split(name, split, training=training, data_dir=data_dir,
                         input_context=input_context, seed=seed, task="detection")
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed).repeat()
        flips = tf.data.Dataset.random(seed=seed).map(lambda x: x % 2 == 0)
        dataset = tf.data.Dataset.zip(dataset, flips).map(
            lambda example, flip: _objects(example, image_size, max_boxes, flip),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        dataset = dataset.map(
            lambda example: _objects(example, image_size, max_boxes, None),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return batch(dataset, batch_size, training=training, repeat=repeat,
                 deterministic=deterministic)
