"""Checkpoints survive damage: a checkpoint that does not read costs its own epoch, never the run;
one run at a time holds a run directory."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from repghost_tf import runs
from repghost_tf.training.checkpoints import Checkpoints, CheckpointsUnreadable


def _saved(directory: str, epochs: int) -> tuple[Checkpoints, tf.Variable, list[str]]:
    """Checkpoints of a variable that holds the epoch's number after each epoch."""
    variable = tf.Variable(np.zeros(1000, np.float32))
    warnings: list[str] = []
    checkpoints = Checkpoints(directory, is_chief=True, warn=warnings.append, weights=variable)
    for epoch in range(1, epochs + 1):
        variable.assign(np.full(1000, epoch, np.float32))
        checkpoints.save(epoch, {"step": 10 * epoch, "history": list(range(epoch))})
    variable.assign(np.zeros(1000, np.float32))
    return checkpoints, variable, warnings


def _data_file(directory: str, name: str) -> str:
    folder = os.path.join(directory, name)
    (data,) = [f for f in os.listdir(folder) if ".data-" in f]
    return os.path.join(folder, data)


def test_the_newest_two_are_kept_and_the_newest_restored(tmp_path):
    checkpoints, variable, warnings = _saved(str(tmp_path), epochs=3)
    assert sorted(os.listdir(tmp_path)) == ["epoch-0002", "epoch-0003"]
    state = checkpoints.restore()
    assert (state["epoch"], state["step"]) == (3, 30) and float(variable[0]) == 3.0
    assert warnings == []


def _truncate(path: str) -> None:
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 2)


def _flip_bytes(path: str) -> None:
    with open(path, "r+b") as file:
        file.seek(100)
        chunk = file.read(64)
        file.seek(100)
        file.write(bytes(255 - b for b in chunk))


def _zero(path: str) -> None:
    with open(path, "r+b") as file:
        file.write(bytes(os.path.getsize(path)))


@pytest.mark.parametrize("damage", [
    lambda d: _truncate(_data_file(d, "epoch-0003")),
    lambda d: _flip_bytes(_data_file(d, "epoch-0003")),
    lambda d: _zero(_data_file(d, "epoch-0003")),
    lambda d: _truncate(os.path.join(d, "epoch-0003", "ckpt.index")),
    lambda d: os.remove(os.path.join(d, "epoch-0003", "ckpt.index")),
    lambda d: _truncate(os.path.join(d, "epoch-0003", "state.json")),
], ids=["data-truncated", "data-flipped", "data-zeroed", "index-truncated", "index-deleted",
        "state-truncated"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, damage):
    checkpoints, variable, warnings = _saved(str(tmp_path), epochs=3)
    damage(str(tmp_path))
    state = checkpoints.restore()
    assert (state["epoch"], state["step"], state["history"]) == (2, 20, [0, 1])
    assert float(variable[0]) == 2.0 and float(variable[-1]) == 2.0
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith("Checkpoint epoch-0003 does not read (")


def test_no_readable_checkpoint_is_one_line_that_says_what_to_do(tmp_path):
    checkpoints, _, _ = _saved(str(tmp_path), epochs=2)
    for name in ("epoch-0001", "epoch-0002"):
        _truncate(_data_file(str(tmp_path), name))
    with pytest.raises(CheckpointsUnreadable, match=r"\(epoch-0002, epoch-0001\); pass "
                       r"--noresume") as error:
        checkpoints.restore()
    assert "\n" not in str(error.value)


def test_a_save_interrupted_before_its_rename_leaves_the_previous_checkpoint(tmp_path):
    checkpoints, variable, _ = _saved(str(tmp_path), epochs=1)
    leftover = tmp_path / ".tmp-0123-epoch-0002"
    leftover.mkdir()
    (leftover / "ckpt.index").write_bytes(b"half")
    assert checkpoints.restore()["epoch"] == 1
    checkpoints.remove_unfinished()
    assert os.listdir(tmp_path) == ["epoch-0001"]


def test_a_run_written_before_states_moved_into_the_folders_resumes(tmp_path):
    checkpoints, variable, _ = _saved(str(tmp_path), epochs=2)
    state = json.loads((tmp_path / "epoch-0002" / "state.json").read_text())
    for name in ("epoch-0001", "epoch-0002"):
        os.remove(tmp_path / name / "state.json")
    (tmp_path / "state.json").write_text(json.dumps(state))  # the old layout's pointer
    assert checkpoints.restore()["epoch"] == 2 and float(variable[0]) == 2.0


def test_a_run_directory_is_held_by_one_run_at_a_time(tmp_path):
    run_dir = str(tmp_path / "run")
    with runs.hold(run_dir):
        with pytest.raises(runs.RunDirectoryBusy, match="in use by another training run"):
            with runs.hold(run_dir):
                pass
        (tmp_path / "run" / "summary.json").write_text("{}")
    with runs.hold(run_dir):  # released on exit
        pass
    assert os.listdir(run_dir) == ["summary.json"]


def test_a_run_directory_made_for_a_run_that_wrote_nothing_is_removed(tmp_path):
    with pytest.raises(RuntimeError):
        with runs.hold(str(tmp_path / "run")):
            raise RuntimeError("failed before writing")
    assert os.listdir(tmp_path) == []


def test_a_failed_run_keeps_its_directory_only_from_its_first_checkpoint_on(tmp_path):
    """A run directory made for a run that fails before its first checkpoint (a full disk)
    holds only logs and is removed; one with a finished checkpoint stays, to resume; one that
    was there before the run stays whatever happens."""
    def fail_after(run_dir: str, *paths: str) -> None:
        with pytest.raises(OSError):
            with runs.hold(run_dir):
                for path in paths:
                    os.makedirs(os.path.join(run_dir, path))
                raise OSError(28, "No space left on device")

    fail_after(str(tmp_path / "fresh"), "logs/train")
    fail_after(str(tmp_path / "resumable"), "logs/train", "checkpoints/epoch-0001")
    os.makedirs(tmp_path / "existing")
    fail_after(str(tmp_path / "existing"), "logs/train")
    assert sorted(os.listdir(tmp_path)) == ["existing", "resumable"]
