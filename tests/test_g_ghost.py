"""G-GhostNet (G-Ghost stages on RegNetX): official counts, official-layout weight import against
an independent NumPy reference, exact fusion, and saving.

The reference below is written from the architecture as published (IJCV 2022, arXiv 2201.03297,
and the official module names), in NCHW float64 NumPy, without using any of the Keras code.
"""

import keras
import numpy as np
import pytest

import repghost_tf
from helpers import (
    assert_fusion_is_exact,
    randomize_batchnorms,
    random_images,
    relative_error,
    slow_after,
)
from repghost_tf.models.g_ghost import (
    GGhostRegNetX,
    GGhostRegNetX002,
    GGhostStage,
    XBlock,
)
from repghost_tf.fusion import walk_layers
from repghost_tf.torch_weights import WeightMismatchError, load_state_dict

# variant: (depths, widths, group width, official conv+fc params, multiply-adds at 224x224)
OFFICIAL = {
    "002": ([1, 1, 4, 7], [24, 56, 152, 368], 8, 1_809_584, 130_922_824),
    "004": ([1, 2, 7, 12], [32, 64, 160, 384], 16, 2_860_264, 221_245_824),
    "006": ([1, 3, 5, 7], [48, 96, 240, 528], 24, 4_004_704, 389_787_912),
    "008": ([1, 3, 7, 5], [64, 128, 288, 672], 16, 5_218_504, 528_571_968),
    "016": ([2, 4, 10, 2], [72, 168, 408, 912], 24, 7_075_552, 1_021_379_556),
    "032": ([2, 6, 15, 2], [96, 192, 432, 1008], 48, 10_466_152, 1_801_746_240),
    "040": ([2, 5, 14, 2], [80, 240, 560, 1360], 40, 15_670_784, 2_228_368_516),
    "064": ([2, 4, 10, 1], [168, 392, 784, 1624], 56, 17_937_936, 4_055_260_916),
    "080": ([2, 5, 15, 1], [80, 240, 720, 1920], 120, 24_524_184, 4_149_668_216),
    "120": ([2, 5, 11, 1], [224, 448, 896, 2240], 112, 30_557_032, 7_377_522_432),
    "160": ([2, 6, 13, 1], [256, 512, 896, 2048], 128, 32_307_016, 8_997_384_192),
    "320": ([2, 7, 13, 1], [336, 672, 1344, 2520], 168, 62_706_352, 17_157_778_680),
}

MEAN = np.array([0.485, 0.456, 0.406]) * 255
STD = np.array([0.229, 0.224, 0.225]) * 255
EPS = 1e-5


# ---------------------------------------------------------------------------------------------
# Independent reference: official key names and shapes, and a NumPy forward pass.
# ---------------------------------------------------------------------------------------------


def _ghost(stage_index, depth):
    return stage_index == 2 or (stage_index in (1, 3) and depth > 2)


def _split(width, group_width):
    narrow_group_width = int(group_width * 0.75)
    raw = int(width * 0.5 / narrow_group_width) * narrow_group_width
    return narrow_group_width, raw, width - raw


class _StateDict(dict):
    """Builds a state_dict in the official layout from random arrays."""

    def __init__(self, seed):
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def conv(self, key, out, in_per_group, kernel):
        fan_in = in_per_group * kernel * kernel
        self[f"{key}.weight"] = self.rng.normal(
            0, np.sqrt(2.0 / fan_in), (out, in_per_group, kernel, kernel)).astype("float32")

    def bn(self, key, channels):
        rng = self.rng
        self[f"{key}.weight"] = rng.uniform(0.5, 1.5, channels).astype("float32")
        self[f"{key}.bias"] = rng.normal(0, 0.2, channels).astype("float32")
        self[f"{key}.running_mean"] = rng.normal(0, 0.2, channels).astype("float32")
        self[f"{key}.running_var"] = rng.uniform(0.5, 2.0, channels).astype("float32")
        self[f"{key}.num_batches_tracked"] = np.array(0, dtype="int64")

    def xblock(self, key, in_width, width, stride, group_width):
        groups = width // min(width, group_width)
        self.conv(f"{key}.conv1", width, in_width, 1)
        self.bn(f"{key}.bn1", width)
        self.conv(f"{key}.conv2", width, width // groups, 3)
        self.bn(f"{key}.bn2", width)
        self.conv(f"{key}.conv3", width, width, 1)
        self.bn(f"{key}.bn3", width)
        if stride != 1 or in_width != width:
            self.conv(f"{key}.downsample.0", width, in_width, 1)
            self.bn(f"{key}.downsample.1", width)

    def stage(self, key, in_width, width, group_width, depth):
        narrow_group_width, raw, cheap = _split(width, group_width)
        self.xblock(f"{key}.base", in_width, width, 2, group_width)
        self.xblock(f"{key}.end", width, width, 1, group_width)
        self.conv(f"{key}.merge.1", cheap, width + raw * (depth - 2), 1)
        self.bn(f"{key}.merge.2", cheap)
        self.conv(f"{key}.merge.4", cheap, cheap, 1)
        self.bn(f"{key}.merge.5", cheap)
        self.conv(f"{key}.cheap.0", cheap, cheap, 1)
        self.bn(f"{key}.cheap.1", cheap)
        for i in range(depth - 2):
            self.xblock(f"{key}.layers.{i}", raw, raw, 1, narrow_group_width)

    def model(self, depths, widths, group_width, classes):
        self.conv("conv1", 32, 3, 3)
        self.bn("bn1", 32)
        in_width = 32
        for index, (depth, width) in enumerate(zip(depths, widths)):
            if _ghost(index, depth):
                self.stage(f"layer{index + 1}", in_width, width, group_width, depth)
            else:
                for block in range(depth):
                    self.xblock(f"layer{index + 1}.{block}", in_width if block == 0 else width,
                                width, 2 if block == 0 else 1, group_width)
            in_width = width
        self["fc.weight"] = self.rng.normal(0, 0.05, (classes, in_width)).astype("float32")
        self["fc.bias"] = self.rng.normal(0, 0.05, classes).astype("float32")
        return self


def _conv(x, weight, stride=1, padding=0, groups=1):
    """NCHW grouped cross-correlation, PyTorch semantics, float64."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, c, _, _ = x.shape
    out, in_per_group, kh, kw = weight.shape
    assert c == in_per_group * groups
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]
    ho, wo = windows.shape[2:4]
    windows = windows.reshape(n, groups, in_per_group, ho, wo, kh, kw)
    kernel = np.asarray(weight, np.float64).reshape(groups, out // groups, in_per_group, kh, kw)
    result = np.einsum("ngchwij,gocij->ngohw", windows, kernel, optimize=True)
    return result.reshape(n, out, ho, wo)


def _bn(x, sd, key):
    shape = (1, -1, 1, 1)
    mean = sd[f"{key}.running_mean"].astype(np.float64).reshape(shape)
    var = sd[f"{key}.running_var"].astype(np.float64).reshape(shape)
    gamma = sd[f"{key}.weight"].astype(np.float64).reshape(shape)
    beta = sd[f"{key}.bias"].astype(np.float64).reshape(shape)
    return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def _relu(x):
    return np.maximum(x, 0.0)


def _ref_xblock(x, sd, key, stride, group_width):
    width = sd[f"{key}.conv1.weight"].shape[0]
    groups = width // min(width, group_width)
    out = _relu(_bn(_conv(x, sd[f"{key}.conv1.weight"]), sd, f"{key}.bn1"))
    out = _relu(_bn(_conv(out, sd[f"{key}.conv2.weight"], stride, 1, groups), sd, f"{key}.bn2"))
    out = _bn(_conv(out, sd[f"{key}.conv3.weight"]), sd, f"{key}.bn3")
    if stride != 1 or x.shape[1] != width:
        shortcut = _bn(_conv(x, sd[f"{key}.downsample.0.weight"], stride), sd,
                       f"{key}.downsample.1")
    else:
        shortcut = x
    return _relu(out + shortcut)


def _ref_stage(x, sd, key, width, group_width, depth):
    narrow_group_width, raw, _ = _split(width, group_width)
    x0 = _ref_xblock(x, sd, f"{key}.base", 2, group_width)
    features = [x0]
    e = x0[:, :raw]
    for i in range(depth - 2):
        e = _ref_xblock(e, sd, f"{key}.layers.{i}", 1, narrow_group_width)
        features.append(e)
    m = np.concatenate(features, axis=1).mean(axis=(2, 3), keepdims=True)
    m = _relu(_bn(_conv(m, sd[f"{key}.merge.1.weight"]), sd, f"{key}.merge.2"))
    m = _bn(_conv(m, sd[f"{key}.merge.4.weight"]), sd, f"{key}.merge.5")
    c = _relu(_bn(_conv(x0[:, raw:], sd[f"{key}.cheap.0.weight"]), sd, f"{key}.cheap.1") + m)
    return _ref_xblock(np.concatenate([e, c], axis=1), sd, f"{key}.end", 1, group_width)


def _ref_model(images, sd, depths, widths, group_width):
    """Logits of the official network for raw NHWC [0, 255] pixels."""
    x = ((images.astype(np.float64) - MEAN) / STD).transpose(0, 3, 1, 2)
    x = _relu(_bn(_conv(x, sd["conv1.weight"], 2, 1), sd, "bn1"))
    for index, (depth, width) in enumerate(zip(depths, widths)):
        if _ghost(index, depth):
            x = _ref_stage(x, sd, f"layer{index + 1}", width, group_width, depth)
        else:
            for block in range(depth):
                x = _ref_xblock(x, sd, f"layer{index + 1}.{block}", 2 if block == 0 else 1,
                                group_width)
    pooled = x.mean(axis=(2, 3))
    return pooled @ sd["fc.weight"].astype(np.float64).T + sd["fc.bias"]


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", slow_after(list(OFFICIAL), 3))
def test_counts_match_official(variant):
    *_, params, macs = OFFICIAL[variant]
    model = repghost_tf.create_model(f"g_ghost_regnetx_{variant}")
    counted = repghost_tf.profile(model, image_size=224)
    assert (counted.params, counted.macs) == (params, macs)


def test_deploy_form_counts_add_one_bias_per_folded_channel():
    model = GGhostRegNetX002()
    folded_channels = sum(
        layer.gamma.shape[0]
        for layer in walk_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    deployed = repghost_tf.profile(repghost_tf.fuse(model), image_size=224)
    assert deployed.params == OFFICIAL["002"][3] + folded_channels
    assert deployed.macs == OFFICIAL["002"][4]


@pytest.mark.parametrize("variant,size", [("002", (64, 64)), ("006", (67, 53)), ("016", (64, 96))])
def test_official_state_dict_reproduces_numpy_reference(variant, size):
    depths, widths, group_width, *_ = OFFICIAL[variant]
    state_dict = _StateDict(seed=int(variant)).model(depths, widths, group_width, classes=1000)
    model = GGhostRegNetX(variant, classifier_activation=None)
    load_state_dict(model, state_dict)
    images = random_images(2, *size, seed=3)
    expected = _ref_model(images, state_dict, depths, widths, group_width)
    assert np.linalg.norm(expected) > 1.0
    assert relative_error(model(images, training=False), expected) < 1e-4
    # The deploy form of the imported model agrees with the reference too.
    assert relative_error(repghost_tf.fuse(model)(images, training=False), expected) < 1e-4


def test_ghost_stage_layer_reproduces_numpy_reference():
    # 002's layer3: 56 -> 152 channels, group width 8 (narrow: 6), depth 4.
    in_width, width, group_width, depth = 56, 152, 8, 4
    state_dict = _StateDict(seed=11)
    state_dict.stage("layer3", in_width, width, group_width, depth)
    inputs = keras.Input((None, None, in_width))
    stage = GGhostStage(width, group_width, depth, name="layer3")
    model = keras.Model(inputs, stage(inputs))
    assert (stage.raw_channels, stage.cheap_channels) == (72, 80)
    load_state_dict(model, state_dict)
    x = np.random.default_rng(12).normal(0, 1, (2, 15, 12, in_width)).astype("float32")
    expected = _ref_stage(x.transpose(0, 3, 1, 2).astype(np.float64), state_dict, "layer3",
                          width, group_width, depth).transpose(0, 2, 3, 1)
    assert expected.shape == (2, 8, 6, width)
    assert relative_error(model(x, training=False), expected) < 1e-4

    # Fusion of the stage keeps its outputs and drops every BatchNorm.
    before = np.asarray(model(x, training=False))
    deployed = repghost_tf.fuse(model)
    fused_stage = deployed.get_layer(stage.name)
    assert fused_stage.deploy and all(
        not isinstance(layer, keras.layers.BatchNormalization)
        for layer in walk_layers(fused_stage)
    )
    assert relative_error(deployed(x, training=False), before) < 1e-5


def test_state_dict_mismatch_names_the_tensor():
    depths, widths, group_width, *_ = OFFICIAL["002"]
    state_dict = _StateDict(seed=0).model(depths, widths, group_width, classes=1000)
    model = GGhostRegNetX002()
    before = [w.copy() for w in model.get_weights()]
    missing = dict(state_dict)
    del missing["layer3.merge.4.weight"]
    with pytest.raises(WeightMismatchError, match="missing tensor 'layer3.merge.4.weight'"):
        load_state_dict(model, missing)
    with pytest.raises(WeightMismatchError, match="unexpected tensor 'layer3.extra.weight'"):
        load_state_dict(model, {**state_dict, "layer3.extra.weight": state_dict["fc.bias"]})
    with pytest.raises(WeightMismatchError, match="fc.weight"):
        load_state_dict(GGhostRegNetX002(classes=10), state_dict)
    assert all((a == b).all() for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("variant", ["002", "016"])
def test_fused_model_matches_training_form(variant):
    model = GGhostRegNetX(variant, classifier_activation=None)
    assert_fusion_is_exact(model, sizes=((64, 64), (75, 49)))


def test_training_step_and_deploy_predict_run_as_graphs():
    """fit() and predict() run traced graphs, where TensorFlow's CPU kernels without oneDNN
    reject grouped convs (the filter gradient, the fused Conv2D+BiasAdd)."""
    model = GGhostRegNetX002(input_shape=(32, 32, 3), classes=4, classifier_activation=None)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    grouped = model.get_layer("layer4").end.conv2.conv
    assert grouped.groups > 1
    before = grouped.kernel.numpy()
    images, labels = random_images(8, 32, 32), np.arange(8) % 4
    assert np.isfinite(model.train_on_batch(images, labels))
    assert not np.allclose(grouped.kernel.numpy(), before)
    deployed = repghost_tf.fuse(model)
    expected = model.predict(images, verbose=0)
    assert relative_error(deployed.predict(images, verbose=0), expected) < 1e-4


@pytest.mark.parametrize("form", ["training", "deploy"])
def test_keras_file_round_trip_in_safe_mode(tmp_path, form):
    model = GGhostRegNetX002(classifier_activation=None)
    randomize_batchnorms(model, seed=2)
    if form == "deploy":
        model = repghost_tf.fuse(model)
    path = tmp_path / f"{form}.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert repghost_tf.is_fused(restored) == (form == "deploy")
    images = random_images(2, 64, 80)
    np.testing.assert_array_equal(restored(images, training=False), model(images, training=False))


def test_pyramid_outputs_and_pooling():
    features = GGhostRegNetX002(include_top=False, pyramid_outputs=True)(random_images(1, 64, 64))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "P2": (1, 16, 16, 24),
        "P3": (1, 8, 8, 56),
        "P4": (1, 4, 4, 152),
        "P5": (1, 2, 2, 368),
    }
    pooled = GGhostRegNetX002(include_top=False, pooling="avg")(random_images(1, 64, 64))
    assert tuple(pooled.shape) == (1, 368)


def test_layer_names_and_arguments():
    model = GGhostRegNetX002()
    assert model.name == "g_ghost_regnetx_002"
    assert isinstance(model.get_layer("layer3"), GGhostStage)
    assert isinstance(model.get_layer("layer2.0"), XBlock)  # depth 1: a plain stage
    assert isinstance(model.get_layer("layer4"), GGhostStage)
    g_ghost = [name for name, s in repghost_tf.MODELS.items() if s.family == "g_ghost_regnetx"]
    assert sorted(g_ghost) == sorted(f"g_ghost_regnetx_{v}" for v in OFFICIAL)
    with pytest.raises(ValueError, match="variant"):
        GGhostRegNetX("033")
    with pytest.raises(ValueError, match="pyramid_outputs"):
        GGhostRegNetX002(pyramid_outputs=True)
    with pytest.raises(ValueError, match="depth"):
        GGhostStage(64, 8, 2)


def test_official_checkpoint_converts_through_convert_torch(tmp_path):
    """The official release's layout, saved by torch as timm's training script does, goes through
    the same importer and safety rules as RepGhostNet's."""
    torch = pytest.importorskip("torch")
    from repghost_tf.atomic_files import save_model
    from repghost_tf.torch_weights import convert_checkpoint

    depths, widths, group_width, *_ = OFFICIAL["002"]
    state_dict = _StateDict(seed=11).model(depths, widths, group_width, classes=1000)
    checkpoint = tmp_path / "g_ghost_regnetx_002.pth"
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}, checkpoint)

    model = convert_checkpoint(checkpoint, "g_ghost_regnetx_002", deploy=True, logits=True)
    assert repghost_tf.is_fused(model)
    save_model(model, tmp_path / "g_ghost.keras")
    restored = keras.saving.load_model(tmp_path / "g_ghost.keras", safe_mode=True)
    images = random_images(2, 64, 64, seed=12)
    expected = _ref_model(images, state_dict, depths, widths, group_width)
    assert relative_error(restored(images, training=False), expected) < 1e-4

    with pytest.raises(ValueError, match="layer1.0.conv1.weight"):
        convert_checkpoint(checkpoint, "g_ghost_regnetx_004")


def test_float32_tflite_export_matches_keras():
    from repghost_tf import litert
    from repghost_tf.export import tflite

    model = GGhostRegNetX002(classifier_activation=None)
    randomize_batchnorms(model, seed=13)
    deployed = repghost_tf.fuse(model)
    flatbuffer = tflite.convert(deployed, image_size=96)
    histogram = tflite.op_histogram(flatbuffer)
    assert not any("FLEX" in op.upper() for op in histogram)
    images = random_images(2, 96, 96, seed=14)
    outputs = litert.run_interpreter(litert.make_interpreter(flatbuffer), images)
    assert relative_error(outputs, deployed(images, training=False)) < 1e-5
