"""Files written whole or not at all.

Every output of the project (models, checkpoints, TFLite files, reports, benchmark results) goes
to a temporary name in its destination folder and is renamed into place, so a reader, or a run
resumed after a kill, never sees half a file, and a failed write leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import keras


def write_atomically(
    path: str | os.PathLike, write: Callable[[str], None], *, publish: bool = True
) -> None:
    """Calls write(temporary path), then renames the result (a file or a folder) onto `path`.

    The temporary path sits in the same folder, so the rename is atomic, and keeps `path`'s suffix
    (Keras checks ".keras"). With publish=False the result is deleted instead: a worker of a
    multi-worker run that must take part in a collective save without owning the output.
    """
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{name}")
    target = os.path.join(directory, name)
    try:
        write(temporary)
        if publish:
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            os.replace(temporary, target)
    finally:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary)
        elif os.path.lexists(temporary):
            os.remove(temporary)


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
