"""Prints params and multiply-adds of a model, counted as in the paper.

Usage: python -m repghost_tf.count --model=repghostnet_050 [--deploy] [--image_size=224]
"""

from absl import flags

from repghost_tf import cli
from repghost_tf.fusion import fuse
from repghost_tf.models.counting import profile
from repghost_tf.models.registry import MODELS, create_model

flags.DEFINE_enum("model", "repghostnet_100", list(MODELS), "Architecture to count.")
flags.DEFINE_boolean("deploy", False, "Count the fused deploy form.")
flags.DEFINE_integer("image_size", 224, "Square input size.", lower_bound=32)
FLAGS = flags.FLAGS


def main() -> None:
    model = create_model(FLAGS.model)
    if FLAGS.deploy:
        model = fuse(model)
    form = "deploy" if FLAGS.deploy else "training"
    size = FLAGS.image_size
    print(f"{FLAGS.model} ({form} form) at {size}x{size}: {profile(model, size)}")


if __name__ == "__main__":
    cli.run(main, "repghost_tf.count")
