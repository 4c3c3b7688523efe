"""Small QAT-simulation building blocks used by the experiments."""
from common import *  # noqa


def nudge(lo, hi):
    """Range snapped to the int8 grid the converter will use: returns (min, max, scale, zp_int8)
    with min = (-128 - zp) * scale, max = (127 - zp) * scale exactly representable choices, so
    that TF FakeQuant (float32) and the converter (double) agree on the zero point."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = np.float32((hi - lo) / 255.0)
    zp = int(np.clip(np.floor(-lo / float(scale) + 0.5), 0, 255))  # uint8 zero point
    return float(-zp * scale), float((255 - zp) * scale), float(scale), zp - 128


def quantize_kernel(w, channel_axis=-1):
    """Per-output-channel symmetric int8 (narrow range): scale = max|w| / 127."""
    w = np.asarray(w, np.float32)
    axes = tuple(i for i in range(w.ndim) if i != channel_axis % w.ndim)
    m = np.max(np.abs(w), axis=axes, keepdims=True)
    scale = np.where(m > 0, m / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale), -127, 127)
    return (q * scale).astype(np.float32), q.astype(np.int8), scale.reshape(-1)


class FQR(layers.Layer):
    """FakeQuant with a range set later (from calibration); identity until then."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.rng = None
        self.record = False
        self.seen = None

    def compute_output_shape(self, shape):
        return shape

    def call(self, x):
        if self.record:
            lo, hi = float(ops.min(x)), float(ops.max(x))
            self.seen = (lo, hi) if self.seen is None else (min(self.seen[0], lo),
                                                            max(self.seen[1], hi))
            return x
        if self.rng is None:
            return x
        return fq(x, self.rng[0], self.rng[1])


def fqr_layers(model):
    from repghost_tf.fusion import walk_layers

    out = [l for l in walk_layers(model) if isinstance(l, FQR)]
    return out


def calibrate(model, images, nudged=True):
    """Sets every FQR layer's range from min/max over `images` (run eagerly)."""
    ls = fqr_layers(model)
    for l in ls:
        l.record, l.seen, l.rng = True, None, None
    for im in images:
        model(im[None], training=False)
    for l in ls:
        l.record = False
        lo, hi = l.seen
        l.rng = nudge(lo, hi)[:2] if nudged else (min(lo, 0.0), max(hi, 0.0))
