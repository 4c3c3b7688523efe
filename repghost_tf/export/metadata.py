"""TFLite metadata, the part of a .tflite file that MediaPipe Tasks and the TFLite Task Library
read: what the input image is (colour space, size, value range, normalisation), what each output
tensor holds, and the labels, as a file zipped onto the model.

The block is a `ModelMetadata` flatbuffer (schema `metadata_schema.fbs`, file identifier M001)
stored in one of the model's buffers under the name TFLITE_METADATA. The maintained writers do
not import beside TensorFlow 2.21 (tflite-support pins protobuf 3; MediaPipe 1.2's writer lacks
its native helper), so the tables are built here with `flatbuffers.Builder`, slot by slot as the
schema numbers them. Only schema 1.0.0 fields are written.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile

import flatbuffers
import numpy as np

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"

# Enum values of metadata_schema.fbs.
_TENSOR_AXIS_LABELS, _TENSOR_VALUE_LABELS = 2, 3  # AssociatedFileType
_RGB = 1  # ColorSpaceType
_BOUNDARIES = 1  # BoundingBoxType
_RATIO = 0  # CoordinateType
# Union members (0 is NONE).
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES, _BOUNDING_BOX_PROPERTIES = 1, 2, 3  # ContentProperties
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the file says about itself; export_tflite.py's --metadata_* flags fill it in."""

    name: str
    description: str
    version: str = "1"
    author: str = ""
    license: str = ""


@dataclasses.dataclass(frozen=True)
class _Table:
    """A flatbuffer table: `slots` fields, of which `fields` maps the set ones to (kind, value).
    Kinds: string, table, tables, floats, uints, int8, uint8 (a union's type), uint32, int32."""

    slots: int
    fields: dict


def _vector_of_offsets(builder: flatbuffers.Builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _build(builder: flatbuffers.Builder, table: _Table) -> int:
    """Writes `table` and everything it refers to; returns its offset."""
    offsets = {}
    for slot, (kind, value) in table.fields.items():
        if kind == "string":
            offsets[slot] = builder.CreateString(value)
        elif kind == "table":
            offsets[slot] = _build(builder, value)
        elif kind == "tables":
            offsets[slot] = _vector_of_offsets(builder, [_build(builder, t) for t in value])
        elif kind == "floats":
            offsets[slot] = builder.CreateNumpyVector(np.asarray(value, np.float32))
        elif kind == "uints":
            offsets[slot] = builder.CreateNumpyVector(np.asarray(value, np.uint32))
    builder.StartObject(table.slots)
    for slot, (kind, value) in table.fields.items():
        if slot in offsets:
            builder.PrependUOffsetTRelativeSlot(slot, offsets[slot], 0)
        elif kind == "int8":
            builder.PrependInt8Slot(slot, value, 0)
        elif kind == "uint8":
            builder.PrependUint8Slot(slot, value, 0)
        elif kind == "uint32":
            builder.PrependUint32Slot(slot, value, 0)
        elif kind == "int32":
            builder.PrependInt32Slot(slot, value, 0)
        else:
            raise ValueError(f"unknown field kind {kind!r}")
    return builder.EndObject()


def _labels_file(name: str, kind: int = _TENSOR_AXIS_LABELS) -> _Table:
    """Labels along the tensor's class axis, or (TENSOR_VALUE_LABELS) of the class indices its
    values are."""
    # AssociatedFile: name, description, type, locale, version.
    return _Table(5, {0: ("string", name), 1: ("string", "Labels, one per class index."),
                      2: ("int8", kind)})


def _stats(low: float, high: float) -> _Table:
    return _Table(2, {0: ("floats", [high]), 1: ("floats", [low])})  # Stats: max, min


def _content(properties_type: int, properties: _Table, dimension: int | None = None) -> _Table:
    """`dimension`: the axis along which the tensor holds its content (a detection's)."""
    # Content: content_properties_type, content_properties, range (ValueRange: min, max).
    fields = {0: ("uint8", properties_type), 1: ("table", properties)}
    if dimension is not None:
        fields[2] = ("table", _Table(2, {0: ("int32", dimension), 1: ("int32", dimension)}))
    return _Table(3, fields)


def _tensor(name: str, description: str, content: _Table | None = None,
            process_units: list[_Table] | None = None, stats: _Table | None = None,
            associated_files: list[_Table] | None = None) -> _Table:
    # TensorMetadata: name, description, dimension_names, content, process_units, stats,
    # associated_files.
    fields = {0: ("string", name), 1: ("string", description)}
    for slot, kind, value in ((3, "table", content), (4, "tables", process_units),
                              (5, "table", stats), (6, "tables", associated_files)):
        if value:
            fields[slot] = (kind, value)
    return _Table(7, fields)


def image_input(size: int) -> _Table:
    """An RGB image of `size` x `size` pixels, values 0..255, which the model normalises itself
    (so the metadata's normalisation is mean 0, std 1)."""
    image_size = _Table(2, {0: ("uint32", size), 1: ("uint32", size)})  # ImageSize: width, height
    properties = _Table(2, {0: ("int8", _RGB), 1: ("table", image_size)})  # ImageProperties
    normalization = _Table(2, {0: ("floats", [0.0]), 1: ("floats", [1.0])})  # mean, std
    process_unit = _Table(2, {0: ("uint8", _NORMALIZATION_OPTIONS), 1: ("table", normalization)})
    return _tensor("image", f"An RGB image, {size}x{size}, pixel values 0 to 255.",
                   _content(_IMAGE_PROPERTIES, properties), [process_unit], _stats(0.0, 255.0))


def _feature(name: str, description: str, stats: _Table | None = None,
             associated_files: list[_Table] | None = None,
             dimension: int | None = None) -> _Table:
    return _tensor(name, description, _content(_FEATURE_PROPERTIES, _Table(0, {}), dimension),
                   stats=stats, associated_files=associated_files)


def _labels(labels_file: str | None, kind: int = _TENSOR_AXIS_LABELS) -> list[_Table]:
    return [_labels_file(labels_file, kind)] if labels_file else []


def classifier_outputs(labels_file: str | None, probabilities: bool) -> list[_Table]:
    """One output: probabilities (or logits) over the classes of `labels_file`."""
    if probabilities:
        return [_feature("probability", "Probabilities of the classes.", _stats(0.0, 1.0),
                         _labels(labels_file))]
    return [_feature("logits", "Logits of the classes (no softmax).",
                     associated_files=_labels(labels_file))]


def detector_outputs(labels_file: str | None) -> list[_Table]:
    """The four outputs of TFLite's SSD post-processing, in its order and named as MediaPipe's
    ObjectDetector looks them up; each detection's values run along axis 2."""
    # BoundingBoxProperties: index, type, coordinate_type. Boxes are (ymin, xmin, ymax, xmax):
    # BOUNDARIES orders (left, top, right, bottom), so left is element 1, top element 0.
    box = _Table(3, {0: ("uints", [1, 0, 3, 2]), 1: ("int8", _BOUNDARIES),
                     2: ("int8", _RATIO)})
    locations = _tensor("location", "Boxes (ymin, xmin, ymax, xmax) as fractions of the image.",
                        _content(_BOUNDING_BOX_PROPERTIES, box, dimension=2))
    return [
        locations,
        _feature("category", "Class index of each box.", dimension=2,
                 associated_files=_labels(labels_file, _TENSOR_VALUE_LABELS)),
        _feature("score", "Score of each box.", _stats(0.0, 1.0), dimension=2),
        _feature("number of detections", "How many of the boxes are detections."),
    ]


def model_metadata(info: ModelInfo, inputs: list[_Table], outputs: list[_Table]) -> bytes:
    """The ModelMetadata flatbuffer of a single-subgraph model."""
    # SubGraphMetadata: name, description, input_tensor_metadata, output_tensor_metadata, ...
    subgraph = _Table(10, {2: ("tables", inputs), 3: ("tables", outputs)})
    fields = {0: ("string", info.name), 1: ("string", info.description),
              2: ("string", info.version), 3: ("tables", [subgraph]),
              7: ("string", MIN_PARSER_VERSION)}
    if info.author:
        fields[4] = ("string", info.author)
    if info.license:
        fields[5] = ("string", info.license)
    builder = flatbuffers.Builder(1024)
    builder.Finish(_build(builder, _Table(8, fields)), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def with_metadata(flatbuffer: bytes, metadata: bytes, files: dict[str, bytes]) -> bytes:
    """`flatbuffer` with `metadata` as its TFLITE_METADATA buffer (replacing one it had) and
    `files` zipped onto its end, stored uncompressed, as the metadata readers expect."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    entries = [m for m in model.metadata or [] if schema_text(m.name) != METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = list(metadata)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*entries, entry]
    packed = io.BytesIO(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    with zipfile.ZipFile(packed, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return packed.getvalue()


def read_metadata(flatbuffer: bytes) -> bytes | None:
    """The TFLITE_METADATA buffer of `flatbuffer`, or None."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    for entry in model.metadata or []:
        if schema_text(entry.name) == METADATA_NAME:
            return bytes(bytearray(model.buffers[entry.buffer].data))
    return None


def associated_files(flatbuffer: bytes) -> dict[str, bytes]:
    """The files zipped onto `flatbuffer` (empty when there are none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(flatbuffer)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}


def schema_text(value) -> str:
    """A string field of the TFLite schema's object API: bytes when read from a file, str when
    set in Python."""
    return value.decode() if isinstance(value, bytes) else str(value)
