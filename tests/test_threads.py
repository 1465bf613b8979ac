"""run.threads reaches numpy's BLAS pool as well as torch (checked in a fresh process, since
the limits hold for the rest of the process that sets them)."""

import json
import subprocess
import sys

import pytest

PROBE = """
import json, threadpoolctl, torch
from selfloop.loop import set_threads
blas = lambda: [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
import numpy  # loads the BLAS library
before = blas()
set_threads(1)
print(json.dumps({"before": before, "after": blas(), "torch": torch.get_num_threads()}))
"""


def test_set_threads_caps_torch_and_blas():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"], "numpy loaded no BLAS library that threadpoolctl can see"
    if max(got["before"]) == 1:
        pytest.skip("BLAS already runs one thread here (one core), so the cap cannot be seen")
    assert got["after"] == [1] * len(got["before"]) and got["torch"] == 1
