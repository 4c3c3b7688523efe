"""Running TFLite flatbuffers with LiteRT (XNNPACK by default): the interpreter, and float
images in, float outputs out, whatever the model's input and output types."""

from __future__ import annotations

import collections
import os

import numpy as np

from repghost_tf import native_logs


def make_interpreter(model_path_or_bytes: bytes | str | os.PathLike, num_threads: int = 1):
    """A LiteRT interpreter (XNNPACK by default) with tensors allocated; tflite_runtime's where
    only it is installed."""
    Interpreter = interpreter_class()
    with native_logs.filtered_stderr():  # LiteRT announces its XNNPACK delegate once
        if isinstance(model_path_or_bytes, (bytes, bytearray)):
            interpreter = Interpreter(
                model_content=bytes(model_path_or_bytes), num_threads=num_threads
            )
        else:
            interpreter = Interpreter(
                model_path=os.fspath(model_path_or_bytes), num_threads=num_threads
            )
        interpreter.allocate_tensors()
    return interpreter


def interpreter_class() -> type:
    """LiteRT's Interpreter, or tflite_runtime's where only it is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    return Interpreter


def run_interpreter(interpreter, images: np.ndarray) -> np.ndarray:
    """Float outputs of a single-input, single-output interpreter for float pixel `images`,
    one image at a time, quantizing inputs and dequantizing outputs as the model's types need."""
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    outputs = []
    for image in np.asarray(images, np.float32):
        interpreter.set_tensor(input_detail["index"], quantize_input(image[None], input_detail))
        interpreter.invoke()
        output = interpreter.get_tensor(output_detail["index"])
        outputs.append(dequantize_output(output, output_detail))
    return np.concatenate(outputs)


def quantize_input(images: np.ndarray, detail: dict) -> np.ndarray:
    """Float images in the model's input type: unchanged for float inputs, rounded and clipped
    through (scale, zero point) for integer inputs."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return images.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(images / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize_output(values: np.ndarray, detail: dict) -> np.ndarray:
    """Integer outputs back to float through (scale, zero point); float outputs as they are."""
    if np.dtype(detail["dtype"]).kind == "f":
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


def delegation(interpreter) -> tuple[int, dict[str, int]]:
    """(number of XNNPACK partitions, op type -> count of the ops XNNPACK did not take), which
    run on TFLite's own kernels between partitions. A partition's ops are those reached from
    its outputs, walking producers back, without crossing its inputs."""
    ops = interpreter._get_ops_details()
    partitions = [op for op in ops if op["op_name"] == "DELEGATE"]
    producer = {
        int(tensor): op for op in ops if op["op_name"] != "DELEGATE" for tensor in op["outputs"]
    }
    delegated = set()
    for partition in partitions:
        boundary = {int(tensor) for tensor in partition["inputs"]}
        pending = [int(tensor) for tensor in partition["outputs"]]
        while pending:
            op = producer.get(pending.pop())
            if op is None or op["index"] in delegated:
                continue
            delegated.add(op["index"])
            pending += [int(t) for t in op["inputs"] if int(t) >= 0 and int(t) not in boundary]
    left = collections.Counter(
        op["op_name"] for op in ops if op["op_name"] != "DELEGATE" and op["index"] not in delegated
    )
    return len(partitions), dict(left.most_common())
