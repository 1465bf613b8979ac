"""scripts/collapse_onset.py: onset and first flag of a collapse run against a default run,
with the ablation report's own definitions, on rows whose answer is known."""

import json
import runpy
from pathlib import Path

import pytest

SCRIPT = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "collapse_onset.py"))


def _row(g, vendi, acc, monitor=()):
    return {"generation": g, "vendi_samples": vendi, "mean_accuracy": acc, "monitor": list(monitor)}


RAISE = {"action": "raise_temperature", "signal": "vendi_probe"}
WAIT = {"action": "wait", "signal": "kl_templates"}


def test_onset_by_vendi_and_a_flag_one_generation_before_it():
    collapse = [_row(0, None, 0.06), _row(1, 50.0, 0.07, [WAIT]), _row(2, 46.0, 0.08, [RAISE]),
                _row(3, 44.0, 0.08)]  # 44 < 0.9 x 50: onset at 3
    default = [_row(g, 50.0, 0.07 + 0.01 * g) for g in range(4)]
    got = SCRIPT["collapse_check"](collapse, default)
    assert got["onset"] == 3
    assert got["first_flag"] == {"generation": 2, "decisions": ["raise_temperature (vendi_probe)"]}
    assert got["flag_within_2_of_onset"] is True


def test_onset_by_accuracy_and_a_flag_one_generation_after_it():
    collapse = [_row(0, None, 0.06), _row(1, 50.0, 0.07), _row(2, 49.0, 0.06), _row(3, 49.0, 0.06),
                _row(4, 49.0, 0.06), _row(5, 49.0, 0.06, [RAISE])]
    default = [_row(g, 50.0, 0.06 + 0.01 * g) for g in range(6)]  # 0.10 at 4: 4 points above
    got = SCRIPT["collapse_check"](collapse, default)
    assert got["onset"] == 4
    assert got["first_flag"]["generation"] == 5
    assert got["flag_within_2_of_onset"] is True
    # an onset never flagged is a miss, as in the ablation report's own check
    assert SCRIPT["collapse_check"](collapse[:5], default)["flag_within_2_of_onset"] is False


def test_main_reads_pairs_and_refuses_bad_ones(tmp_path, capsys):
    path = tmp_path / "results.json"
    arms = {"co1": {"generations": [_row(0, None, 0.06), _row(1, 50.0, 0.07, [RAISE]), _row(2, 40.0, 0.07)]},
            "r1": {"generations": [_row(g, 50.0, 0.07) for g in range(3)]}}
    path.write_text(json.dumps({"arms": arms}))
    assert SCRIPT["main"]([f"{path}:co1={path}:r1"]) == 0
    out = capsys.readouterr().out
    assert "onset 2, first flag generation 1: raise_temperature (vendi_probe)" in out
    assert "flag within 2 generations of onset: True" in out
    with pytest.raises(SystemExit):
        SCRIPT["main"]([f"{path}:co1"])
    with pytest.raises(ValueError, match="no arm 'co2'"):
        SCRIPT["main"]([f"{path}:co2={path}:r1"])
