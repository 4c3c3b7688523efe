"""Per-epoch training checkpoints (model, optimizer, EMA, best EMA) with their state (epoch, step,
history), each in its own folder, written so that a kill or a crash at any byte loses at most the
epoch in progress, and a damaged checkpoint costs only its own epoch: resuming falls back to the
one before.

Under multi-worker training every worker runs the same writes (tf.distribute may need all of them
to take part); only the chief's land in the output directory, the others go to a scratch
directory that is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Callable

import tensorflow as tf

from repghost_tf.atomic_files import TEMPORARY_PREFIX, write_atomically
from repghost_tf.runs import CHECKPOINT_FOLDER

STATE_FILE = "state.json"
KEEP_CHECKPOINTS = 2
# What reading a damaged checkpoint raises: truncated, zeroed or flipped bytes, missing files.
_DAMAGE = (tf.errors.OpError, ValueError, IndexError, AssertionError, OSError, KeyError)


class CheckpointsUnreadable(RuntimeError):
    """No checkpoint of the run directory could be read."""


class Checkpoints:
    """Per-epoch checkpoints in `directory`: folder epoch-NNNN holds the checkpoint and its
    state.json; a folder appears whole (atomic rename) or not at all."""

    def __init__(self, directory: str, is_chief: bool, warn: Callable[[str], None] = print,
                 **trackables):
        self.directory = directory
        self.is_chief = is_chief
        self.warn = warn
        self.checkpoint = tf.train.Checkpoint(**trackables)

    def state(self) -> dict | None:
        """The state of the newest checkpoint whose state reads, or None when there is none."""
        for name in self._folders():
            state = self._read_state(name)
            if state is not None:
                return state
        return None

    def save(self, epoch: int, state: dict) -> None:
        """Writes the checkpoint of finished epoch `epoch` with its state."""
        name = f"epoch-{epoch:04d}"
        state = {**state, "epoch": epoch, "checkpoint": name}

        def write(temporary: str) -> None:
            self.checkpoint.write(os.path.join(temporary, "ckpt"))
            with open(os.path.join(temporary, STATE_FILE), "w", encoding="utf-8") as file:
                json.dump(state, file, indent=2)

        write_atomically(os.path.join(self.directory, name), write, publish=self.is_chief,
                         folder=True)
        if self.is_chief:
            self._prune(keep=name)

    def restore(self) -> dict:
        """Restores the newest checkpoint that reads whole; returns its state. A damaged one is
        reported in one line and the one before it is tried; raises CheckpointsUnreadable when
        none reads."""
        tried = []
        for name in self._folders():
            state = self._read_state(name)
            try:
                if state is None:
                    raise ValueError(f"{STATE_FILE} is missing or not JSON")
                path = os.path.join(self.directory, name, "ckpt")
                self.checkpoint.read(path).assert_existing_objects_matched()
                return state
            except _DAMAGE as error:
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                self.warn(f"Checkpoint {name} does not read ({reason}); trying the one before.")
                tried.append(name)
        raise CheckpointsUnreadable(
            f"no checkpoint in {self.directory} reads ({', '.join(tried) or 'none'}); pass "
            "--noresume to start the run over."
        )

    def clear(self) -> None:
        if self.is_chief and os.path.isdir(self.directory):
            shutil.rmtree(self.directory)

    def remove_unfinished(self) -> None:
        """Deletes what a killed save left (temporary folders); the caller holds the run's
        lock, so no other run is writing them."""
        if self.is_chief and os.path.isdir(self.directory):
            for name in os.listdir(self.directory):
                if name.startswith(TEMPORARY_PREFIX):
                    shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def _folders(self) -> list[str]:
        """The checkpoint folders, newest first."""
        if not os.path.isdir(self.directory):
            return []
        names = [name for name in os.listdir(self.directory) if CHECKPOINT_FOLDER.match(name)]
        return sorted(names, key=lambda name: int(name.split("-")[1]), reverse=True)

    def _read_state(self, name: str) -> dict | None:
        """A folder's state; for runs written before the state moved into the folders, the
        directory's state.json when it names this folder."""
        for path in (os.path.join(self.directory, name, STATE_FILE),
                     os.path.join(self.directory, STATE_FILE)):
            try:
                with open(path, encoding="utf-8") as file:
                    state = json.load(file)
            except (OSError, ValueError):
                continue
            if isinstance(state, dict) and state.get("checkpoint") == name:
                return state
        return None

    def _prune(self, keep: str) -> None:
        for name in self._folders()[KEEP_CHECKPOINTS:]:
            if name != keep:
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
