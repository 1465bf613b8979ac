"""SIGTERM inside ``sigterm_raises`` runs the owner's cleanup; outside it, the default applies."""

import signal
import subprocess
import sys
import time

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
