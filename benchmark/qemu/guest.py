"""The part of benchmark.arm that runs on the emulated aarch64 CPU: the arm64 Python with only
numpy and LiteRT (the project's package needs TensorFlow, which is not there).

Usage (benchmark.arm writes the job): qemu-aarch64 ... python3.11 guest.py JOB.json

For each model of the job: one 1-thread interpreter (XNNPACK, LiteRT's default), its raw outputs
for the job's raw inputs (already in the model's input type) saved as .npz (arr_0, ... per
output), then `warmup_runs` + `repeats` invokes, each between two markers that the insn_count
plugin counts between, the last one profiled. The markers are getppid() syscalls carrying a
magic first argument. At the end the process's memory map (guest addresses, host paths) is
copied for benchmark.arm to attribute the profiled addresses to library functions.
"""

import ctypes
import json
import shutil
import sys

import numpy as np
from ai_edge_litert.interpreter import Interpreter

GETPPID = 173  # aarch64
SPLIT, OPEN, CLOSE = 0, 1, 2


def library_base(name: str) -> int:
    """Load address of the mapped shared library `name` (its mapping at file offset 0)."""
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5].endswith("/" + name) and int(fields[2], 16) == 0:
                return int(fields[0].split("-")[0], 16)
    raise SystemExit(f"guest: {name} is not mapped")


def main(job_path: str) -> None:
    with open(job_path, encoding="utf-8") as file:
        job = json.load(file)
    syscall = ctypes.CDLL(None).syscall
    magic = ctypes.c_uint64(job["magic"])

    def mark(*args: int) -> None:
        syscall(GETPPID, magic, *(ctypes.c_uint64(value) for value in args))

    mark(SPLIT, library_base(job["library"]) + job["split_offset"], 0)
    for run in job["runs"]:
        interpreter = Interpreter(model_path=run["model"], num_threads=1)
        interpreter.allocate_tensors()
        input_index = interpreter.get_input_details()[0]["index"]
        output_indices = [detail["index"] for detail in interpreter.get_output_details()]
        inputs = np.load(run["inputs"])
        outputs = []
        for image in inputs:
            interpreter.set_tensor(input_index, image[None])
            interpreter.invoke()
            outputs.append([interpreter.get_tensor(index)[0].copy() for index in output_indices])
        np.savez(run["outputs"], *(np.stack(output) for output in zip(*outputs)))
        interpreter.set_tensor(input_index, inputs[:1])
        invoke = interpreter.invoke
        # Warm-up invokes are marked too (benchmark.arm drops their counts), so that Python 3.11
        # has specialized the bytecode around invoke() by the counted ones.
        count = run["warmup_runs"] + run["repeats"]
        for repeat in range(count):
            mark(OPEN, run["tag"], int(repeat == count - 1))
            invoke()
            mark(CLOSE, 0, 0)
        del interpreter
    shutil.copyfile("/proc/self/maps", job["maps"])


if __name__ == "__main__":
    main(sys.argv[1])
