"""Model variants for the A/B experiments, by monkeypatching in this scratch process only."""
import contextlib
from common import *
from keras import ops
from repghost_tf.models import layers as L

PREP = None


def prep_stats():
    m = repghost_tf.RepGhostNet050()
    p = m.get_layer("preprocessing")
    return np.array(p.mean, np.float32), np.array(p.std, np.float32)


@contextlib.contextmanager
def patched(kind):
    """kind in: base, avgpool (SE mean + global pool -> AVERAGE_POOL_2D), nose (SE removed),
    samepad (strided convs use 'same' padding, no PAD op), nogate (SE computed but gate MUL
    replaced by ADD)"""
    saved = []
    def patch(obj, name, value):
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)
    if "avgpool" in kind:
        def se_call(self, inputs):
            s = ops.average_pool(inputs, pool_size=tuple(inputs.shape[1:3]), padding="valid")
            s = ops.relu(self.conv_reduce(s))
            return inputs * ops.hard_sigmoid(self.conv_expand(s))
        patch(L.SqueezeExcite, "call", se_call)
        def gap_call(self, inputs):
            return ops.average_pool(inputs, pool_size=tuple(inputs.shape[1:3]), padding="valid")
        patch(keras.layers.GlobalAveragePooling2D, "call", gap_call)
    if "nose" in kind:
        patch(L.SqueezeExcite, "call", lambda self, inputs: inputs)
    if "samepad" in kind:
        orig = L.ConvBN.__init__
        def init(self, *a, **k):
            orig(self, *a, **k)
            self._explicit_padding = 0
        patch(L.ConvBN, "__init__", init)
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def build(kind="base", width="050", prep=True):
    ctor = {"050": repghost_tf.RepGhostNet050, "100": repghost_tf.RepGhostNet100}[width]
    with patched(kind):
        return ctor(classifier_activation=None, deploy=True, input_shape=(224, 224, 3),
                    include_preprocessing=prep)


def convert_variant(kind="base", prec="i8", width="050", prep=True, io="uint8", cal=None,
                    pixel_range=(0.0, 255.0)):
    """The patch must stay active while converting: the converter re-traces layer.call."""
    with patched(kind):
        m = build(kind, width, prep)
        if prec == "f32":
            return convert_f32(m)
        return convert_int8(m, io, io, cal=cal, pixel_range=pixel_range)
