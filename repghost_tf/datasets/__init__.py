"""TFDS builders shipped with the package; importing this module registers them with TFDS."""

from repghost_tf.datasets.synthetic_shapes import SyntheticShapes

__all__ = ["SyntheticShapes"]
