"""Per-epoch training checkpoints (model, optimizer, EMA, best EMA, epoch, step), written so that
a kill at any moment loses at most the epoch in progress.

Under multi-worker training every worker runs the same writes (tf.distribute may need all of them
to take part); only the chief's land in the output directory, the others go to a scratch
directory that is deleted.
"""

from __future__ import annotations

import json
import os
import shutil

import tensorflow as tf

from repghost_tf.atomic_files import write_atomically, write_json

STATE_FILE = "state.json"
KEEP_CHECKPOINTS = 2


class Checkpoints:
    """Per-epoch training checkpoints in `directory`, with a state.json that names the newest
    complete one; only checkpoints it names are ever restored."""

    def __init__(self, directory: str, is_chief: bool, **trackables):
        self.directory = directory
        self.is_chief = is_chief
        self.checkpoint = tf.train.Checkpoint(**trackables)

    @property
    def state_path(self) -> str:
        return os.path.join(self.directory, STATE_FILE)

    def state(self) -> dict | None:
        """The state.json of the newest checkpoint, or None when there is none."""
        if not os.path.isfile(self.state_path):
            return None
        with open(self.state_path, encoding="utf-8") as file:
            return json.load(file)

    def save(self, epoch: int, state: dict) -> None:
        """Writes the checkpoint of finished epoch `epoch`, then points state.json at it."""
        name = f"epoch-{epoch:04d}"
        write_atomically(
            os.path.join(self.directory, name),
            lambda temporary: self.checkpoint.write(os.path.join(temporary, "ckpt")),
            publish=self.is_chief,
        )
        write_json(self.state_path, {**state, "epoch": epoch, "checkpoint": name},
                   publish=self.is_chief)
        if self.is_chief:
            self._prune(keep=name)

    def restore(self) -> dict:
        """Restores the newest checkpoint; returns its state."""
        state = self.state()
        path = os.path.join(self.directory, state["checkpoint"], "ckpt")
        self.checkpoint.read(path).assert_existing_objects_matched()
        return state

    def clear(self) -> None:
        if self.is_chief and os.path.isdir(self.directory):
            shutil.rmtree(self.directory)

    def _prune(self, keep: str) -> None:
        finished = sorted(d for d in os.listdir(self.directory) if d.startswith("epoch-"))
        for name in finished[:-KEEP_CHECKPOINTS]:
            if name != keep:
                shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
