"""Importing official and timm PyTorch checkpoints: every form and width converts exactly, and bad
or hostile files are refused with one line, no output and no code run."""

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest
from absl import flags

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("safetensors")

import repghost_tf  # noqa: E402
from helpers import (  # noqa: E402
    numpy_state_dict,
    random_images,
    randomized_timm_model,
    relative_error,
    timm_logits,
    write_torch_checkpoint,
)
from repghost_tf import convert_torch  # noqa: E402
from repghost_tf.atomic_files import save_model  # noqa: E402
from repghost_tf.torch_weights import convert_checkpoint  # noqa: E402
from repghost_tf.torch_weights import (  # noqa: E402
    CheckpointError,
    WeightMismatchError,
    load_torch_weights,
    read_checkpoint,
    select_state_dict,
)

REPO = Path(__file__).resolve().parents[1]
SUFFIXES = {
    "training_checkpoint": ".pth.tar",
    "state_dict": ".pth",
    "deploy_state_dict": ".pth",
    "safetensors": ".safetensors",
}


@pytest.fixture(scope="module")
def images():
    return random_images(2, 128, 128, seed=11)


def _checkpoint(tmp_path, name, form, seed=0, suffix=None):
    """A randomised timm model saved in `form`; returns (path, training model, reference model)."""
    model = randomized_timm_model(name, seed=seed)
    ema = randomized_timm_model(name, seed=seed + 100) if form == "training_checkpoint" else None
    path = tmp_path / f"{name}_{form}{suffix or SUFFIXES[form]}"
    reference = write_torch_checkpoint(path, form, model, ema)
    return path, model, reference


# One form per width (`.bin` twice); 0.5x runs every form below.
@pytest.mark.parametrize(
    "name, form, suffix, deploy",
    [
        ("repghostnet_058", "state_dict", ".bin", None),
        ("repghostnet_080", "deploy_state_dict", ".pth", None),
        ("repghostnet_100", "safetensors", None, True),
        ("repghostnet_111", "training_checkpoint", None, None),
        ("repghostnet_130", "deploy_state_dict", ".bin", True),
        ("repghostnet_150", "safetensors", None, None),
        ("repghostnet_200", "training_checkpoint", None, None),
        ("ghostnet_050", "training_checkpoint", None, None),
        ("ghostnet_100", "safetensors", None, True),
        ("ghostnet_130", "state_dict", ".pth", None),
    ],
)
def test_every_width_converts_to_the_same_logits(tmp_path, images, name, form, suffix, deploy):
    path, _, reference = _checkpoint(tmp_path, name, form, seed=3, suffix=suffix)
    model = convert_checkpoint(path, name, deploy=deploy, logits=True)
    assert repghost_tf.is_fused(model) == bool(deploy or form == "deploy_state_dict")
    assert relative_error(model(images), timm_logits(reference, images)) < 1e-4


@pytest.mark.parametrize("form", list(SUFFIXES))
def test_every_form_converts_exactly(tmp_path, images, form):
    path, _, reference = _checkpoint(tmp_path, "repghostnet_050", form, seed=1)
    expected = timm_logits(reference, images)  # the EMA model's, for the training checkpoint
    model = convert_checkpoint(path, "repghostnet_050", logits=True)
    assert repghost_tf.is_fused(model) == (form == "deploy_state_dict")
    assert relative_error(model(images), expected) < 1e-4
    if form == "safetensors":  # the deploy form's reload is checked through the CLI below
        output = tmp_path / "converted.keras"
        save_model(model, output)
        assert sorted(os.listdir(tmp_path)) == sorted([path.name, output.name])  # no temporary
        reloaded = keras.saving.load_model(output, safe_mode=True)
        assert relative_error(reloaded(images), expected) < 1e-4


def test_no_ema_picks_state_dict(tmp_path, images):
    path, model, ema = _checkpoint(tmp_path, "repghostnet_050", "training_checkpoint", seed=2)
    expected = timm_logits(model, images)
    assert relative_error(timm_logits(ema, images), expected) > 0.1
    converted = convert_checkpoint(path, "repghostnet_050", ema=False, logits=True)
    assert relative_error(converted(images), expected) < 1e-4
    assert read_checkpoint(path)[1] == "state_dict_ema"
    assert read_checkpoint(path, ema=False)[1] == "state_dict"
    assert select_state_dict({"state_dict": model.state_dict()})[1] == "state_dict"  # no EMA


def test_load_torch_weights_checks_the_form_and_folds_in_place(tmp_path, images):
    path, model, deployed = _checkpoint(tmp_path, "repghostnet_050", "deploy_state_dict", seed=4)
    training = repghost_tf.RepGhostNet050(classifier_activation=None)
    before = [w.copy() for w in training.get_weights()]
    with pytest.raises(
        WeightMismatchError, match=r"'blocks\.0\.0\.ghost1\.cheap_operation\.weight'.*deploy form"
    ):
        load_torch_weights(training, path)
    assert all((a == b).all() for a, b in zip(before, training.get_weights()))

    # Into a deploy-form model: a deploy-form checkpoint, then a training-form state_dict of
    # torch tensors; both are folded exactly.
    target = repghost_tf.RepGhostNet050(classifier_activation=None, deploy=True)
    for source, reference in ((path, deployed), (model.state_dict(), model)):
        load_torch_weights(target, source)
        assert relative_error(target(images), timm_logits(reference, images)) < 1e-4


def test_a_width_with_the_same_stem_names_the_first_offending_tensor():
    # 1.0x and 1.11x share the stem and the first block; they differ from blocks.1.0 on.
    state_dict = numpy_state_dict(randomized_timm_model("repghostnet_111"))
    with pytest.raises(
        WeightMismatchError, match=r"^tensor 'blocks\.1\.0\.ghost1\.primary_conv\.0\.weight'"
    ):
        load_torch_weights(repghost_tf.RepGhostNet100(), state_dict)


class _Payload:
    """A pickle that would create `marker` when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickles_that_run_code_are_refused_and_do_not_run(tmp_path):
    marker = tmp_path / "payload_ran"
    zipped, legacy, framed = tmp_path / "evil.pth", tmp_path / "evil.pth.tar", tmp_path / "evil.bin"
    torch.save({"state_dict": {"conv_stem.weight": _Payload(marker)}}, zipped)
    legacy.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}, protocol=2))
    framed.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    for path, message in (
        (zipped, "refusing to load .*'io.open'"),
        (legacy, "refusing to load .*'io.open'"),
        (framed, "a pickle that a weights-only load refuses"),
    ):
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(path)
        assert not marker.exists()
    torch.load(zipped, weights_only=False)  # the control: unpickled unsafely, the payload runs
    assert marker.exists()


def test_damaged_and_foreign_files_are_refused(tmp_path):
    cases = {
        "empty.pth": b"",
        "text.pth": b"not a checkpoint\n",
        "truncated.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match="not a readable"):
            read_checkpoint(tmp_path / name)
    torch.save({"weights": "a string"}, tmp_path / "strings.pth")
    with pytest.raises(CheckpointError, match="entry 'weights' holds a str, not a tensor"):
        read_checkpoint(tmp_path / "strings.pth")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(tmp_path / "absent.pth")


def test_without_torch_pickles_name_the_extra_and_safetensors_still_load(tmp_path, monkeypatch):
    model = randomized_timm_model("repghostnet_050")
    write_torch_checkpoint(tmp_path / "m.pth", "state_dict", model)
    write_torch_checkpoint(tmp_path / "m.safetensors", "safetensors", model)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(CheckpointError, match=r"needs PyTorch.*pip install 'repghost-tf\[torch\]'"):
        read_checkpoint(tmp_path / "m.pth")
    state_dict, _ = read_checkpoint(tmp_path / "m.safetensors")
    expected = numpy_state_dict(model)
    assert state_dict.keys() == expected.keys()
    assert all((state_dict[k] == expected[k]).all() for k in expected)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(CheckpointError, match=r"needs the safetensors package.*\[torch\]"):
        read_checkpoint(tmp_path / "m.safetensors")


class _FailingModel:
    """Writes half a file, then fails, as a full disk would."""

    def save(self, path):
        Path(path).write_bytes(b"PK\x03\x04 half")
        raise OSError("No space left on device")


def test_a_failed_save_leaves_the_previous_output_and_no_temporary(tmp_path):
    output = tmp_path / "model.keras"
    output.write_bytes(b"previous")
    with pytest.raises(OSError, match="No space left"):
        save_model(_FailingModel(), output)
    assert os.listdir(tmp_path) == [output.name] and output.read_bytes() == b"previous"


def _run_cli(*args):
    """Runs the command line's main in this process, on flags of its own."""
    flag_values = flags.FlagValues()
    convert_torch.define_flags(flag_values)
    argv = flag_values(["convert_torch", *map(str, args)])
    convert_torch.main(argv, flag_values)


@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    train, model, _ = _checkpoint(work, "repghostnet_050", "training_checkpoint", seed=9)
    deploy, _, _ = _checkpoint(work, "repghostnet_050", "deploy_state_dict", seed=9)
    truncated = work / "truncated.pth.tar"
    truncated.write_bytes(train.read_bytes()[: train.stat().st_size // 2])
    foreign = work / "photo.pth"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    evil = work / "evil.pth"
    torch.save({"state_dict": {"conv_stem.weight": _Payload(work / "payload_ran")}}, evil)
    paths = {"train": train, "deploy": deploy, "truncated": truncated, "foreign": foreign}
    return work, model, {**paths, "evil": evil}


def test_cli_converts_without_ema_to_a_deploy_model_that_reloads(cli_inputs, images, capsys):
    work, model, paths = cli_inputs
    output = work / "converted.keras"
    _run_cli(paths["train"], "--width=0.5", "--noema", "--deploy", "--logits",
             f"--output={output}")
    assert "repghostnet_050, deploy form, weights from state_dict." in capsys.readouterr().out
    reloaded = keras.saving.load_model(output, safe_mode=True)
    assert repghost_tf.is_fused(reloaded)
    assert relative_error(reloaded(images), timm_logits(model, images)) < 1e-4


@pytest.mark.parametrize(
    "source, args, message",
    [
        ("train", ["--width=1.0"],
         r"tensor 'conv_stem\.weight' has shape \(8, 3, 3, 3\), which does not fit "
         r"repghostnet_100"),
        ("deploy", ["--model=repghostnet_050", "--nodeploy"],
         r"tensor 'blocks\.0\.0\.ghost1\.cheap_operation\.weight' is a fused cheap operation"),
        ("truncated", ["--width=0.5"], r"truncated\.pth\.tar is not a readable PyTorch checkpoint"),
        ("foreign", ["--width=0.5"], r"photo\.pth is not a readable PyTorch checkpoint"),
        ("evil", ["--width=0.5"], r"refusing to load .*evil\.pth: it asks to unpickle 'io\.open'"),
        ("train", ["--width=0.7"], r"--width must be one of 0\.5, 0\.58"),
        ("train", ["--width=0.5", "--model=ghostnet_050"], r"one of --model and --width, not both"),
    ],
)
def test_cli_refuses_with_one_line_and_writes_nothing(tmp_path, cli_inputs, source, args,
                                                      message):
    work, _, paths = cli_inputs
    output = tmp_path / "refused.keras"
    with pytest.raises(SystemExit) as exit_:
        _run_cli(paths[source], *args, f"--output={output}")
    error = exit_.value.code  # a str: Python prints it to stderr and exits with status 1
    assert isinstance(error, str) and "\n" not in error
    assert error.startswith("convert_torch: error: ") and re.search(message, error), error
    assert not os.listdir(tmp_path)  # neither the output nor a temporary file
    assert not (work / "payload_ran").exists()


def test_cli_process_refuses_a_malicious_pickle_without_running_it(tmp_path):
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pth.tar"
    torch.save({"state_dict_ema": {"conv_stem.weight": _Payload(marker)}}, evil)
    output = tmp_path / "out.keras"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3",
           "TF_ENABLE_ONEDNN_OPTS": "0"}
    command = [sys.executable, "-m", "repghost_tf.convert_torch", str(evil), "--width=0.5",
               "--noema", f"--output={output}"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"convert_torch: error: refusing to load {evil}: it asks to unpickle 'io.open', which "
        "could run code; only tensors, plain containers and argparse.Namespace are allowed"
    ]
    assert sorted(os.listdir(tmp_path)) == [evil.name] and not marker.exists()
