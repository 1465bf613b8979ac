"""scripts/replicate_spread.py: the spread of a measure over replicates, on numbers whose
answer is known."""

import json
import math
import runpy
from pathlib import Path

import pytest

SCRIPT = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "replicate_spread.py"))


def test_ratios_their_mean_and_standard_error():
    got = SCRIPT["spread"]([{1: 10.0, 2: 9.0, 3: 12.0}, {1: 20.0, 2: 20.0, 3: 22.0}, {1: 10.0, 2: 10.5}])
    assert got["gen1_mean"] == pytest.approx(40 / 3)
    assert got["gen1_sd"] == pytest.approx(math.sqrt(((10 - 40 / 3) ** 2 * 2 + (20 - 40 / 3) ** 2) / 2))
    assert list(got["generations"]) == [2]  # generation 3 is missing from one replicate
    row = got["generations"][2]
    assert row["ratios"] == pytest.approx([0.9, 1.0, 1.05])
    assert row["mean"] == pytest.approx(2.95 / 3)
    sd = math.sqrt(sum((x - 2.95 / 3) ** 2 for x in (0.9, 1.0, 1.05)) / 2)
    assert row["se"] == pytest.approx(sd / math.sqrt(3))
    assert not row["below_beyond_chance"]  # 0.983 + 2 x 0.044 > 1


def test_a_dip_every_replicate_shares_is_beyond_chance():
    got = SCRIPT["spread"]([{1: 10.0, 2: 9.0}, {1: 10.0, 2: 9.1}, {1: 10.0, 2: 8.9}])
    assert got["generations"][2]["below_beyond_chance"]
    assert got["gen1_sd"] == 0.0


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least two"):
        SCRIPT["spread"]([{1: 1.0, 2: 1.0}])
    with pytest.raises(ValueError, match="generation-1 value"):
        SCRIPT["spread"]([{1: 1.0}, {2: 1.0}])
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"arms": {"default": {"generations": [
        {"generation": 1, "vendi_probe": 30.0}, {"generation": 2, "vendi_probe": 31.0}]}}}))
    assert SCRIPT["load"](f"{path}:default")["vendi_probe"] == {1: 30.0, 2: 31.0}
    with pytest.raises(ValueError, match="no arm 'r1'"):
        SCRIPT["load"](f"{path}:r1")
    with pytest.raises(ValueError, match="RESULTS_JSON:ARM"):
        SCRIPT["load"]("results.json")
