"""Every failure a user can cause, across the five command lines, is one line on stderr and a
non-zero exit, and the command writes nor deletes anything. One row per case: adding a case is
one line. docs/bad_input.md lists them with the line each prints."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import torch  # before TensorFlow (through keras): see the README's traps

import keras  # noqa: E402
import pytest  # noqa: E402

from repghost_tf import runs  # noqa: E402

from conftest import TINY  # noqa: E402
from helpers import native_log_lines, user_environment  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAMS = {
    "train.py": [os.path.join(ROOT, "train.py")],
    "export_tflite.py": [os.path.join(ROOT, "export_tflite.py")],
    "convert_torch": ["-m", "repghost_tf.convert_torch"],
    "repghost_tf.count": ["-m", "repghost_tf.count"],
    "benchmark.device": ["-m", "benchmark.device"],
}
TRAIN = ["--width=0.5", f"--dataset={TINY}", "--data_dir={data}", "--output_dir={tmp}/run",
         "--latest_file={tmp}/LATEST", "--epochs=1", "--steps_per_epoch=1", "--verbose=0"]
EXPORT = ["--width=0.5", "--image_size=48", "--quantize=int8", f"--calibration_dataset={TINY}",
          f"--eval_dataset={TINY}", "--eval_examples=10", "--data_dir={data}",
          "--output_dir={tmp}/out"]


def _files(tmp: str) -> None:
    """What the cases point at: a plain file, a folder with a file inside, hostile and wrong
    model files, bad checkpoints."""
    with open(os.path.join(tmp, "notes.txt"), "w") as file:
        file.write("not a model\n")
    os.makedirs(os.path.join(tmp, "photos", "cats"))
    with open(os.path.join(tmp, "photos", "cats", "a.jpg"), "wb") as file:
        file.write(b"\xff\xd8not really")
    os.makedirs(os.path.join(tmp, "mine.keras"))
    with open(os.path.join(tmp, "mine.keras", "keep.txt"), "w") as file:
        file.write("mine")
    with open(os.path.join(tmp, "notzip.keras"), "w") as file:
        file.write("text")
    keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2)]).save(
        os.path.join(tmp, "lambda.keras"))
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(
        os.path.join(tmp, "dense.keras"))
    with zipfile.ZipFile(os.path.join(tmp, "deep.keras"), "w") as archive:
        archive.writestr("config.json", "[" * 200_000 + "]" * 200_000)
        archive.writestr("metadata.json", json.dumps({"keras_version": keras.__version__}))
    with open(os.path.join(tmp, "truncated.pth"), "wb") as file:
        file.write(b"PK\x03\x04" + bytes(100))
    torch.save({"state_dict": {"conv_stem.weight": torch.zeros(16, 3)}},
               os.path.join(tmp, "flat.pth"))


# (program, arguments, the one line's pattern). {tmp}: the case's folder; {data}: the tiny set.
CASES = [
    ("train.py", ["stray"], r"unexpected arguments: stray"),
    ("train.py", ["--epochs=0"], r"--epochs must be positive, got 0"),
    ("train.py", ["--epochs=abc"], r"flag --epochs=abc: invalid literal"),
    ("train.py", ["--batch_size=-1"], r"--batch_size must be positive"),
    ("train.py", ["--base_lr=0"], r"--base_lr must be positive"),
    ("train.py", ["--base_lr=nan"], r"--base_lr must be a finite number, got nan"),
    ("train.py", ["--weight_decay=inf"], r"--weight_decay must be a finite number, got inf"),
    ("train.py", ["--warmup_epochs=-1"], r"--warmup_epochs must be 0 or more"),
    ("train.py", ["--min_steps=-1"], r"--min_steps must be 0 or more"),
    ("train.py", ["--seed=-1"], r"--seed must be 0 or more"),
    ("train.py", ["--logical_cpus=-1"], r"--logical_cpus must be 0 or more"),
    ("train.py", ["--shuffle_buffer=-1"], r"--shuffle_buffer must be positive"),
    ("train.py", ["--steps_per_epoch=-2"], r"--steps_per_epoch must be 0 or more"),
    ("train.py", ["--weight_decay=-1"], r"--weight_decay must be 0 or more"),
    ("train.py", ["--label_smoothing=1"], r"--label_smoothing must be in \[0, 1\)"),
    ("train.py", ["--dropout=1.5"], r"--dropout must be in \[0, 1\)"),
    ("train.py", ["--ema_decay=1"], r"--ema_decay must be in \[0, 1\)"),
    ("train.py", ["--min_crop_scale=0"], r"--min_crop_scale must be in \(0, 1\]"),
    ("train.py", ["--image_size=16"], r"--image_size must be at least 32"),
    ("train.py", ["--model=resnet50"], r"resnet50"),
    ("train.py", ["--width=0.7"], r"--width must be one of"),
    ("train.py", ["--dtype=int8"], r"flag --dtype=int8: value should be one of"),
    ("train.py", ["--strategy=multi_worker"], r"needs TF_CONFIG"),
    ("train.py", ["--dataset=no_such_dataset"], r"no_such_dataset"),
    ("train.py", ["--dataset=folder:{tmp}/nowhere"], r"nowhere"),
    ("train.py", ["--dataset=folder:{tmp}/photos"], r"photos"),
    ("train.py", ["--output_dir={tmp}/notes.txt"], r"--output_dir: .*notes\.txt is a file"),
    ("train.py", ["--latest_file={tmp}/photos"], r"--latest_file: .*photos is a folder"),
    ("train.py", ["--resume"], r"--resume: .* has no checkpoint"),
    ("train.py", ["--init_from={tmp}/missing.keras"], r"missing\.keras"),
    ("train.py", ["--init_from={tmp}/notes.txt"], r"notes\.txt"),
    ("train.py", ["--init_from={tmp}/notzip.keras"], r"notzip\.keras"),
    ("train.py", ["--init_from={tmp}/lambda.keras"], r"lambda\.keras"),
    ("train.py", ["--init_from={tmp}/deep.keras"], r"deep\.keras|nested too deeply"),
    ("train.py", ["--qat", "--init_from={tmp}/dense.keras"], r"dense\.keras"),
    ("train.py", ["--freeze_backbone"], r"give --init_from"),
    ("train.py", ["--task=detection", "--qat", "--init_from={tmp}/dense.keras"],
     r"--qat trains classifiers only"),
    ("train.py", ["--task=segmentation"], r"flag --task=segmentation: value should be one of"),
    ("export_tflite.py", ["stray"], r"unexpected arguments: stray"),
    ("export_tflite.py", ["--quantize=int4"], r"int4"),
    ("export_tflite.py", ["--io_type=int4"], r"flag --io_type=int4: value should be one of"),
    ("export_tflite.py", ["--num_threads=0"], r"flag --num_threads=0: 0 is not a positive"),
    ("export_tflite.py", ["--width=0.7"], r"0\.7"),
    ("export_tflite.py", ["--model={tmp}/dense.keras"], r"not an image model"),
    ("export_tflite.py", ["--model={tmp}/missing.keras"], r"missing\.keras"),
    ("export_tflite.py", ["--model={tmp}/notzip.keras"], r"notzip\.keras"),
    ("export_tflite.py", ["--model={tmp}/lambda.keras"], r"Lambda|lambda\.keras"),
    ("export_tflite.py", ["--model={tmp}/deep.keras"], r"deep\.keras|nested too deeply"),
    ("export_tflite.py", ["--model={tmp}/mine.keras"], r"mine\.keras"),
    ("export_tflite.py", ["--output_dir={tmp}/notes.txt"], r"notes\.txt"),
    ("export_tflite.py", ["--calibration_split=nope"], r"nope"),
    ("export_tflite.py", ["--eval_split=nope"], r"nope"),
    ("export_tflite.py", ["--eval_dataset=no_such_dataset"], r"no_such_dataset"),
    ("export_tflite.py", ["--metadata_author=\x01"], r"--metadata_author must be printable"),
    ("convert_torch", [], r"expected one CHECKPOINT path"),
    ("convert_torch", ["{tmp}/flat.pth", "{tmp}/flat.pth"], r"expected one CHECKPOINT path"),
    ("convert_torch", ["{tmp}/missing.pth"], r"missing\.pth"),
    ("convert_torch", ["{tmp}/truncated.pth"], r"truncated\.pth is not a readable"),
    ("convert_torch", ["{tmp}/notes.txt"], r"notes\.txt is not a readable"),
    ("convert_torch", ["{tmp}/flat.pth", "--width=1.0"], r"conv_stem\.weight"),
    ("convert_torch", ["{tmp}/flat.pth", "--output={tmp}/mine.keras"], r"mine\.keras is a folder"),
    ("convert_torch", ["{tmp}/flat.pth", "--output={tmp}/out.h5"], r"--output must be a \.keras"),
    ("convert_torch", ["{tmp}/flat.pth", "--output={tmp}/no/out.keras"], r"does not exist"),
    ("convert_torch", ["{tmp}/flat.pth", "--width=0.7"], r"--width must be one of"),
    ("repghost_tf.count", ["stray"], r"unexpected arguments: stray"),
    ("repghost_tf.count", ["--model=resnet50"], r"flag --model=resnet50: value should be one of"),
    ("repghost_tf.count", ["--image_size=8"], r"flag --image_size=8: .*32"),
    ("benchmark.device", ["stray"], r"unexpected arguments: stray"),
    ("benchmark.device", ["--benchmark_model={tmp}/missing"], r"binary not found"),
    ("benchmark.device", ["--adb={tmp}/no_adb"], r"adb not found"),
    ("benchmark.device", ["--threads=x"], r"--threads must be integers"),
]
DEFAULTS = {"train.py": TRAIN, "export_tflite.py": EXPORT,
            "convert_torch": ["--width=0.5", "--output={tmp}/out.keras"],
            "benchmark.device": ["--benchmark_model={tmp}/notes.txt"]}


def _tree(folder: str) -> dict[str, tuple[int, int]]:
    found = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            path = os.path.join(root, name)
            stat = os.lstat(path)
            found[os.path.relpath(path, folder)] = (stat.st_size, stat.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> str:
    folder = str(tmp_path_factory.mktemp("inputs"))
    _files(folder)
    return folder


def _arguments(program: str, arguments: list[str]) -> list[str]:
    """The case's arguments after the program's defaults; a later flag wins in absl, and a
    positional argument goes first (convert_torch's checkpoint)."""
    def flag(argument: str) -> str:  # --model and --width are one choice
        name = argument.split("=", 1)[0]
        return "--model" if name == "--width" else name

    positional = [a for a in arguments if not a.startswith("--")]
    named = [a for a in arguments if a.startswith("--")]
    given = {flag(a) for a in named}
    defaults = [a for a in DEFAULTS.get(program, []) if flag(a) not in given]
    return positional + defaults + named


def _one_line_and_nothing_written(program: str, arguments: list[str], message: str,
                                  values: dict[str, str], tmp_path, data_dir: str,
                                  unwatched: str | None = None) -> None:
    """Runs the case: one line on stderr matching `message`, a non-zero exit, and nothing in
    `tmp_path` (but the folder `unwatched`, which the caller checks) or `data_dir` changed."""
    command = [sys.executable, *PROGRAMS[program],
               *(a.format(**values) for a in _arguments(program, arguments))]

    def watched() -> dict:
        return {path: stat for path, stat in _tree(str(tmp_path)).items() if path != unwatched}

    before, data_before = watched(), _tree(data_dir)
    result = subprocess.run(command, cwd=tmp_path, env=user_environment(PYTHONPATH=ROOT),
                            capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    print(lines[-1] if lines else "")  # for docs/bad_input.md: pytest -rP shows it
    assert result.returncode != 0, result.stdout[-2000:]
    assert len(lines) == 1 and not native_log_lines(result.stderr), result.stderr[-3000:]
    assert lines[0].startswith(f"{program}: error: "), lines[0]
    assert re.search(message.format(**values), lines[0]), lines[0]
    assert watched() == before and _tree(data_dir) == data_before


def _link_inputs(inputs: str, tmp_path) -> None:
    for name in os.listdir(inputs):
        os.symlink(os.path.join(inputs, name), tmp_path / name)


@pytest.mark.parametrize("program, arguments, message", CASES,
                         ids=[f"{p}:{' '.join(a) or '-'}" for p, a, _ in CASES])
def test_bad_input_is_one_line_and_writes_nothing(program, arguments, message, inputs,
                                                 tiny_data_dir, tmp_path):
    _link_inputs(inputs, tmp_path)
    _one_line_and_nothing_written(program, arguments, message,
                                  {"tmp": str(tmp_path), "data": tiny_data_dir}, tmp_path,
                                  tiny_data_dir)


# Outputs on real file systems that refuse them: {ro} is a read-only tmpfs, {full} a 256 KiB one
# that fills up during the first model file. Checked before any work where it can be (read-only),
# else reported with the file that did not fit, leaving no folder or file behind.
CASES_ON_MOUNTS = [
    ("train.py", ["--output_dir={ro}/run"], r"--output_dir: .*{ro} is on a read-only file system"),
    ("train.py", ["--latest_file={ro}/LATEST"],
     r"--latest_file: .*{ro} is on a read-only file system"),
    ("train.py", ["--data_dir={ro}/tfds"], r"--data_dir: .*{ro} is on a read-only file system"),
    ("train.py", ["--output_dir={full}/run"], r"No space left on device: '{full}/run/"),
    ("export_tflite.py", ["--output_dir={ro}/out"],
     r"--output_dir: .*{ro} is on a read-only file system"),
    ("export_tflite.py", ["--output_dir={full}/out"], r"No space left on device: '{full}/out/"),
    ("convert_torch", ["{tmp}/flat.pth", "--output={ro}/out.keras"],
     r"--output: .*{ro} is on a read-only file system"),
]


@pytest.fixture
def mounts(tmp_path):
    """A read-only and a 256 KiB tmpfs in the case's folder; the test skips, in one line, where
    mounting is refused (not root)."""
    mounted = []
    try:
        for name, options in (("ro", "ro,size=1m"), ("full", "size=256k")):
            point = tmp_path / name
            point.mkdir()
            try:
                result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                                        capture_output=True, text=True)
            except FileNotFoundError:
                pytest.skip("no mount command here")
            if result.returncode:
                pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
            mounted.append(point)
        yield {point.name: str(point) for point in mounted}
    finally:
        for point in mounted:
            subprocess.run(["umount", str(point)], check=False)


@pytest.mark.parametrize("program, arguments, message", CASES_ON_MOUNTS,
                         ids=[f"{p}:{' '.join(a)}" for p, a, _ in CASES_ON_MOUNTS])
def test_unwritable_and_full_locations_are_one_line(program, arguments, message, mounts, inputs,
                                                   tiny_data_dir, tmp_path):
    _link_inputs(inputs, tmp_path)
    _one_line_and_nothing_written(program, arguments, message,
                                  {"tmp": str(tmp_path), "data": tiny_data_dir, **mounts},
                                  tmp_path, tiny_data_dir, unwatched="full")
    # What a command made on the full file system and could not finish, it removed.
    assert os.listdir(mounts["full"]) == []


def test_a_second_run_on_a_held_run_directory_refuses(tiny_data_dir, tmp_path):
    """While a run holds its directory, `train.py` on it is refused in one line; nothing of the
    first run's is touched."""
    run_dir = tmp_path / "run"
    with runs.hold(str(run_dir)):
        (run_dir / "summary.json").write_text("{}")
        before = _tree(str(tmp_path))
        values = {"tmp": str(tmp_path), "data": tiny_data_dir}
        result = subprocess.run(
            [sys.executable, *PROGRAMS["train.py"], *(a.format(**values) for a in TRAIN)],
            env=user_environment(PYTHONPATH=ROOT), capture_output=True, text=True, timeout=300)
        assert _tree(str(tmp_path)) == before
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"train.py: error: {run_dir} is in use by another training run; wait for it to end or "
        "give another --output_dir"]


def test_ctrl_c_during_training_is_one_line_and_the_run_resumes(tiny_data_dir, tmp_path):
    """SIGINT after the first checkpoint: one line, exit status 130; the same command then
    resumes after the finished epoch."""
    values = {"tmp": str(tmp_path), "data": tiny_data_dir}
    command = [sys.executable, *PROGRAMS["train.py"],
               *(a.format(**values) for a in TRAIN if not a.startswith("--epochs")),
               "--epochs=3", "--steps_per_epoch=20"]
    process = subprocess.Popen(command, env=user_environment(PYTHONPATH=ROOT),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 300
    while not (checkpoints.is_dir() and any(p.name.startswith("epoch-")
                                            for p in checkpoints.iterdir())):
        assert process.poll() is None and time.time() < deadline, "no checkpoint before the end"
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines() == [
        "train.py: interrupted; run the same command again to resume after the last finished "
        "epoch"], stderr[-3000:]
    result = subprocess.run(command, env=user_environment(PYTHONPATH=ROOT), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming " in result.stdout


def test_ctrl_c_during_int8_calibration_is_one_line_and_writes_nothing(tiny_data_dir, tmp_path):
    """SIGINT once the export reads its calibration split (the converter's calibration, which
    runs the images from C++ and used to swallow it and go on): one line, exit 130, no file."""
    values = {"tmp": str(tmp_path), "data": tiny_data_dir}
    command = [sys.executable, *PROGRAMS["export_tflite.py"],
               *(a.format(**values) for a in EXPORT), "--calibration_split=train",
               "--calibration_steps=300"]
    process = subprocess.Popen(command, env=user_environment(PYTHONPATH=ROOT),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    descriptors = f"/proc/{process.pid}/fd"
    deadline = time.time() + 300

    def reading_train_split() -> bool:
        with contextlib.suppress(OSError):
            for descriptor in os.listdir(descriptors):
                with contextlib.suppress(OSError):
                    if "-train.tfrecord" in os.readlink(os.path.join(descriptors, descriptor)):
                        return True
        return False

    while True:
        assert process.poll() is None and time.time() < deadline, "no calibration seen"
        if reading_train_split():
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines() == [
        "export_tflite.py: interrupted; every file written so far is whole"], stderr[-3000:]
    assert not os.path.exists(tmp_path / "out")
