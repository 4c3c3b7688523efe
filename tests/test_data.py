"""Input pipelines: the built-in dataset, folder datasets, preprocessing and sharding."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from repghost_tf import data
from repghost_tf.data import preprocessing
from repghost_tf.data.folder import open_folder
from repghost_tf.data.synthetic_shapes import CLASSES, render_example

TINY = "synthetic_shapes/tiny"
TINY_CLASSES = ("circle", "triangle", "square", "cross")


@pytest.fixture(scope="module")
def data_dir(tiny_data_dir) -> str:
    return tiny_data_dir


def test_builtin_examples_are_deterministic_and_cover_all_classes():
    image, label = render_example("train", 7)
    again, same_label = render_example("train", 7)
    np.testing.assert_array_equal(image, again)
    assert label == same_label
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert not np.array_equal(image, render_example("test", 7)[0])
    labels = {render_example("train", i, 48)[1] for i in range(200)}
    assert labels == set(range(len(CLASSES)))


def _flattest_corner_std(image: np.ndarray) -> float:
    corners = [image[:6, :6], image[:6, -6:], image[-6:, :6], image[-6:, -6:]]
    return min(float(corner.reshape(-1, 3).std(axis=0).max()) for corner in corners)


def test_tiny_shapes_lie_on_a_flat_colour_and_the_default_ones_on_clutter():
    flat = [_flattest_corner_std(render_example("train", i, 48, cluttered=False)[0]) for i in range(20)]
    cluttered = [_flattest_corner_std(render_example("train", i, 48)[0]) for i in range(20)]
    assert max(flat) < 4.0  # pixel noise of std 2 only
    assert np.median(cluttered) > 2 * max(flat)
    # Clutter changes the pixels, never the label.
    assert [render_example("test", i, 48, cluttered=False)[1] for i in range(50)] == [
        render_example("test", i, 48)[1] for i in range(50)
    ]


def test_builtin_dataset_metadata(data_dir):
    assert data.BUILTIN_DATASET == "synthetic_shapes"
    assert data.num_classes(data.BUILTIN_DATASET) == len(CLASSES) == 10
    assert data.num_classes(TINY, data_dir) == len(TINY_CLASSES)
    assert data.default_splits(TINY, data_dir) == ("train", "validation", "test")
    counts = {s: data.num_examples(TINY, s, data_dir) for s in ("train", "validation", "test")}
    assert counts == {"train": 1200, "validation": 200, "test": 2000}


@pytest.mark.parametrize("training", [True, False])
def test_make_dataset_yields_pixel_batches(data_dir, training):
    dataset = data.make_dataset(
        TINY, "validation", image_size=40, batch_size=8, training=training, data_dir=data_dir,
        augmentation=data.Augmentation(randaugment_magnitude=9.0),
    )
    images, labels = next(iter(dataset))
    assert images.shape == (8, 40, 40, 3) and images.dtype == tf.float32
    assert labels.dtype == tf.int32
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0
    assert float(tf.reduce_max(images)) > 100.0  # pixels, not [0, 1]


def test_eval_preprocessing_is_resize_then_centre_crop(data_dir):
    labels = [int(y) for _, y in data.make_dataset(
        TINY, "validation", image_size=32, batch_size=64, training=False, data_dir=data_dir
    ).unbatch()]
    assert sorted(labels) == sorted(
        render_example("validation", i, 48, TINY_CLASSES)[1] for i in range(200)
    )

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    encoded = tf.io.encode_png(image)
    # 112 / 0.875 = 128: the resize is the identity, what remains is the centre crop.
    cropped = data.eval_image(encoded, 112).numpy()
    np.testing.assert_allclose(cropped, image[8:120, 8:120], atol=1.0)
    wide = tf.io.encode_png(rng.integers(0, 256, (100, 200, 3), dtype=np.uint8))
    assert data.eval_image(wide, 56).shape == (56, 56, 3)


@pytest.mark.parametrize("encode", [tf.io.encode_jpeg, tf.io.encode_png])
def test_random_resized_crop_handles_jpeg_and_png(encode):
    preprocess = preprocessing.TrainPreprocessing(48, data.Augmentation(min_crop_scale=0.5))
    image = tf.constant(np.random.default_rng(1).integers(0, 256, (90, 70, 3), dtype=np.uint8))
    crops = [preprocess.random_resized_crop(encode(image)) for _ in range(4)]
    assert all(c.shape == (48, 48, 3) for c in crops)
    assert not np.allclose(crops[0], crops[1])


def test_random_erasing_fills_one_rectangle_with_noise():
    image = tf.fill([64, 64, 3], 7.0)
    tf.random.set_seed(3)
    for _ in range(5):
        erased = (preprocessing.random_erasing(image, 1.0).numpy() != 7.0).any(axis=-1)
        rows, cols = np.nonzero(erased)
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert erased.sum() >= 0.9 * height * width  # a filled rectangle (noise may hit 7)
        assert 0.015 <= height * width / 64**2 <= 0.34
    np.testing.assert_array_equal(preprocessing.random_erasing(image, 0.0), image)


def test_randaugment_operations_stay_in_range_and_change_images():
    augment = preprocessing.RandAugment(9.0, 0.5)
    image = tf.constant(
        np.random.default_rng(2).integers(0, 256, (32, 32, 3)).astype(np.float32)
    )
    changed = 0
    for op in augment.ops:
        out = op(image, tf.constant(0.9))
        assert out.shape == image.shape
        assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0
        changed += not np.allclose(out, image)
    assert changed >= len(augment.ops) - 1  # auto-contrast may be a no-op on a full-range image
    np.testing.assert_array_equal(augment._invert(augment._invert(image, 0.0), 0.0), image)
    tf.random.set_seed(0)
    assert not np.allclose(augment(image), image)


def test_color_jitter_zero_strength_is_identity():
    image = tf.constant(np.random.default_rng(4).uniform(0, 255, (16, 16, 3)).astype(np.float32))
    np.testing.assert_allclose(preprocessing.color_jitter(image, 0.0), image, atol=1e-3)
    assert not np.allclose(preprocessing.color_jitter(image, 0.4), image)


def _write_folder(root: str, splits: tuple[str, ...]) -> None:
    rng = np.random.default_rng(5)
    for split in splits:
        for label in ("cats", "dogs"):
            os.makedirs(os.path.join(root, split, label))
            for index in range(3):
                pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
                tf.io.write_file(
                    os.path.join(root, split, label, f"{index}.jpg"), tf.io.encode_jpeg(pixels)
                )


def write_photo_folder(root: str, per_class: int = 12) -> dict[str, list[str]]:
    """train/ of three classes as users have them: JPEG and PNG of mixed sizes, one grayscale
    PNG, one RGBA PNG, one corrupt .jpg and a hidden file; no val/. Returns the readable files by
    class."""
    rng = np.random.default_rng(6)
    readable: dict[str, list[str]] = {}
    for label, name in enumerate(("daisy", "rose", "tulip")):
        folder = os.path.join(root, "train", name)
        os.makedirs(folder)
        readable[name] = []
        for index in range(per_class):
            height, width = (int(v) for v in rng.integers(20, 90, 2))
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            pixels[..., label] = 255  # a class-coloured channel: learnable in a few steps
            if index % 2:
                path, encoded = f"{index}.png", tf.io.encode_png(pixels)
            else:
                path, encoded = f"{index}.JPG", tf.io.encode_jpeg(pixels)
            tf.io.write_file(os.path.join(folder, path), encoded)
            readable[name].append(os.path.join(folder, path))
    gray = rng.integers(0, 256, (30, 30, 1), dtype=np.uint8)
    rgba = rng.integers(0, 256, (25, 35, 4), dtype=np.uint8)
    for name, pixels in (("gray.png", gray), ("rgba.png", rgba)):
        path = os.path.join(root, "train", "rose", name)
        tf.io.write_file(path, tf.io.encode_png(pixels))
        readable["rose"].append(path)
    with open(os.path.join(root, "train", "tulip", "broken.jpg"), "wb") as file:
        file.write(b"\xff\xd8\xff\xe0 not really a JPEG")
    with open(os.path.join(root, "train", "daisy", ".DS_Store"), "wb") as file:
        file.write(b"\0" * 16)
    return readable


def test_folder_dataset_with_val(tmp_path):
    root = str(tmp_path / "images")
    _write_folder(root, ("train", "val"))
    name = f"folder:{root}"
    assert data.num_classes(name) == 2
    assert data.class_names(name) == ["cats", "dogs"]
    assert data.default_splits(name) == ("train", "validation", None)
    assert data.num_examples(name, "validation") == 6
    images, labels = next(iter(data.make_dataset(
        name, "train", image_size=32, batch_size=4, training=True
    )))
    assert images.shape == (4, 32, 32, 3)
    assert set(labels.numpy()) <= {0, 1}
    with pytest.raises(data.DatasetError, match="not a directory"):
        data.check_dataset(f"folder:{tmp_path / 'missing'}")


def test_folder_as_users_have_it(tmp_path, capsys):
    root = str(tmp_path / "photos")
    readable = write_photo_folder(root)
    name = f"folder:{root}"
    data.check_dataset(name)
    assert "left out 1 file(s) that are not readable images (first: train/tulip/broken.jpg)" in (
        capsys.readouterr().out)
    assert data.class_names(name) == ["daisy", "rose", "tulip"]
    assert data.default_splits(name) == ("train", "validation", None)
    folder = data.folder(name)
    # No val/: 10% of each class (at least one image) held out, the same on every opening.
    held = {folder.class_names[label] for label in folder.labels["validation"]}
    assert held == {"daisy", "rose", "tulip"}
    assert sorted(folder.files["train"] + folder.files["validation"]) == sorted(
        path for paths in readable.values() for path in paths)
    assert len(folder.files["validation"]) == 1 + 1 + 1  # round(0.1 * 12 or 14) = 1 per class
    open_folder.cache_clear()
    assert data.folder(name).files == folder.files
    # Every readable image, grayscale and RGBA included, comes out as RGB of the asked size.
    for split in ("train", "validation"):
        batches = list(data.make_dataset(name, split, image_size=32, batch_size=8,
                                         training=False))
        images = np.concatenate([images.numpy() for images, _ in batches])
        assert images.shape == (len(folder.files[split]), 32, 32, 3)


@pytest.mark.parametrize("layout, message", [
    ({"train/a": 2, "train/b": 0}, "train/b holds no readable images"),
    ({"train/a": 3}, "has 1 class folder(s); a classifier needs at least two"),
    ({"train/a": 0, "train/b": 0}, "train holds no readable images"),
    ({"train/a": 2, "train/b": 2, "val/c": 1}, "val/c is a class that train/ does not have"),
    ({"photos/a": 2}, "needs a train/ sub-folder"),
])
def test_folder_errors_before_any_work(tmp_path, layout, message):
    root = tmp_path / "images"
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True)
        for index in range(count):
            tf.io.write_file(str(root / folder / f"{index}.png"),
                             tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(data.DatasetError, match=re.escape(message)):
        data.check_dataset(f"folder:{root}")


def test_unknown_dataset_and_missing_imagenet_files(tmp_path):
    with pytest.raises(data.DatasetError, match="Unknown dataset"):
        data.check_dataset("no_such_dataset_xyz")
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "ILSVRC2012_img_val.tar").write_bytes(b"")
    with pytest.raises(data.DatasetError) as error:
        data.check_dataset("imagenet2012", str(tmp_path / "tfds"), str(manual))
    message = str(error.value)
    assert "ILSVRC2012_img_train.tar" in message.split("missing:")[1]
    assert str(manual) in message


def test_input_pipelines_partition_the_data(data_dir):
    def labels_of(pipeline: int) -> list[tuple[int, float]]:
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline)
        dataset = data.make_dataset(
            TINY, "validation", image_size=32, batch_size=50, training=False,
            data_dir=data_dir, input_context=context,
        )
        return [(int(y), float(tf.reduce_sum(x))) for x, y in dataset.unbatch()]

    first, second = labels_of(0), labels_of(1)
    assert len(first) + len(second) == 200
    assert not set(first) & set(second)
