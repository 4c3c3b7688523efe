"""Keeps TensorFlow's and LiteRT's C++ log lines to what TF_CPP_MIN_LOG_LEVEL allows.

TensorFlow honours TF_CPP_MIN_LOG_LEVEL for its run-time logs (grappler's E0000 lines need level
3), but not for the oneDNN banner its shared libraries log while `import tensorflow` runs, nor
LiteRT for its "Created TensorFlow Lite XNNPACK delegate" line. `filtered_stderr` captures file
descriptor 2 around such a call and writes back every line the level does not hide: Python
warnings, tracebacks and anything unexpected still come through. Where the variable is unset,
these filters hide info lines only; the command-line tools set it to 3, and
`TF_CPP_MIN_LOG_LEVEL=0 python train.py ...` brings every line back.

Standard library only: it runs before TensorFlow is imported.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator

_ABSL_LINE = re.compile(rb"([IWEF])\d{4} [\d:.]+ +\d+ \S+:\d+\] ")
_LITERT_LINE = re.compile(rb"(INFO|WARNING|ERROR): ")
_ABSL_PREAMBLE = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
)
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3, b"INFO": 0, b"WARNING": 1, b"ERROR": 2}


def min_log_level() -> int:
    """TF_CPP_MIN_LOG_LEVEL: 0 shows everything, 1 hides info lines (the default here), 2 also
    warnings, 3 also errors."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1"))
    except ValueError:
        return 1


def _hidden(line: bytes, level: int) -> bool:
    if line.rstrip(b"\r\n") == _ABSL_PREAMBLE:
        return level > 0
    match = _ABSL_LINE.match(line) or _LITERT_LINE.match(line)
    return bool(match) and _SEVERITY[match.group(1)] < level


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Runs the block with stderr captured, then writes back the lines TF_CPP_MIN_LOG_LEVEL lets
    through (all of them at level 0, and all of them when the block raises)."""
    level = min_log_level()
    if level <= 0:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture if failed or not _hidden(line, level)]
            if kept:
                os.write(2, b"".join(kept))


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Runs the block with stdout and stderr (Python's and the file descriptors) going nowhere,
    for the TFLite converter's chatter; failures still surface as exceptions. At
    TF_CPP_MIN_LOG_LEVEL=0 nothing is silenced."""
    if min_log_level() <= 0:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull:
            for fd in (1, 2):
                os.dup2(devnull.fileno(), fd)
            with contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
                yield
    finally:
        for fd, original in zip((1, 2), saved):
            os.dup2(original, fd)
            os.close(original)


def import_tensorflow() -> None:
    """`import tensorflow` with its start-up banner held to TF_CPP_MIN_LOG_LEVEL (which it sets
    to 1, info lines off, where unset); a no-op once TensorFlow is imported. `repghost_tf` calls
    it first thing."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", str(min_log_level()))
    with filtered_stderr():
        import tensorflow  # noqa: F401
