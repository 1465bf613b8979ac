"""SIGTERM inside ``sigterm_raises`` runs the owner's cleanup; outside it, the default applies."""

import signal
import subprocess
import sys
import time
from pathlib import Path

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

@pytest.fixture
def resource():
    try:
        yield
    finally:
        open(MARKER, "w").write("torn down")

def test_waits(resource):
    print("ready", flush=True)
    time.sleep(60)
"""


def test_sigterm_to_pytest_tears_fixtures_down(tmp_path):
    """The suite's conftest turns SIGTERM into an interrupt, so a fixture's cleanup (stopping
    the Prefect server it started) runs when CI or a user kills the test run."""
    marker = tmp_path / "marker"
    (tmp_path / "test_inner.py").write_text(f"MARKER = {str(marker)!r}\n" + INNER_TEST)
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                             "-p", "tests.conftest", str(tmp_path / "test_inner.py")],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 60
    while "ready" not in proc.stdout.readline():
        assert proc.poll() is None and time.monotonic() < deadline, "inner test never started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) != 0
    assert marker.read_text() == "torn down"
