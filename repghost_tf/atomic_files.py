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


class TargetError(OSError):
    """An output path that cannot take the output; the message is one line."""


class OccupiedPathError(TargetError):
    """The destination exists as something an output must not replace (a folder where a file
    goes, or a file where a folder goes)."""


class UnwritablePathError(TargetError):
    """The destination's folder does not accept new files (a read-only file system, or no write
    permission)."""


def check_target(path: str | os.PathLike, folder: bool = False) -> None:
    """Raises OccupiedPathError when `path` exists as the other kind of thing than the output,
    and UnwritablePathError when the folder that would receive it does not take new files:
    before any work, so that a run does not fail at its end. A URL (gs://...) is left to its
    file system."""
    path = os.fspath(path)
    if "://" in path:
        return
    if not folder and os.path.isdir(path):
        raise OccupiedPathError(f"{path} is a folder; an output file does not replace it")
    if folder and os.path.lexists(path) and not os.path.isdir(path):
        raise OccupiedPathError(f"{path} is a file; an output folder does not replace it")
    # A new file goes into the folder itself (an existing output folder), else into the nearest
    # folder that exists above it (the temporary name beside a file, the folders made for it).
    receiver = path if folder and os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(receiver) and os.path.dirname(receiver) != receiver:
        receiver = os.path.dirname(receiver)
    if os.statvfs(receiver).f_flag & os.ST_RDONLY:
        raise UnwritablePathError(f"{path} cannot be written: {receiver} is on a read-only "
                                  "file system")
    if not os.access(receiver, os.W_OK | os.X_OK):
        raise UnwritablePathError(f"{path} cannot be written: no permission to write in "
                                  f"{receiver}")


def write_atomically(
    path: str | os.PathLike, write: Callable[[str], None], *, publish: bool = True,
    folder: bool = False,
) -> None:
    """Calls write(temporary path), then flushes the result (a file, or with `folder` a folder) to
    disk and renames it onto `path`; raises a TargetError, before writing anything, when `path`
    is of the other kind or its folder takes no new files.

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
        try:
            write(temporary)
        except OSError as error:
            if error.filename is not None or error.errno is None:
                raise
            # Writers that lose the name (Keras' zip, TensorFlow's checkpoint): the user's path.
            raise OSError(error.errno, error.strerror, target) from error
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
