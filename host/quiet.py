"""Third-party output goes to a log file unless --verbose: the user sees our progress lines and results.

The libraries the host drives print a lot that means nothing to a user: ExecuTorch's C++ cpuinfo lines and
LiteRT's / TensorFlow's absl lines (native code writing to file descriptors 1 and 2, or to Python's
sys.stderr through pybind), litert-torch's progress trees (rich, on stdout), ONNX Runtime's calibration
prints and `WARNING:root:` lines, torchao's `Failed to load ...so` warnings (Python logging). Inside
`quiet()`:

* file descriptors 1 and 2 and sys.stderr point at the log file, and so do Python logging and warnings;
* our own lines go to `user_err()` (the terminal's stderr, or whatever sys.stderr was, e.g. a test's
  capture) and sys.stdout stays the user's (it carries --json output);
* `library_stream()` is where code that calls a chatty library redirects that library's stdout to.

The log's path is printed when a command fails, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import IO, Iterator, Optional

_active: Optional[IO[str]] = None     # the log, inside quiet()
_user_err: Optional[IO[str]] = None   # where our own lines go, inside quiet()


def log_path(command: str) -> Path:
    from host.paths import data_dir

    d = data_dir() / "logs"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"host-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def user_err() -> IO[str]:
    """Where the host's own progress, warnings and errors go: the user's stderr, also inside quiet()."""
    return _user_err if _user_err is not None else sys.stderr


def library_stream() -> IO[str]:
    """Where a library's chatter should go: the log inside quiet(), else stderr (never our stdout,
    which carries --json output)."""
    return _active if _active is not None else sys.stderr


def _user_stream(stream: IO[str], fd: int, saved: int) -> IO[str]:
    """The stream our output keeps using: a duplicate of the original descriptor when `stream` is the
    process's real one (fd is about to point at the log), else the stream object itself."""
    try:
        real = stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        real = False
    return os.fdopen(os.dup(saved), "w", buffering=1) if real else stream


@contextlib.contextmanager
def quiet(path: Optional[Path], enabled: bool = True) -> Iterator[Optional[Path]]:
    """Send third-party output to `path` while the block runs (a no-op when not enabled or nested)."""
    global _active, _user_err
    if not enabled or path is None or _active is not None:
        yield None
        return
    log = open(path, "a", buffering=1)
    old_out, old_err = sys.stdout, sys.stderr
    for s in (old_out, old_err):
        s.flush()
    saved = {1: os.dup(1), 2: os.dup(2)}
    new_out = _user_stream(old_out, 1, saved[1])
    new_err = _user_stream(old_err, 2, saved[2])
    handler = logging.StreamHandler(log)
    root = logging.getLogger()
    old_level = root.level
    try:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout, sys.stderr = new_out, log
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
        logging.captureWarnings(True)
        _active, _user_err = log, new_err
        yield path
    finally:
        _active = _user_err = None
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(old_level)
        for s in (new_out, new_err):
            s.flush()
        sys.stdout, sys.stderr = old_out, old_err
        for fd, dup in saved.items():
            os.dup2(dup, fd)
            os.close(dup)
        for s, old in ((new_out, old_out), (new_err, old_err)):
            if s is not old:
                s.close()
        log.close()
