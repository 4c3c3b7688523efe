"""The run directory: what training writes and what export and the benchmarks read.

    runs/LATEST                  path of the newest finished run
    runs/<model>/best.keras      EMA weights of the best validation epoch (training form)
                 deploy.keras    best.keras fused (QAT: finalized for int8): the model to export
                 last.keras      EMA weights of the last epoch; last_raw.keras: raw weights
                 summary.json    `RunSummary`
                 checkpoints/    per-epoch training state (repghost_tf.training.checkpoints)
                 logs/           TensorBoard

Every file is written atomically (`repghost_tf.atomic_files`), and one run at a time writes to a
run directory (`hold`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import zipfile
from typing import Iterator

from repghost_tf.atomic_files import check_target, write_json, write_text

BEST_MODEL = "best.keras"
DEPLOY_MODEL = "deploy.keras"
LAST_MODEL = "last.keras"
LAST_RAW_MODEL = "last_raw.keras"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT_FOLDER = re.compile(r"^epoch-\d{4,}$")  # one finished epoch's, in CHECKPOINTS
LOGS = "logs"
RUNS_DIR = "runs"
LATEST = "LATEST"


class RunError(ValueError):
    """A run directory that cannot be read as asked; the message (one line) says why."""


class RunDirectoryBusy(RuntimeError):
    """Another process is running in the run directory."""


@contextlib.contextmanager
def hold(run_dir: str) -> Iterator[None]:
    """Holds `run_dir` for one run's life: an advisory lock on the folder itself, so that a
    second run on it refuses in one line instead of mixing its files with the first's. The
    kernel drops the lock when the process ends, however it ends, so a killed run leaves none
    behind. A folder made here is removed when the run leaves it empty, or fails before its first
    checkpoint (a full disk, say): it then holds nothing to resume from, only its logs."""
    check_target(run_dir, folder=True)
    made = not os.path.isdir(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    descriptor = os.open(run_dir, os.O_RDONLY)
    failed = False
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirectoryBusy(
                f"{run_dir} is in use by another training run; wait for it to end or give "
                "another --output_dir"
            ) from None
        yield
    except BaseException:
        failed = True
        raise
    finally:
        os.close(descriptor)
        if made and not os.listdir(run_dir):
            os.rmdir(run_dir)
        elif made and failed and not _has_checkpoint(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)


def _has_checkpoint(run_dir: str) -> bool:
    folder = os.path.join(run_dir, CHECKPOINTS)
    return os.path.isdir(folder) and any(
        CHECKPOINT_FOLDER.match(name) for name in os.listdir(folder))


@dataclasses.dataclass
class RunSummary:
    """summary.json: what a finished run was and how it scored."""

    model: str
    dataset: str
    image_size: int
    task: str = "classification"
    epochs: int = 0
    step: int = 0
    best_epoch: int = 0
    # The validation number that picked best.keras: classification's, detection's.
    best_val_ema_top1: float | None = None
    best_val_ema_loss: float | None = None
    history: list[dict] = dataclasses.field(default_factory=list)
    trainable_weights_sha256: str = ""
    test_top1: float | None = None
    test_top5: float | None = None
    # Detection: COCO mAP@[.5:.95] and mAP@.5 of best.keras on the test split.
    test_map: float | None = None
    test_map50: float | None = None
    # A quantization-aware run: the float model it fine-tuned.
    init_from: str | None = None
    # A fine-tuning run: the pretrained model it started from.
    pretrained_from: str | None = None

    def write(self, run_dir: str, *, publish: bool = True) -> None:
        write_json(os.path.join(run_dir, SUMMARY), dataclasses.asdict(self), publish=publish)

    @classmethod
    def read(cls, run_dir: str) -> RunSummary | None:
        """The run's summary; None when it has none. Raises RunError for an unreadable one."""
        path = os.path.join(run_dir, SUMMARY)
        if not os.path.isfile(path):
            return None
        try:
            with open(path, encoding="utf-8") as file:
                fields = json.load(file)
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in fields.items() if k in known})
        except (OSError, ValueError, TypeError) as error:
            raise RunError(f"cannot read {path}: {error}") from error


def default_run_dir(model_name: str) -> str:
    return os.path.join(RUNS_DIR, model_name)


def default_latest_file() -> str:
    return os.path.join(RUNS_DIR, LATEST)


def write_latest(latest_file: str, run_dir: str, *, publish: bool = True) -> None:
    """Points `latest_file` at `run_dir`, as an absolute path."""
    write_text(latest_file, os.path.abspath(run_dir) + "\n", publish=publish)


def model_to_export(run_dir: str) -> str | None:
    """The run's deploy.keras, else its best.keras; None when it has neither."""
    for name in (DEPLOY_MODEL, BEST_MODEL):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            return path
    return None


def latest_model(runs_dir: str, hint: str) -> str:
    """The model to export of the run that `runs_dir`/LATEST names. A relative path in LATEST is
    taken from the working directory, else from the project (the parent of `runs_dir`).

    Raises RunError, ending with `hint`, when there is none.
    """
    latest = os.path.join(runs_dir, LATEST)
    if not os.path.isfile(latest):
        raise RunError(f"no trained model: {latest} does not exist; {hint}")
    with open(latest, encoding="utf-8") as file:
        run_dir = file.read().strip()
    project = os.path.dirname(os.path.abspath(runs_dir))
    for directory in (run_dir, os.path.join(project, run_dir)):
        path = model_to_export(directory)
        if path:
            return path
    raise RunError(
        f"{latest} names {run_dir!r}, which holds no {DEPLOY_MODEL} or {BEST_MODEL}; {hint}"
    )


def keras_model_name(path: str) -> str | None:
    """The name of the model in a .keras file, read from its config without loading it."""
    return _keras_config(path).get("config", {}).get("name")


def keras_class_name(path: str) -> str | None:
    """The class of the model in a .keras file ("Functional", "RepGhostNetDetector", ...)."""
    return _keras_config(path).get("class_name")


def _keras_config(path: str) -> dict:
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return {}


def summary_of_model(model_path: str | None) -> RunSummary | None:
    """The summary of the run a model file belongs to (the summary.json beside it), if any."""
    if not model_path:
        return None
    return RunSummary.read(os.path.dirname(os.path.abspath(model_path)))
