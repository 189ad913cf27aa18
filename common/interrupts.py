"""SIGINT and SIGTERM as an exception, and the short spans during which one waits.

The CLI installs `raise_interrupted` for both signals. A signal raises `Interrupted` in the main thread at the
next bytecode boundary, which can fall between creating a temporary and the `try` that removes it; inside
`deferred()` the signal is only recorded, and raised when the outermost such block ends, where the caller's
cleanup already covers it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Interrupted(BaseException):
    """SIGINT or SIGTERM. Not a KeyboardInterrupt, which click intercepts (it printed a blank line and exited
    without a word); a BaseException, so every `except Exception` lets it through to the atomic outputs'
    cleanup."""


_depth = 0  # open deferred() blocks in the main thread
_pending: int | None = None  # a signal that arrived inside one


def raise_interrupted(signum: int, frame: object) -> None:
    """The signal handler: raise Interrupted, or record the signal while a deferred() block is open."""
    global _pending
    if _depth:
        _pending = signum
        return
    raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT / SIGTERM (as handled by raise_interrupted) until the block ends, then raise Interrupted.
    Keep the block short: a signal waits for it. Other threads never receive Python signals: no-op there."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending is not None:
            signum, _pending = _pending, None
            raise Interrupted(signal.Signals(signum).name)
