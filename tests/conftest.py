import contextlib
import dataclasses
import os

# Quiet TensorFlow's C++ start-up logging; must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# timm imports triton, whose native library crashes the process when it loads after
# TensorFlow's; the PyTorch reference stack, where installed, must therefore load first.
with contextlib.suppress(ImportError):
    import timm  # noqa: F401

import pytest  # noqa: E402

from repghost_tf import data  # noqa: E402
from repghost_tf.training import TrainConfig, train  # noqa: E402

TINY = f"{data.BUILTIN_DATASET}/tiny"
# A short, repeatable schedule on the tiny built-in set (four classes, 1,200 training images): two
# epochs of 150 steps of 64 images, without augmentation, take a from-scratch RepGhostNet 0.5x from
# chance (25%) to 85.00% test top-1, with the same weights on every run on one machine
# (`deterministic`). Smaller batches learn far more slowly per step, and steps, not images, are
# what cost time on a CPU.
TINY_RUN = dict(
    model="repghostnet_050", dataset=TINY, image_size=48, batch_size=64, epochs=2,
    steps_per_epoch=150, warmup_epochs=0.2, base_lr=3.2, ema_decay=0.99, min_crop_scale=1.0,
    color_jitter=0.0, random_erasing=0.0, label_smoothing=0.0, dropout=0.0, verbose=0,
    deterministic=True,
)
# Tests that use `tiny_run` share one training run per pytest-xdist worker.
TINY_RUN_GROUP = pytest.mark.xdist_group("tiny_run")


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
    directory = str(tmp_path_factory.mktemp("tfds"))
    data.prepare(TINY, directory)
    return directory


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data_dir) -> tuple[TrainConfig, dict]:
    """One uninterrupted TINY_RUN, laid out as `python train.py` lays it out in a project:
    runs/repghostnet_050/ and runs/LATEST; with its summary as summary.json holds it."""
    runs = tmp_path_factory.mktemp("project") / "runs"
    config = TrainConfig(**TINY_RUN, data_dir=tiny_data_dir, output_dir=str(runs / "repghostnet_050"),
                         latest_file=str(runs / "LATEST"))
    return config, dataclasses.asdict(train(config))
