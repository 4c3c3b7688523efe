"""TFLite export: `tflite` (Keras model -> flatbuffer, op inspection), `report` (what a flatbuffer
is and how it compares with Keras), `metadata` (the TFLite metadata apps read), `tasks` (what
differs between a classifier, a QAT classifier and a detector) and `pipeline` (what
export_tflite.py runs). int8 lives in
`repghost_tf.quantization`, a detector's file in `repghost_tf.detection.export`."""

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
