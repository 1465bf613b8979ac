"""Per-step wall time and peak memory."""

import sys

import numpy as np
import pytest

from selfloop.meter import Meter, peak_rss_mb, reset_peak


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS reset is Linux-only")
def test_each_step_gets_its_own_peak():
    m = Meter()
    with m("big"):
        x = np.ones(40_000_000)  # 305 MiB, touched
        del x
    with m("small"):
        np.ones(1000)
    assert m.memory["big"] - m.memory["small"] > 250
    assert set(m.times) == {"big", "small"} and all(t >= 0 for t in m.times.values())


def test_repeated_step_adds_time_and_keeps_the_larger_peak():
    m = Meter()
    for _ in range(2):
        with m("s"):
            pass
    assert m.times["s"] >= 0
    if reset_peak():
        assert m.memory["s"] == pytest.approx(peak_rss_mb(), abs=50)
