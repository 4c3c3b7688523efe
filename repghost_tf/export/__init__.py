"""TFLite export: `tflite` (Keras model -> flatbuffer, op inspection), `calibration` (int8
activation ranges), `report` (what a flatbuffer is and how it compares with Keras) and
`pipeline` (what export_tflite.py runs)."""

from repghost_tf.export.pipeline import ExportOptions, export
from repghost_tf.export.tflite import IO_TYPES, QUANTIZATIONS, ExportError, convert, op_histogram

__all__ = [
    "ExportOptions",
    "export",
    "IO_TYPES",
    "QUANTIZATIONS",
    "ExportError",
    "convert",
    "op_histogram",
]
