"""SIGTERM inside ``sigterm_raises`` runs the owner's cleanup; outside it, the default applies."""

import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys, time
from selfloop.terminate import sigterm_raises
marker = sys.argv[1]
if sys.argv[2] == "inside":
    with sigterm_raises():
        try:
            print("ready", flush=True)
            time.sleep(60)
        finally:
            open(marker, "w").write("cleaned up")
else:
    with sigterm_raises():
        pass  # the previous (default) handler is back afterwards
    try:
        print("ready", flush=True)
        time.sleep(60)
    finally:
        open(marker, "w").write("cleaned up")
"""


def _run_and_term(tmp_path, where: str) -> tuple[int, bool]:
    marker = tmp_path / f"marker-{where}"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), where],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30), marker.exists()


def test_sigterm_inside_raises_and_cleanup_runs(tmp_path):
    assert _run_and_term(tmp_path, "inside") == (143, True)


def test_sigterm_outside_keeps_the_default(tmp_path):
    assert _run_and_term(tmp_path, "outside") == (-signal.SIGTERM, False)


INNER_TEST = """
import sys, time
import pytest
from selfloop.terminate import sigterm_raises

@pytest.fixture
def resource():
    try:
        yield
    finally:
        open(MARKER, "w").write("torn down")

def test_waits(resource):
    print("ready", flush=True)
    if WHERE == "inside":  # as loop.run and the ablation's run_arms do
        with sigterm_raises():
            time.sleep(60)
    time.sleep(60)

def test_after():
    open(MARKER + ".after", "w").write("ran")
"""


def _lines(stream) -> queue.Queue:
    """The stream's lines, read on a thread, so a wait for one can time out."""
    q: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [q.put(line) for line in stream], daemon=True).start()
    return q


@pytest.mark.parametrize("where", ["plain", "inside"])
def test_sigterm_to_pytest_tears_fixtures_down_and_stops(tmp_path, where):
    """The suite's conftest turns SIGTERM into an interrupt, so a fixture's cleanup (stopping
    the Prefect server it started) runs when CI or a user kills the test run, and no further
    test starts; also when the test was inside ``sigterm_raises`` (SystemExit(143))."""
    marker = tmp_path / "marker"
    (tmp_path / "test_inner.py").write_text(f"MARKER = {str(marker)!r}\nWHERE = {where!r}\n" + INNER_TEST)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                             "-p", "tests.conftest", str(tmp_path / "test_inner.py")],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    lines = _lines(proc.stdout)
    try:
        while "ready" not in lines.get(timeout=60):
            pass
        time.sleep(0.5)  # into the sleep (inside sigterm_raises when asked)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) != 0
    finally:
        proc.kill()
    assert marker.read_text() == "torn down"
    assert not (tmp_path / "marker.after").exists()  # the session stopped
