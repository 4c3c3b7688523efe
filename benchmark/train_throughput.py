"""Training throughput (images/s) of the Keras RepGhostNet on this machine, next to timm's PyTorch
`repghostnet_*` training step where torch and timm are installed.

    python -m benchmark.train_throughput --width=0.5 --image_size=224 --batch_size=64

Both frameworks run the same step: forward, cross-entropy, backward, SGD with momentum, on random
data already in memory, so the input pipeline is not measured.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# triton (loaded by timm) crashes the process when it loads after TensorFlow: torch goes first.
try:
    import timm
    import torch
except ImportError:
    timm = torch = None

import keras  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmark import results_io  # noqa: E402
from repghost_tf.atomic_files import write_json  # noqa: E402

flags.DEFINE_float("width", 0.5, "RepGhostNet width (0.5, 0.58, 0.8, 1.0, 1.11, 1.3, 1.5, 2.0).")
flags.DEFINE_integer("image_size", 224, "Image side.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_enum("dtype", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
                  "Keras dtype policy; PyTorch runs under the matching autocast.")
flags.DEFINE_integer("steps", 10, "Timed training steps.")
flags.DEFINE_integer("warmup_steps", 3, "Untimed steps first (tracing, allocation); at least 1.",
                     lower_bound=1)
flags.DEFINE_bool("xla", False, "Compile the Keras step with XLA.")
flags.DEFINE_bool("torch", True, "Also measure timm's PyTorch model, if installed.")
flags.DEFINE_string(
    "output", "runs/train_throughput.json",
    "JSON file that receives the numbers with the machine and package versions; empty: print only.",
)
FLAGS = flags.FLAGS


def keras_images_per_second() -> float:
    import numpy as np
    import tensorflow as tf

    from repghost_tf.models.registry import resolve

    keras.config.set_dtype_policy(FLAGS.dtype)
    model = resolve(width=FLAGS.width)(
        input_shape=(FLAGS.image_size, FLAGS.image_size, 3),
        classifier_activation=None,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=FLAGS.xla,
    )
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3))
    labels = rng.integers(0, 1000, FLAGS.batch_size)
    batch = tf.data.Dataset.from_tensors((images.astype("float32"), labels)).repeat().prefetch(2)
    clock = StepClock(FLAGS.warmup_steps)
    model.fit(batch, steps_per_epoch=FLAGS.warmup_steps + FLAGS.steps, epochs=1, verbose=0,
              callbacks=[clock])
    return FLAGS.steps * FLAGS.batch_size / clock.seconds


class StepClock(keras.callbacks.Callback):
    """Times the steps after the first `warmup` of one fit() call, so that neither tracing nor
    fit()'s own start-up counts."""

    def __init__(self, warmup: int):
        super().__init__()
        self.warmup = warmup
        self.start = self.seconds = 0.0

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start


def torch_images_per_second() -> float:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    from repghost_tf.models.registry import resolve

    model = timm.create_model(resolve(width=FLAGS.width).name, num_classes=1000)
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images = torch.rand(FLAGS.batch_size, 3, FLAGS.image_size, FLAGS.image_size, device=device)
    labels = torch.randint(0, 1000, (FLAGS.batch_size,), device=device)
    autocast = {
        "mixed_float16": torch.autocast(device, dtype=torch.float16),
        "mixed_bfloat16": torch.autocast(device, dtype=torch.bfloat16),
    }.get(FLAGS.dtype, contextlib.nullcontext())

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    for _ in range(FLAGS.warmup_steps):
        step()
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start)


def main(argv: list[str]) -> None:
    del argv
    import tensorflow as tf

    device = "GPU" if tf.config.list_physical_devices("GPU") else f"CPU ({os.cpu_count()} cores)"
    setting = (f"repghostnet width {FLAGS.width}, {FLAGS.image_size}px, batch {FLAGS.batch_size}, "
               f"{FLAGS.dtype}, {device}")
    keras_rate = keras_images_per_second()
    print(f"{setting}\n  Keras/TF training:    {keras_rate:8.1f} images/s")
    torch_rate = None
    if FLAGS.torch and torch is not None:
        torch_rate = torch_images_per_second()
        print(f"  timm/PyTorch training: {torch_rate:8.1f} images/s\n"
              f"  Keras / PyTorch:      {keras_rate / torch_rate:8.2f}x")
    elif FLAGS.torch:
        print("  timm/PyTorch: not measured (needs torch and timm).")
    if FLAGS.output:
        record = {
            "environment": results_io.host_environment(),
            "device": device,
            "settings": {name: FLAGS[name].value for name in (
                "width", "image_size", "batch_size", "dtype", "steps", "warmup_steps", "xla")},
            "keras_images_per_second": keras_rate,
            "torch_images_per_second": torch_rate,
            "keras_over_torch": keras_rate / torch_rate if torch_rate else None,
        }
        write_json(FLAGS.output, record)
        print(f"  written to {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
