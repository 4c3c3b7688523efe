"""Shared helpers for the QAT research experiments."""
import os
import sys
import warnings

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

tf.get_logger().setLevel("ERROR")
warnings.filterwarnings("ignore")


def fq(x, lo, hi, bits=8, narrow=False):
    """Per-tensor FakeQuant as the graph op the converter recognises."""
    return tf.quantization.fake_quant_with_min_max_vars(
        x, float(lo), float(hi), num_bits=bits, narrow_range=narrow
    )


class FQ(layers.Layer):
    """A per-tensor FakeQuant layer with fixed (min, max)."""

    def __init__(self, lo, hi, **kw):
        super().__init__(**kw)
        self.lo, self.hi = float(lo), float(hi)

    def call(self, x):
        return fq(x, self.lo, self.hi)


def convert_int8(model, rep, io_type="int8", input_shape=None):
    """Standard converter path: full int8, builtins-int8, representative data."""
    shape = input_shape or tuple(model.inputs[0].shape[1:])
    inp = keras.Input(batch_shape=(1, *shape))
    fixed = keras.Model(inp, model(inp))
    conv = tf.lite.TFLiteConverter.from_keras_model(fixed)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    rep = np.asarray(rep, np.float32)
    conv.representative_dataset = lambda: ([r[None]] for r in rep)
    if io_type != "float32":
        conv.inference_input_type = getattr(tf, io_type)
        conv.inference_output_type = getattr(tf, io_type)
    return conv.convert()


def interp(tfl, preserve=True, kind="builtin"):
    """kind: "builtin" (optimized TFLite kernels, no delegate), "ref" (reference kernels) or
    "xnnpack" (default delegate; intermediates are not readable then)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = {"builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                "ref": OpResolverType.BUILTIN_REF, "xnnpack": OpResolverType.AUTO}[kind]
    if kind == "xnnpack":
        preserve = False
    it = Interpreter(model_content=tfl, experimental_preserve_all_tensors=preserve,
                     num_threads=1, experimental_op_resolver_type=resolver)
    it.allocate_tensors()
    return it


def ops_list(tfl):
    from repghost_tf.export.tflite import op_histogram

    return op_histogram(tfl)


def run_raw(it, x):
    """Runs one image (float) through, quantizing the input as the model needs.
    Returns the raw output tensor."""
    d = it.get_input_details()[0]
    if d["dtype"] in (np.int8, np.uint8):
        s, z = d["quantization"]
        info = np.iinfo(d["dtype"])
        xq = np.clip(np.round(x / s + z), info.min, info.max).astype(d["dtype"])
    else:
        xq = x.astype(np.float32)
    it.set_tensor(d["index"], xq[None] if xq.ndim == len(d["shape"]) - 1 else xq)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def tensors(it):
    """index -> detail dict."""
    return {t["index"]: t for t in it.get_tensor_details()}


def qparams(t):
    qp = t["quantization_parameters"]
    return qp["scales"], qp["zero_points"], qp["quantized_dimension"]


def tf_round_grid(x, lo, hi, bits=8, narrow=False):
    """Numpy reimplementation of TF FakeQuant (float32 arithmetic as in the TF kernel)."""
    f = np.float32
    qmin = f(1 if narrow else 0)
    qmax = f(2 ** bits - 1)
    lo, hi = f(lo), f(hi)
    scale = (hi - lo) / (qmax - qmin)
    zp_from_min = qmin - lo / scale
    if zp_from_min < qmin:
        zp = qmin
    elif zp_from_min > qmax:
        zp = qmax
    else:
        zp = f(np.round(zp_from_min))  # std::round; ties away from zero (positive here)
    nmin = (qmin - zp) * scale
    nmax = (qmax - zp) * scale
    inv = f(1.0) / scale
    c = np.clip(np.asarray(x, f), nmin, nmax)
    return (np.floor((c - nmin) * inv + f(0.5)) * scale + nmin).astype(f), scale, zp
