"""SIGTERM as an exception, for code that owns child processes.

Python's default SIGTERM action ends the process at once: no ``finally``, no ``except``, so
child processes (the control arm, ablation arms) are orphaned and run on, still writing their
run directories. Within ``sigterm_raises()`` a SIGTERM raises ``SystemExit(143)`` instead, so
the owner's cleanup stops them first. Handlers can only be set from the main thread; elsewhere
(a Prefect worker thread, say) this does nothing and the caller's own handling applies."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

EXIT_CODE = 128 + signal.SIGTERM


def _raise(*_) -> None:
    sys.exit(EXIT_CODE)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
