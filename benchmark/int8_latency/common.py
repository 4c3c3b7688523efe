"""Shared helpers: build / convert / interpreter / interleaved timing. Scratch only."""
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import repghost_tf  # noqa: E402  (before keras / tensorflow)
from repghost_tf.export import tflite, calibration  # noqa: E402
from repghost_tf import litert, native_logs  # noqa: E402
from repghost_tf.litert import delegation  # noqa: E402,F401 (the walk benchmark/latency.py uses)
import time  # noqa: E402
import warnings  # noqa: E402
import numpy as np  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

CAL = np.random.default_rng(0).uniform(0, 255, (8, 224, 224, 3)).astype(np.float32)


def calib(size=224, channels=3, lo=0.0, hi=255.0):
    return np.random.default_rng(0).uniform(lo, hi, (8, size, size, channels)).astype(np.float32)


def convert_int8(model, in_type="uint8", out_type="uint8", image_size=224, cal=None,
                 pixel_range=(0.0, 255.0)):
    """Same steps as tflite._full_int8, but input and output types chosen separately."""
    from tensorflow.lite.python.convert import mlir_quantize
    cal = CAL if cal is None else cal
    with native_logs.silenced(), warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        conv = tf.lite.TFLiteConverter.from_keras_model(tflite.fixed_input_model(model, image_size))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        images = lambda: (im[None] for im in cal)  # noqa: E731
        conv.representative_dataset = lambda: ([im] for im in images())
        conv._experimental_calibrate_only = True
        calibrated = calibration.set_ranges(conv.convert(), images(), method="mse",
                                            input_range=pixel_range)
        return mlir_quantize(calibrated, input_data_type=getattr(tf, in_type),
                             output_data_type=getattr(tf, out_type))


def convert_f32(model, image_size=224):
    return tflite.convert(model, "none", image_size=image_size)


def interp(fb, threads=1, **kw):
    if kw:
        from ai_edge_litert.interpreter import Interpreter
        with native_logs.filtered_stderr():
            it = Interpreter(model_content=bytes(fb), num_threads=threads, **kw)
            it.allocate_tensors()
    else:
        it = litert.make_interpreter(fb, num_threads=threads)
    d = it.get_input_details()[0]
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, d["shape"]).astype(np.float32)
    it.set_tensor(d["index"], litert.quantize_input(x, d))
    for _ in range(20):
        it.invoke()
    return it


def interleaved(runners: dict, rounds=30, per_round=10):
    """runners: name -> callable. Alternate variants each round (order rotated); per-call
    times in ms; returns name -> (median, p25, p75)."""
    names = list(runners)
    samples = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        if r % 2:
            order = order[::-1]
        for n in order:
            f = runners[n]
            for _ in range(per_round):
                t = time.perf_counter_ns()
                f()
                samples[n].append((time.perf_counter_ns() - t) / 1e6)
    return {n: (float(np.median(s)), float(np.percentile(s, 25)), float(np.percentile(s, 75)))
            for n, s in samples.items()}


def fmt(res, ref=None):
    lines = []
    for n, (m, a, b) in res.items():
        extra = f"  x{m / res[ref][0]:.2f} vs {ref}" if ref else ""
        lines.append(f"{n:40s} median {m:7.3f} ms  (p25 {a:.3f}, p75 {b:.3f}){extra}")
    return "\n".join(lines)


def deploy(width="050", **kw):
    ctor = {"050": repghost_tf.RepGhostNet050, "100": repghost_tf.RepGhostNet100}[width]
    return repghost_tf.fuse(ctor(classifier_activation=None, **kw))
