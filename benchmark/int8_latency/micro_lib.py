"""Shared by micro_ops.py, build_files.py and norm_alt.py: single-op TFLite models (float32 or
int8 with int8 in/out) at the shapes RepGhostNet050 uses at 224x224."""
from common import *
from keras import layers, ops


def conv_fb(build, shapes, prec):
    ins = [keras.Input(batch_shape=(1, *s)) for s in shapes]
    out = build(*ins)
    m = keras.Model(ins, out)
    rng = np.random.default_rng(0)
    with native_logs.silenced(), warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        c = tf.lite.TFLiteConverter.from_keras_model(m)
        if prec == "i8":
            c.optimizations = [tf.lite.Optimize.DEFAULT]
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            c.representative_dataset = lambda: (
                [rng.uniform(-3, 3, (1, *s)).astype(np.float32) for s in shapes] for _ in range(8))
            c.inference_input_type = tf.int8
            c.inference_output_type = tf.int8
        return c.convert()


def dw(k=3, s=1, pad="same"):
    return lambda x: layers.DepthwiseConv2D(k, s, padding=pad)(x)


def explicit_pad_dw(k, s):
    p = k // 2
    return lambda x: layers.DepthwiseConv2D(k, s, padding="valid")(
        ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]]))


