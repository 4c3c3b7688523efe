"""`folder:/path` datasets: class sub-folders of image files, as people keep their photos.

    /path/train/<class>/*    the classes are the sub-folders of train/, in sorted order
    /path/val/<class>/*      optional (or validation/); without it, a seeded hold-out of train/
    /path/test/<class>/*     optional; scored once at the end of training

Files may be JPEG, PNG, GIF or BMP of any size, grayscale, RGB or RGBA (all read as RGB). Every
file is decoded once, in parallel, when a process first opens the folder: files that are not
decodable images are left out, and their count is printed, so that no epoch stops at one.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
import tensorflow as tf

from repghost_tf import native_logs

# The share of each class's train/ images held out for validation when there is no val/ folder,
# and the seed that picks them: a property of the folder, the same for every run on it.
HOLDOUT_FRACTION = 0.1
HOLDOUT_SEED = 0
_SPLIT_FOLDERS = {"train": ("train",), "validation": ("val", "validation"), "test": ("test",)}


class FolderError(ValueError):
    """A folder that cannot be trained on; the message (one line) says why."""


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """The readable images of a folder dataset, by split ("train", "validation", "test")."""

    root: str
    class_names: tuple[str, ...]
    files: dict[str, tuple[str, ...]]
    labels: dict[str, tuple[int, ...]]
    skipped: tuple[str, ...]
    held_out: bool

    def dataset(self, split: str) -> tf.data.Dataset:
        """`split`'s examples as {"image": encoded bytes, "label": int64}, in file order."""
        if split not in self.files:
            raise FolderError(f"folder:{self.root} has no {split} split (it has "
                              f"{', '.join(self.files)}).")
        files = tf.data.Dataset.from_tensor_slices(
            (list(self.files[split]), np.asarray(self.labels[split], np.int64))
        )
        return files.map(lambda path, label: {"image": tf.io.read_file(path), "label": label})


@functools.lru_cache(maxsize=8)
def open_folder(root: str) -> ImageFolder:
    """Reads the layout of the folder dataset at `root` and checks every image file.

    Raises FolderError, before any training, when there is no train/ folder, fewer than two
    classes, or a class without a readable image.
    """
    train = os.path.join(root, "train")
    if not os.path.isdir(train):
        raise FolderError(f"folder:{root} needs a train/ sub-folder with one sub-folder of "
                          "images per class.")
    class_names = tuple(sorted(name for name in os.listdir(train)
                               if os.path.isdir(os.path.join(train, name))
                               and not name.startswith(".")))
    if len(class_names) < 2:
        raise FolderError(f"folder:{root}/train has {len(class_names)} class folder(s); a "
                          "classifier needs at least two.")
    listed = {}
    for split, names in _SPLIT_FOLDERS.items():
        folder = next((os.path.join(root, name) for name in names
                       if os.path.isdir(os.path.join(root, name))), None)
        if folder is not None:
            listed[split] = _list_split(folder, class_names)
    readable = _readable([path for files in listed.values() for path, _ in files])
    skipped = tuple(path for files in listed.values() for path, _ in files if path not in readable)
    kept = {split: [(p, label) for p, label in files if p in readable]
            for split, files in listed.items()}
    counts = np.bincount([label for _, label in kept["train"]], minlength=len(class_names))
    if not counts.any():
        raise FolderError(f"folder:{root}/train holds no readable images.")
    empty = [name for name, count in zip(class_names, counts) if count == 0]
    if empty:
        more = f" (nor do {len(empty) - 1} more class folders)" if len(empty) > 1 else ""
        raise FolderError(f"folder:{root}/train/{empty[0]} holds no readable images{more}.")
    held_out = "validation" not in kept
    if held_out:
        kept["train"], kept["validation"] = _hold_out(kept["train"])
    if skipped:
        print(f"folder:{root}: left out {len(skipped)} file(s) that are not readable images "
              f"(first: {os.path.relpath(skipped[0], root)}).", flush=True)
    return ImageFolder(
        root=root,
        class_names=class_names,
        files={split: tuple(p for p, _ in files) for split, files in kept.items()},
        labels={split: tuple(label for _, label in files) for split, files in kept.items()},
        skipped=skipped,
        held_out=held_out,
    )


def _list_split(folder: str, class_names: tuple[str, ...]) -> list[tuple[str, int]]:
    """(path, label) of every file in `folder`'s class sub-folders, sorted."""
    present = sorted(n for n in os.listdir(folder)
                     if os.path.isdir(os.path.join(folder, n)) and not n.startswith("."))
    unknown = [n for n in present if n not in class_names]
    if unknown:
        raise FolderError(f"{folder}/{unknown[0]} is a class that train/ does not have.")
    files = []
    for label, name in enumerate(class_names):
        directory = os.path.join(folder, name)
        if not os.path.isdir(directory):
            continue
        for dirpath, dirnames, filenames in os.walk(directory):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files.extend((os.path.join(dirpath, f), label)
                         for f in sorted(filenames) if not f.startswith("."))
    return files


def _readable(paths: list[str]) -> set[str]:
    """The paths among `paths` that TensorFlow decodes as images (decoded in parallel)."""
    if not paths:
        return set()

    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return path, tf.shape(image)  # a result that uses the image, so that it is decoded

    checked = tf.data.Dataset.from_tensor_slices(paths).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE
    ).ignore_errors()
    with native_logs.silenced():  # libjpeg prints its own line for each bad file
        return {path.decode() for path, _ in checked.as_numpy_iterator()}


def _hold_out(files: list[tuple[str, int]]) -> tuple[list, list]:
    """(train, validation): HOLDOUT_FRACTION of each class with two or more images (at least
    one image), picked with HOLDOUT_SEED."""
    rng = np.random.default_rng(HOLDOUT_SEED)
    train, validation = [], []
    for label in sorted({label for _, label in files}):
        members = [item for item in files if item[1] == label]
        count = round(HOLDOUT_FRACTION * len(members)) if len(members) > 1 else 0
        chosen = set(rng.permutation(len(members))[:max(count, len(members) > 1)].tolist())
        for index, item in enumerate(members):
            (validation if index in chosen else train).append(item)
    return sorted(train), sorted(validation)
