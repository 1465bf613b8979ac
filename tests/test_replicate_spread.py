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


def test_accuracy_over_replicates_final_and_last_five():
    a = {g: 0.05 + 0.01 * g for g in range(11)}  # 0.15 at 10; generations 6-10 average 0.13
    b = {g: 0.04 + 0.01 * g for g in range(11)}  # 0.14 at 10; 0.12
    got = SCRIPT["accuracy"]([a, b])
    assert got["generation"] == 10
    assert got["final"]["values"] == pytest.approx([0.15, 0.14])
    assert got["final"]["mean"] == pytest.approx(0.145)
    assert got["final"]["se"] == pytest.approx(0.005)  # sd 0.00707 / sqrt 2
    assert got["last_n"]["values"] == pytest.approx([0.13, 0.12])
    with pytest.raises(ValueError, match="different generations"):
        SCRIPT["accuracy"]([a, {g: 0.1 for g in range(4)}])


def test_ratio_of_means_and_its_standard_error():
    r, se = SCRIPT["ratio"]({"mean": 0.15, "se": 0.003}, {"mean": 0.12, "se": 0.004})
    assert r == pytest.approx(1.25)
    assert se == pytest.approx(1.25 * math.sqrt((0.003 / 0.15) ** 2 + (0.004 / 0.12) ** 2))


def test_versus_prints_the_accuracy_ratio(tmp_path, capsys):
    def arm(final):
        gens = [{"generation": g, "mean_accuracy": 0.1, "vendi_probe": 30.0} for g in range(10)]
        return {"generations": [*gens, {"generation": 10, "mean_accuracy": final, "vendi_probe": 31.0}]}

    path = tmp_path / "results.json"
    arms = {"a1": arm(0.15), "a2": arm(0.13), "d1": arm(0.10), "d2": arm(0.10)}
    path.write_text(json.dumps({"arms": arms}))
    assert SCRIPT["main"]([f"{path}:a1", f"{path}:a2", "--versus", f"{path}:d1", f"{path}:d2"]) == 0
    out = capsys.readouterr().out
    assert "replicates' accuracy, generation 10: 15.00, 13.00%; mean 14.00 +- 1.00%" in out
    assert "ratio of means, final: 1.400 +- 0.100" in out  # the default's replicates agree: SE 0
    assert "ratio of means, last 5: 1.080 +- 0.020" in out  # (0.11, 0.106) / 0.1


def test_replicates_of_unequal_length_still_get_their_diversity_spread(tmp_path, capsys):
    def arm(last):
        return {"generations": [{"generation": g, "mean_accuracy": 0.1, "vendi_probe": 30.0 + g}
                                for g in range(last + 1)]}

    path = tmp_path / "results.json"
    path.write_text(json.dumps({"arms": {"long": arm(10), "short": arm(3)}}))
    assert SCRIPT["main"]([f"{path}:long", f"{path}:short"]) == 0
    out = capsys.readouterr().out
    assert "accuracy: not compared: replicates end at different generations ([3, 10])" in out
    assert "gen  3 / gen 1: 1.065, 1.065; mean 1.065 +- 0.000" in out
    assert "gen  4" not in out
    with pytest.raises(SystemExit):
        SCRIPT["main"]([f"{path}:long", f"{path}:short", "--versus", f"{path}:long", f"{path}:long"])
