"""The built-in `synthetic_shapes` dataset: generated on the fly, no download."""

from repghost_tf.data.synthetic_shapes.builder import (
    CLASSES,
    SyntheticShapes,
    render_detection_example,
    render_example,
)

__all__ = ["CLASSES", "SyntheticShapes", "render_detection_example", "render_example"]
