"""The quantization-aware (QAT) form of a model: its deploy form, rebuilt as a flat Keras graph in
which every tensor that becomes an int8 TFLite tensor is fake-quantized, and every conv and dense
layer runs int8 weights.

Where the fake-quants go follows what the TFLite converter makes of the graph
(docs/int8_arithmetic.md measures each rule): one `ActivationQuantizer` on the model input, on
each conv output after its ReLU (never between the two, which the converter fuses), on each
ADD, MEAN and MUL, one shared by a CONCATENATION's inputs and output, on the squeeze-excite
gate (relu6(x + 3); the deploy form moves its / 6 into the next conv), and on the logits; none
after a PAD, Flatten or Dropout, which keep their input's grid. A tensor is quantized where it
is consumed, so a ReLU always comes before its quantizer.

    qat_model = quantize_model(float_model)   # train it: ranges follow the data, kernels round
    int8_ready = finalize(qat_model)          # ranges frozen, kernels and biases on their grids
"""

from __future__ import annotations

import copy

import keras
import numpy as np
from keras import layers

from repghost_tf.fusion import fuse, walk_layers
from repghost_tf.models.applications import ImageNormalization
from repghost_tf.models.g_ghost import GGhostStage, XBlock
from repghost_tf.models.layers import (
    ConvBN,
    GhostModule,
    RepGhostModule,
    SqueezeExcite,
    _Bottleneck,
)
from repghost_tf.quantization.fake_quant import (
    PIXEL_RANGE,
    ActivationQuantizer,
    QuantizedConv2D,
    QuantizedDense,
    QuantizedDepthwiseConv2D,
    QuantizedImageNormalization,
)

QUANTIZED_WEIGHT_LAYERS = (QuantizedConv2D, QuantizedDepthwiseConv2D, QuantizedDense)


class UnsupportedModelError(ValueError):
    """A model with a layer that has no quantized form; the message (one line) names it."""


class UncalibratedModelError(ValueError):
    """A QAT model whose activation ranges have not been set from data."""


def is_quantized(model: keras.Model) -> bool:
    """True for a QAT model (one with activation quantizers)."""
    return any(isinstance(layer, ActivationQuantizer) for layer in walk_layers(model))


def quantizers(model: keras.Model) -> list[ActivationQuantizer]:
    return [layer for layer in model.layers if isinstance(layer, ActivationQuantizer)]


def freeze_ranges(model: keras.Model) -> None:
    """Stops every activation range of `model` from following the data."""
    for quantizer in quantizers(model):
        quantizer.freeze()


def quantize_model(model: keras.Model) -> keras.Model:
    """The QAT form of `model` (RepGhostNet or GhostNet, any width or ablation, in training or
    deploy form), with its deploy weights. Its activation ranges are unset until it has run in
    training mode on data (the first batch sets them; `calibrate` does that without training).

    Raises UnsupportedModelError for a layer that has no quantized form.
    """
    if is_quantized(model):
        return model
    deployed = fuse(model)
    graph = _QuantizedGraph()
    graph.preprocessed = any(isinstance(layer, ImageNormalization) for layer in deployed.layers)
    tensors = {}
    for layer in deployed.layers:
        if isinstance(layer, layers.InputLayer):
            tensor = keras.Input(batch_shape=layer.batch_shape, dtype=layer.dtype, name=layer.name)
            tensors[id(layer.output)] = graph.named(tensor, layer.name)
            continue
        nodes = layer._inbound_nodes
        if len(nodes) != 1:
            raise UnsupportedModelError(f"layer {layer.name!r} is used {len(nodes)} times")
        arguments = nodes[0].input_tensors
        if len(arguments) != 1:
            raise UnsupportedModelError(f"layer {layer.name!r} has {len(arguments)} inputs")
        output = graph.emit(layer, tensors[id(arguments[0])])
        tensors[id(nodes[0].output_tensors[0])] = output
    outputs = keras.tree.map_structure(
        lambda t: graph.quantized(tensors[id(t)], "logits" if len(deployed.outputs) == 1
                                  else None),
        deployed.output,
    )
    return keras.Model(graph.inputs_of(deployed, tensors), outputs, name=deployed.name)


def calibrate(model: keras.Model, images) -> None:
    """Sets the activation ranges of a fresh QAT model from `images` (batches of pixels): the
    first batch sets them, later ones move their moving averages. Weights do not change."""
    for batch in images:
        model(np.asarray(batch, np.float32), training=True)


def finalize(model: keras.Model) -> keras.Model:
    """`model` (a QAT model) ready to export: activation ranges frozen, kernels and biases
    written on the int8 and int32 grids the TFLite kernels use, no more rounding in the graph.
    `model` itself is left untouched; a finalized model is returned as it is.

    Raises UncalibratedModelError when an activation range has never seen data.
    """
    unset = [q.name for q in quantizers(model) if q.fixed_range is None and not q.observed]
    if unset:
        raise UncalibratedModelError(
            f"{len(unset)} activation ranges ({unset[0]}, ...) have seen no data yet: train the "
            "QAT model or run repghost_tf.quantization.calibrate on it first"
        )
    weight_layers = [layer for layer in model.layers if isinstance(layer, QUANTIZED_WEIGHT_LAYERS)]
    if not any(layer.round_weights for layer in weight_layers):
        return model
    config = copy.deepcopy(model.get_config())
    for layer_config in config["layers"]:
        if "round_weights" in layer_config["config"]:
            layer_config["config"]["round_weights"] = False
    final = model.__class__.from_config(config)
    for layer in model.layers:
        target = final.get_layer(layer.name)
        if isinstance(layer, QUANTIZED_WEIGHT_LAYERS):
            scale = model.get_layer(layer.input_quantizer).grid()[2]
            target.set_weights(layer.finalize_weights(scale))
        else:
            target.set_weights(layer.get_weights())
    freeze_ranges(final)
    return final


class _QuantizedGraph:
    """Emits the quantized form of each layer of a deploy model into a new functional graph.

    Tensors are quantized lazily, by their consumer (`quantized`), so that an activation always
    sits between a conv and its quantizer; `grids` records which tensors are on a grid already.
    """

    def __init__(self):
        self.grids: dict[int, str] = {}  # id(tensor) -> name of the quantizer it is on
        self.names: dict[int, str] = {}  # id(tensor) -> the name its quantizer takes
        self.quantized_versions: dict[int, object] = {}  # id(tensor) -> its quantized tensor
        self.preprocessed = False

    @staticmethod
    def inputs_of(model: keras.Model, tensors: dict):
        return keras.tree.map_structure(lambda t: tensors[id(t)], model.input)

    def named(self, tensor, name: str):
        self.names[id(tensor)] = name
        return tensor

    def quantized(self, x, name: str | None = None):
        """`x` on an int8 grid: as it is when it is on one, else through a new quantizer."""
        if id(x) in self.grids:
            return x
        if id(x) in self.quantized_versions:
            return self.quantized_versions[id(x)]
        name = name or self.names[id(x)]
        is_image = name == "image" and self.preprocessed
        quantizer = ActivationQuantizer(
            fixed_range=PIXEL_RANGE if is_image else None, name=f"{name}.quant"
        )
        output = quantizer(x)
        self.grids[id(output)] = quantizer.name
        self.quantized_versions[id(x)] = output
        return output

    def keep_grid(self, x, output, name: str):
        """`output` of a layer that moves values without changing them (pad, flatten, dropout)."""
        if id(x) in self.grids:
            self.grids[id(output)] = self.grids[id(x)]
        return self.named(output, name)

    def weights_layer(self, source: keras.layers.Layer, x, twin_class: type | None = None):
        """`source` (Conv2D, DepthwiseConv2D or Dense, with bias) applied to `x` quantized, as
        its int8-weight twin (of `twin_class` if given)."""
        x = self.quantized(x)
        config = {**source.get_config(), "input_quantizer": self.grids[id(x)]}
        if twin_class is not None:
            twin = twin_class.from_config(config)
        elif isinstance(source, layers.DepthwiseConv2D):
            twin = QuantizedDepthwiseConv2D.from_config(config)
        elif isinstance(source, layers.Conv2D):
            twin = QuantizedConv2D.from_config(config)
        elif isinstance(source, layers.Dense):
            if config.get("activation") not in (None, "linear"):
                raise UnsupportedModelError(
                    f"{source.name!r} has a {config['activation']} activation; "
                    "quantization-aware training needs a model that outputs logits"
                )
            twin = QuantizedDense.from_config(config)
        else:
            raise UnsupportedModelError(f"no quantized form of {type(source).__name__}")
        if not source.use_bias:
            raise UnsupportedModelError(f"{source.name!r} has no bias (is the model fused?)")
        output = twin(x)
        twin.set_weights(source.get_weights())
        twin.trainable = source.trainable
        return self.named(output, twin.name)

    def relu(self, x, name: str, max_value: float | None = None):
        return self.named(layers.ReLU(max_value=max_value, name=name)(x), name)

    def add(self, a, b, name: str):
        return self.named(layers.Add(name=name)([self.quantized(a), self.quantized(b)]), name)

    # Quantized forms of the library's layers ---------------------------------------------------

    def emit(self, layer: keras.layers.Layer, x):
        for kind, method in self._FORMS:
            if isinstance(layer, kind):
                return method(self, layer, x)
        raise UnsupportedModelError(
            f"layer {layer.name!r} ({type(layer).__name__}) has no quantized form"
        )

    def _image_normalization(self, layer: ImageNormalization, x):
        kernel, bias = layer.kernel_and_bias()
        conv = layers.DepthwiseConv2D(1, name=layer.name, trainable=False)
        conv.build((None, None, None, len(bias)))
        conv.set_weights([kernel, bias])
        return self.weights_layer(conv, x, QuantizedImageNormalization)

    def _conv_bn(self, layer: ConvBN, x):
        if layer._explicit_padding:
            pad = layer._explicit_padding
            name = f"{layer.name}.pad"
            x = self.quantized(x)
            x = self.keep_grid(x, layers.ZeroPadding2D(pad, name=name)(x), name)
        return self.weights_layer(layer.conv, x)

    def _repghost_module(self, module: RepGhostModule, x):
        x = self._conv_bn(module.primary_conv, x)
        if module.relu:
            x = self.relu(x, f"{module.name}.primary_relu")
        x = self.weights_layer(module.cheap_operation, x)
        return self.relu(x, f"{module.name}.relu") if module.relu else x

    def _ghost_module(self, module: GhostModule, x):
        # TFLite's CONCATENATION keeps one grid for its inputs and output: both halves are put on
        # the grid of the concatenation, whose range follows both.
        if 2 * module.intrinsic_channels != module.filters:
            raise UnsupportedModelError(f"{module.name!r} has an odd number of channels")
        x1 = self._conv_bn(module.primary_conv, x)
        if module.relu:
            x1 = self.relu(x1, f"{module.name}.primary_relu")
        shared = ActivationQuantizer(name=f"{module.name}.concat.quant")
        x1_on_grid = shared(x1, observe=False)
        self.grids[id(x1_on_grid)] = shared.name
        x2 = self._conv_bn(module.cheap_operation, x1_on_grid)
        if module.relu:
            x2 = self.relu(x2, f"{module.name}.cheap_relu")
        output = shared(layers.Concatenate(name=f"{module.name}.concat")([x1, x2]))
        self.grids[id(output)] = shared.name
        return output

    def _squeeze_excite(self, se: SqueezeExcite, x):
        x = self.quantized(x)
        z = layers.GlobalAveragePooling2D(keepdims=True, name=f"{se.name}.pool")(x)
        z = self.named(z, f"{se.name}.pool")
        z = self.relu(self.weights_layer(se.conv_reduce, z), f"{se.name}.reduce_relu")
        # The deploy form's gate is relu6(z + 3) with the + 3 in conv_expand's bias; the next
        # conv's kernel holds the / 6.
        z = self.relu(self.weights_layer(se.conv_expand, z), f"{se.name}.gate", max_value=6.0)
        return self.named(
            layers.Multiply(name=f"{se.name}.excite")([x, self.quantized(z)]), f"{se.name}.excite"
        )

    def _bottleneck(self, block: _Bottleneck, x):
        inputs = self.quantized(x)
        ghost = self._repghost_module if isinstance(block.ghost1, RepGhostModule) else (
            self._ghost_module)
        x = ghost(block.ghost1, inputs)
        if block.conv_dw is not None:
            x = self._conv_bn(block.conv_dw, x)
        if block.se is not None:
            x = self._squeeze_excite(block.se, x)
        x = ghost(block.ghost2, x)
        if not block.identity_shortcut:
            shortcut = self._conv_bn(block.shortcut_pw, self._conv_bn(block.shortcut_dw, inputs))
            return self.add(x, shortcut, f"{block.name}.add")
        if block._keeps_identity_shortcut():
            return self.add(x, inputs, f"{block.name}.add")
        return x

    def _g_ghost(self, layer: keras.layers.Layer, x):
        raise UnsupportedModelError(
            f"{layer.name!r}: quantization-aware training of G-GhostNet is not built yet"
        )

    def _global_pool(self, layer: layers.GlobalAveragePooling2D, x):
        config = layer.get_config()
        output = layers.GlobalAveragePooling2D.from_config(config)(self.quantized(x))
        return self.named(output, layer.name)

    def _activation(self, layer: layers.ReLU, x):
        config = layer.get_config()
        if config.get("negative_slope") or config.get("threshold"):
            raise UnsupportedModelError(f"{layer.name!r}: only plain ReLU and ReLU6 quantize")
        return self.relu(x, layer.name, config.get("max_value"))

    def _same_grid(self, layer: keras.layers.Layer, x):
        twin = layer.__class__.from_config(layer.get_config())
        return self.keep_grid(x, twin(x), layer.name)

    _FORMS = (
        (ImageNormalization, _image_normalization),
        (_Bottleneck, _bottleneck),
        ((GGhostStage, XBlock), _g_ghost),
        (ConvBN, _conv_bn),
        (layers.ReLU, _activation),
        (layers.GlobalAveragePooling2D, _global_pool),
        (layers.Conv2D, weights_layer),
        (layers.Dense, weights_layer),
        ((layers.Flatten, layers.Dropout), _same_grid),
    )
