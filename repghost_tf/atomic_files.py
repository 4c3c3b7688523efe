"""Files written whole or not at all.

Every output of the project (models, checkpoints, TFLite files, reports, benchmark results) goes
to a temporary name in its destination folder, is flushed to disk and renamed into place, so a
reader, or a run resumed after a kill or a crash of the machine, never sees half a file, and a
failed write leaves the previous file intact. An output never replaces what is not of its kind:
a file is not written over a folder, nor a folder over a file.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import keras


TEMPORARY_PREFIX = ".tmp-"


class OccupiedPathError(OSError):
    """The destination exists as something an output must not replace (a folder where a file
    goes, or a file where a folder goes)."""


def check_target(path: str | os.PathLike, folder: bool = False) -> None:
    """Raises OccupiedPathError when `path` exists as the other kind of thing than the output."""
    path = os.fspath(path)
    if not folder and os.path.isdir(path):
        raise OccupiedPathError(f"{path} is a folder; an output file does not replace it")
    if folder and os.path.lexists(path) and not os.path.isdir(path):
        raise OccupiedPathError(f"{path} is a file; an output folder does not replace it")


def write_atomically(
    path: str | os.PathLike, write: Callable[[str], None], *, publish: bool = True,
    folder: bool = False,
) -> None:
    """Calls write(temporary path), then flushes the result (a file, or with `folder` a folder) to
    disk and renames it onto `path`; raises OccupiedPathError, before writing anything, when
    `path` is of the other kind.

    The temporary path sits in the same folder, so the rename is atomic, and keeps `path`'s suffix
    (Keras checks ".keras"). With publish=False the result is deleted instead: a worker of a
    multi-worker run that must take part in a collective save without owning the output.
    """
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    target = os.path.join(directory, name)
    check_target(target, folder)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}-{name}")
    try:
        write(temporary)
        if publish:
            if os.path.isdir(temporary) != folder:
                raise OccupiedPathError(f"the output for {target} is not a "
                                        f"{'folder' if folder else 'file'}")
            _flush(temporary)
            if folder and os.path.isdir(target):
                shutil.rmtree(target)
            os.replace(temporary, target)
            _fsync(directory)  # the rename itself
    finally:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary)
        elif os.path.lexists(temporary):
            os.remove(temporary)


def _flush(path: str) -> None:
    """fsync of a file, or of a folder and everything inside it, so that a rename published
    after it never points at data still in the page cache."""
    if os.path.isdir(path):
        for root, folders, files in os.walk(path):
            for name in files + folders:
                _fsync(os.path.join(root, name))
    _fsync(path)


def _fsync(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_bytes(path: str | os.PathLike, data: bytes, *, publish: bool = True) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"write_bytes takes bytes, got {type(data).__name__}")

    def write(temporary: str) -> None:
        with open(temporary, "wb") as file:
            file.write(data)

    write_atomically(path, write, publish=publish)


def write_text(path: str | os.PathLike, text: str, *, publish: bool = True) -> None:
    write_bytes(path, text.encode("utf-8"), publish=publish)


def write_json(path: str | os.PathLike, value: Any, *, publish: bool = True) -> None:
    write_text(path, json.dumps(value, indent=2) + "\n", publish=publish)


def save_model(model: "keras.Model", path: str | os.PathLike, *, publish: bool = True) -> None:
    """`model.save(path)`, atomically; `path` must end in ".keras"."""
    if not os.fspath(path).endswith(".keras"):
        raise ValueError(f"a model is saved to a .keras file, got {os.fspath(path)}")
    write_atomically(path, model.save, publish=publish)
