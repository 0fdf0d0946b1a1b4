"""Usage records on standard output (``BEDROCK_TOP_LOG=-``), for Lambda functions and containers
whose standard output already goes to CloudWatch Logs.

Each record is one line written with ``os.write`` on descriptor 1: a log shipper splits its input
on newlines, and a line shorter than ``PIPE_BUF`` (4 KB; records are about 400 bytes, 1 KB with
an EMF block) reaches a pipe as a unit even when other processes share it. Python's own
``sys.stdout`` buffer is flushed first, so that the program's earlier output keeps its place
before the record. A record that cannot be written (closed descriptor, broken pipe) is counted
as dropped, as in the file writer; nothing raises into the application.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Final

from monitor.wrapper.writer import LineWriter

STDOUT_TARGET: Final = "-"


class StdoutWriter(LineWriter):
    """Appends complete lines to a descriptor (standard output unless told otherwise)."""

    def __init__(self, fd: int = 1) -> None:
        super().__init__()
        self.fd = fd
        self.path = STDOUT_TARGET

    def _put(self, line: bytes, failures: list[str]) -> bool:
        stream = sys.stdout
        if stream is not None:
            # The program's buffered output first, so that a record never lands inside it.
            with contextlib.suppress(Exception):
                stream.flush()
        view = memoryview(line)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as err:
            if len(view) < len(line):
                # Part of the line went out: end it, so that the next record starts clean.
                with contextlib.suppress(OSError):
                    os.write(self.fd, b"\n")
            failures.append(f"cannot write to standard output: {err.strerror or err}")
            return False
        return True

    def close(self) -> None:
        """Nothing to close: the descriptor is the process's own."""


_writer: StdoutWriter | None = None
_writer_lock = threading.Lock()


def stdout_writer() -> StdoutWriter:
    """The process-wide writer of standard output."""
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = StdoutWriter()
        return _writer


def _reset_after_fork() -> None:
    global _writer_lock
    _writer_lock = threading.Lock()
    if _writer is not None:
        _writer._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
