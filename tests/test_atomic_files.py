"""Every output file is written whole or not at all."""

import errno
import json
import os

import pytest

from repghost_tf import atomic_files


def test_writes_overwrite_and_create_folders(tmp_path):
    path = tmp_path / "sub" / "model.tflite"
    atomic_files.write_bytes(path, b"first")
    atomic_files.write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    atomic_files.write_json(tmp_path / "report.json", {"top1": 0.5})
    assert json.loads((tmp_path / "report.json").read_text()) == {"top1": 0.5}
    assert os.listdir(path.parent) == ["model.tflite"]


def test_wrong_content_type_leaves_the_old_file(tmp_path):
    path = tmp_path / "model.tflite"
    atomic_files.write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_files.write_bytes(path, "not bytes")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.tflite"]


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_files.write_text(path, "old")

    def interrupt(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_files.write_text(path, "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]


def test_a_folder_replaces_the_previous_one_whole(tmp_path):
    target = tmp_path / "epoch-0001"

    def write_folder(contents: str):
        def write(temporary: str) -> None:
            os.makedirs(temporary)
            with open(os.path.join(temporary, "ckpt"), "w") as file:
                file.write(contents)
        return write

    atomic_files.write_atomically(target, write_folder("first"), folder=True)
    atomic_files.write_atomically(target, write_folder("second"), folder=True)
    assert os.listdir(target) == ["ckpt"] and (target / "ckpt").read_text() == "second"


def test_a_file_never_replaces_a_folder_nor_a_folder_a_file(tmp_path):
    """`--output existing_folder` once deleted the folder with everything in it."""
    folder, file = tmp_path / "mine", tmp_path / "notes.txt"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(b"jpeg")
    file.write_text("notes")
    with pytest.raises(atomic_files.OccupiedPathError, match="is a folder"):
        atomic_files.write_bytes(folder, b"model")
    with pytest.raises(atomic_files.OccupiedPathError, match="is a file"):
        atomic_files.write_atomically(file, os.makedirs, folder=True)
    assert (folder / "photo.jpg").read_bytes() == b"jpeg" and file.read_text() == "notes"
    assert sorted(os.listdir(tmp_path)) == ["mine", "notes.txt"]


def test_a_write_of_the_wrong_kind_is_not_published(tmp_path):
    with pytest.raises(atomic_files.OccupiedPathError, match="not a file"):
        atomic_files.write_atomically(tmp_path / "model.keras", os.makedirs)
    assert os.listdir(tmp_path) == []


def test_unpublished_writes_leave_nothing(tmp_path):
    """A non-chief worker writes its share of a collective save and keeps none of it."""
    atomic_files.write_text(tmp_path / "summary.json", "{}", publish=False)
    assert os.listdir(tmp_path) == []


def test_models_need_a_keras_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.keras"):
        atomic_files.save_model(object(), tmp_path / "model.h5")
    assert os.listdir(tmp_path) == []


def test_an_output_on_a_read_only_file_system_is_refused_before_writing(tmp_path, monkeypatch):
    """The folder that would receive the output is checked (the nearest one that exists), so a
    run on a read-only location fails at its start, not at its end. (The end-to-end cases mount
    a real read-only file system: tests/test_bad_input.py.)"""
    real_statvfs = os.statvfs
    read_only = str(tmp_path / "ro")
    os.makedirs(read_only)

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly() if p == read_only else real_statvfs(p))
    for target, folder in ((f"{read_only}/model.keras", False), (f"{read_only}/a/b/run", True),
                           (read_only, True)):
        with pytest.raises(atomic_files.UnwritablePathError,
                           match=f"{target} cannot be written: {read_only} is on a read-only"):
            atomic_files.check_target(target, folder)
    atomic_files.check_target(str(tmp_path / "elsewhere.keras"))
    atomic_files.check_target("gs://bucket/runs/run", folder=True)  # left to its file system
    with pytest.raises(atomic_files.UnwritablePathError):
        atomic_files.write_bytes(f"{read_only}/x.bin", b"x")
    assert os.listdir(read_only) == []


def test_a_failed_write_names_the_output(tmp_path):
    """Writers that lose the file name (Keras' zip on a full disk) are reported with the output's
    path, and leave nothing behind."""
    def full_disk(temporary: str) -> None:
        with open(temporary, "wb") as file:
            file.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    target = str(tmp_path / "best.keras")
    with pytest.raises(OSError, match="No space left on device") as raised:
        atomic_files.write_atomically(target, full_disk)
    assert raised.value.filename == target and raised.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []
