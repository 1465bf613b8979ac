"""scripts/probe_noise.py re-samples a checkpoint's probe: seed 0 must be the run's own value."""

import runpy
from pathlib import Path

from selfloop.ablate_report import distinct_per_solved
from selfloop.ablate_report import probe_vendi as report_probe_vendi
from selfloop.config import load_params
from selfloop.loop import run
from selfloop.monitor import mean_vendi
from selfloop.records import read_json
from selfloop.workspace import Workspace

SCRIPT = Path(__file__).parents[1] / "scripts" / "probe_noise.py"


def test_seed_zero_reproduces_the_recorded_probe(tiny_overrides, capsys):
    params = load_params(None, tiny_overrides)  # with the control arm
    run(params)
    root = Path(params.run.workdir)
    recorded = read_json(root / "gen_001" / "diversity.json")
    script = runpy.run_path(str(SCRIPT))
    again = script["probe_measures"](root, 1, 0)
    assert set(again) == set(recorded) == {"3", "4", "5"}
    keys = ("n", "distinct", "vendi_ngram", "distinct_2", "well_formed_share")  # no reference: no KL
    for level, got in again.items():
        assert got["probe"]["n"] == 24  # 12 held-out problems x pass_k 2
        assert {k: got["probe"][k] for k in keys} == {k: recorded[level]["probe"][k] for k in keys}
        assert got["probe_well_formed"] == {k: v for k, v in recorded[level]["probe_well_formed"].items()
                                            if k != "template_kl_vs_reference"}
    # the untrained TINY model solves nothing: no ways to a correct answer, here as recorded
    ways = distinct_per_solved(read_json(root / "gen_001" / "eval.json")["levels"])
    assert script["sample_measures"](root, 1, 0) == (mean_vendi(recorded, "probe_well_formed"), ways)
    assert script["main"]([str(root), "1", "--seeds", "2"]) == 0
    assert "generation 1 seed 0: probe " in capsys.readouterr().out
    # --arm control re-samples the control arm's checkpoint (the loop's is moved away to show
    # it is not read): seed 0 is the control's recorded evaluation
    (root / "gen_001" / "model").rename(root / "gen_001" / "model.away")
    control = read_json(root / "control" / "gen_001" / "eval.json")["levels"]
    assert script["sample_measures"](root, 1, 0, "control") == (
        report_probe_vendi(Workspace(root), 1, "control"), distinct_per_solved(control))
