"""One writer per run directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from selfloop.workspace import Workspace


class RunLocked(RuntimeError):
    """Another process is running a loop in the same directory."""


@contextlib.contextmanager
def exclusive(ws: Workspace) -> Iterator[None]:
    """One writer per run directory. An OS lock (flock) is released when its process dies,
    even by SIGKILL, so a crash never leaves a stale lock behind."""
    ws.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(ws.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = Path(ws.root / ".lock").read_text().strip() or "?"
            raise RunLocked(f"{ws.root} is in use by another selfloop run (pid {owner}); "
                            "wait for it or use another --workdir") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


__all__ = ["RunLocked", "exclusive"]
