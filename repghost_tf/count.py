"""Prints params and multiply-adds of a model, counted as in the paper.

Usage: python -m repghost_tf.count --model=repghostnet_050 [--deploy] [--image_size=224]
"""

from absl import app, flags

from repghost_tf.fusion import fuse
from repghost_tf.models.counting import profile
from repghost_tf.models.registry import MODELS, create_model

_MODEL = flags.DEFINE_enum("model", "repghostnet_100", list(MODELS), "Architecture to count.")
_DEPLOY = flags.DEFINE_boolean("deploy", False, "Count the fused deploy form.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Square input size.", lower_bound=32)


def main(argv: list[str]) -> None:
    del argv
    model = create_model(_MODEL.value)
    if _DEPLOY.value:
        model = fuse(model)
    form = "deploy" if _DEPLOY.value else "training"
    size = _IMAGE_SIZE.value
    print(f"{_MODEL.value} ({form} form) at {size}x{size}: {profile(model, size)}")


if __name__ == "__main__":
    app.run(main)
