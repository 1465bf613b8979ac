"""`selfloop ablate` at TINY size: arms from one base checkpoint, a report, no re-runs."""

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from selfloop import diversity
from selfloop.ablate import ARMS, ablate, make_arms
from selfloop.records import file_sha256, read_json, read_jsonl, write_json
from tests.conftest import TINY

SETS = [o for o in TINY if not o.startswith("run.iterations=")]
# collapse as it is; no_verifier also without reference data, so that a non-empty pool meets
# reference_fraction 0 (the TINY base model solves nothing: collapse's pool stays empty)
ARMS_UNDER_TEST = {"collapse": ARMS["collapse"],
                   "no_verifier": (*ARMS["no_verifier"], "train.reference_fraction=0")}


def _per_problem(path) -> int:
    return max(Counter(r["problem_id"] for r in read_jsonl(path)).values(), default=0)


def test_arms_share_one_base_and_report(tmp_path, monkeypatch):
    # The n-gram Vendi's 2048 x 2048 eigendecomposition is most of a TINY generation's time
    # (3 per generation); 256 hashed features keep the numbers meaningful and the test fast.
    monkeypatch.setattr(diversity, "ngram_features", functools.partial(diversity.ngram_features, dim=256))
    work, out = tmp_path / "ablate", tmp_path / "report"
    got = ablate(None, SETS, 2, ARMS_UNDER_TEST, workers=1, workdir=work, out=out,
                 command="selfloop ablate --test", log=lambda _: None)
    assert got["failed"] == {} and got["ran"] == ["collapse", "no_verifier"]

    # one base checkpoint, shared
    base_sha = file_sha256(work / "base" / "gen_000" / "model" / "model.safetensors")
    for arm in ARMS_UNDER_TEST:
        weights = work / arm / "gen_000" / "model" / "model.safetensors"
        assert file_sha256(weights) == base_sha
        assert os.path.samefile(weights, work / "base" / "gen_000" / "model" / "model.safetensors")
        assert (work / arm / "gen_002" / "metrics.json").exists()
        assert read_json(work / arm / "params.json")["run"]["iterations"] == 2
        first = read_jsonl(work / arm / "gen_001" / "candidates.jsonl")[0]
        assert first["generator"]["sha256"] == base_sha

    # collapse: one greedy sample and at most one accepted answer per problem
    cands = read_jsonl(work / "collapse" / "gen_001" / "candidates.jsonl")
    assert all(r["sampling"]["greedy"] and r["count"] == 1 for r in cands)
    assert _per_problem(work / "collapse" / "gen_001" / "candidates.jsonl") == 1
    for g in (1, 2):
        assert _per_problem(work / "collapse" / f"gen_{g:03d}" / "accepted.jsonl") <= 1
    # no verifier: everything passes unread and says so; with reference_fraction 0 and a
    # non-empty pool every batch is all synthetic, and the suites pass
    d = work / "no_verifier" / "gen_001"
    verified = read_jsonl(d / "verified.jsonl")
    assert {v["verifier"] for r in verified for v in r["verification"]} == {"none"}
    assert read_jsonl(d / "pool.jsonl")
    assert all(m["reference"] == [] and m["synthetic"] for m in read_jsonl(d / "mix.jsonl"))
    for kind in ("candidates", "accepted", "mix"):
        assert read_json(d / "validation" / f"{kind}.json")["success"]

    # the report
    results = read_json(out / "results.json")
    assert set(results["arms"]) == {"collapse", "no_verifier"}
    for arm in results["arms"].values():
        rows = arm["generations"]
        assert [r["generation"] for r in rows] == [0, 1, 2] and arm["complete"]
        assert rows[0]["mean_accuracy"] == results["base"]["mean_accuracy"]
        assert {"accuracy", "pass_at_k", "acceptance", "pool", "diversity", "monitor",
                "vendi_samples", "vendi_accepted", "vendi_probe", "distinct_per_solved"} <= set(rows[1])
        # the held-out probe: every pass@k sample measured; the untrained TINY model writes
        # nothing well-formed, so there is no well-formed Vendi (None, not 0), base model included
        probe = rows[1]["diversity"]["3"]["probe"]
        assert probe["n"] > 0 and probe["well_formed_share"] == 0.0
        assert rows[0]["vendi_probe"] is None and rows[1]["vendi_probe"] is None
        assert (work / "base" / "gen_000" / "eval_samples.jsonl").exists()
    assert results["arms"]["no_verifier"]["generations"][1]["exact_pass_rate"] is not None
    assert {"onset", "first_flag", "flag_within_2_of_onset"} <= set(results["checks"]["collapse"])
    table = (out / "table.md").read_text()
    assert "| collapse |" in table and "| no_verifier |" in table and "selfloop ablate --test" in table
    for name in ("accuracy.png", "diversity.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000

    # a second run re-runs nothing; other parameters for a finished base or arm are refused
    again = ablate(None, SETS, 2, ARMS_UNDER_TEST, workers=1, workdir=work, out=out,
                   command="selfloop ablate --test", log=lambda _: None)
    assert again["ran"] == [] and again["skipped"] == ["collapse", "no_verifier"]
    with pytest.raises(ValueError, match=r"base was made with other \['bootstrap'\]"):
        ablate(None, [*SETS, "bootstrap.steps=31"], 2, ARMS_UNDER_TEST, workdir=work, out=out)
    refused = r"arm collapse: .*\['train.steps'\]; train.steps: the run has 10 .*; remove"
    with pytest.raises(ValueError, match=refused):
        ablate(None, [*SETS, "train.steps=11"], 2, ARMS_UNDER_TEST, workdir=work, out=out)

    # --report-only re-renders from the files as they are: no check, nothing run, the runs'
    # command kept and its own added; an arm without a run is left out
    table_before = (out / "table.md").read_text()
    (out / "table.md").unlink()
    threads = []
    monkeypatch.setattr("selfloop.loop.set_threads", threads.append)
    again = ablate(None, [*SETS, "train.steps=11"], 2, {**ARMS_UNDER_TEST, "replace": ARMS["replace"]},
                   workdir=work, out=out, command="selfloop ablate --report-only", log=lambda _: None,
                   report_only=True)
    assert again["ran"] == [] and set(again["results"]["arms"]) == {"collapse", "no_verifier"}
    assert threads == [1]  # run.threads reaches the report's own process
    assert again["reported"] == again["skipped"] == ["collapse", "no_verifier"]
    assert again["results"]["command"] == "selfloop ablate --test"
    assert again["results"]["report_command"] == "selfloop ablate --report-only"
    table_after = (out / "table.md").read_text()
    assert table_after.startswith(table_before.rstrip("\n"))
    assert "Report written from those runs' files by: `selfloop ablate --report-only`" in table_after
    # an arm whose seeding stopped before its params.json is left out; without an earlier
    # report of these directories, the command that made the runs is not guessed
    (work / "replace" / "gen_000").mkdir(parents=True)
    shutil.copy(work / "base" / "gen_000" / "eval.json", work / "replace" / "gen_000" / "eval.json")
    other = ablate(None, SETS, 2, {**ARMS_UNDER_TEST, "replace": ARMS["replace"]}, workdir=work,
                   out=tmp_path / "other", command="selfloop ablate --report-only", log=lambda _: None,
                   report_only=True)
    assert other["reported"] == ["collapse", "no_verifier"]
    # each arm's made_by.json says what made it, with no earlier report needed
    assert read_json(work / "collapse" / "made_by.json") == {
        "arm": "collapse", "command": "selfloop ablate --test", "overrides": list(ARMS["collapse"])}
    assert other["results"]["command"] == "selfloop ablate --test"
    assert "Produced by: `selfloop ablate --test`" in (tmp_path / "other" / "table.md").read_text()
    # arms made by two commands: each command with its arms
    made = work / "no_verifier" / "made_by.json"
    write_json(made, {**read_json(made), "command": "selfloop ablate --arms no_verifier"})
    two = ablate(None, SETS, 2, ARMS_UNDER_TEST, workdir=work, out=tmp_path / "two", log=lambda _: None,
                 report_only=True)
    assert two["results"]["command"] == "2 commands (see made_by)"
    assert two["results"]["arms"]["no_verifier"]["made_by"] == "selfloop ablate --arms no_verifier"
    assert ("Produced by:\n- `selfloop ablate --test`: collapse\n- `selfloop ablate --arms no_verifier`: "
            "no_verifier") in (tmp_path / "two" / "table.md").read_text()
    # arms seeded before made_by.json: without an earlier report of these directories, the
    # command that made the runs is not guessed
    for arm in ("collapse", "no_verifier"):
        (work / arm / "made_by.json").unlink()
    other = ablate(None, SETS, 2, ARMS_UNDER_TEST, workdir=work, out=tmp_path / "third", log=lambda _: None,
                   report_only=True)
    assert other["results"]["command"].startswith(f"unknown (no earlier report of {work}")
    assert other["results"]["arms"]["collapse"]["overrides"] == list(ARMS["collapse"])
    with pytest.raises(ValueError, match="no finished base run"):
        ablate(None, SETS, 2, ARMS_UNDER_TEST, workdir=tmp_path / "none", out=out, report_only=True)


@pytest.mark.parametrize("override", ["model.n_layer=2", "bootstrap.steps=5", "run.seed=1",
                                      "reference.heldout_per_level=3", "domain.num_max=8"])
def test_an_arm_may_not_change_the_base(tmp_path, override):
    with pytest.raises(ValueError, match="shape the shared base checkpoint"):
        make_arms(None, SETS, 1, tmp_path, {"odd": ("curate.accumulate=false", override)})


def test_a_base_made_before_a_key_existed_is_reused(tmp_path):
    """A base whose params.json predates run.device reads as cpu (config.ADDED_KEYS), so a
    later ablation reuses it; a base made with other shaping parameters is still refused."""
    from selfloop.ablate import base_params, check_base
    from selfloop.config import to_dict

    base = base_params(None, SETS, tmp_path)
    saved = to_dict(base)
    del saved["run"]["device"]
    Path(base.run.workdir).mkdir(parents=True)
    write_json(Path(base.run.workdir) / "params.json", saved)
    check_base(base)
    write_json(Path(base.run.workdir) / "params.json", {**saved, "run": {**saved["run"], "seed": 7}})
    with pytest.raises(ValueError, match=r"made with other \['run.seed'\]"):
        check_base(base)


def _record_span(arm) -> None:
    """A stand-in arm process: writes when it started and ended. Arms ``a`` and ``b`` each
    wait (up to 60 s) for the other to have started, and record whether it did: a fixed sleep
    made the test depend on how fast processes start on a loaded machine."""
    import time

    start = time.monotonic()
    (arm.workdir / "started").write_text("")
    together = 0
    if arm.name in ("a", "b"):
        other = arm.workdir.parent / {"a": "b", "b": "a"}[arm.name] / "started"
        while not other.exists() and time.monotonic() < start + 60:
            time.sleep(0.05)
        together = int(other.exists())
    else:
        time.sleep(0.3)
    (arm.workdir / "span").write_text(f"{start} {time.monotonic()} {together}")


def test_arms_run_in_parallel_and_the_control_counts_twice(tmp_path):
    from selfloop.ablate import run_arms

    arms = make_arms(None, SETS, 1, tmp_path, {"default": ARMS["default"], "a": (), "b": ()})
    for a in arms:
        a.workdir.mkdir()
    assert run_arms(arms, 2, target=_record_span) == {"default": 0, "a": 0, "b": 0}
    span = {a.name: [float(x) for x in (a.workdir / "span").read_text().split()] for a in arms}
    assert span["default"][1] <= min(span["a"][0], span["b"][0])  # default + its control: 2 slots
    assert span["a"][2] == span["b"][2] == 1  # a and b side by side: each saw the other start


def _sleep_forever(arm) -> None:
    (arm.workdir / "pid").write_text(str(os.getpid()))
    time.sleep(120)


def test_sigterm_to_the_ablation_stops_its_arms(tmp_path):
    # the parent is killed as a scheduler or CI timeout would kill it; its arms must not run on
    code = (f"from selfloop.ablate import make_arms, run_arms\n"
            f"from tests.test_ablate import SETS, _sleep_forever\n"
            f"arms = make_arms(None, SETS, 1, __import__('pathlib').Path({str(tmp_path)!r}), {{'a': ()}})\n"
            f"arms[0].workdir.mkdir()\n"
            f"run_arms(arms, 2, target=_sleep_forever)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1])
    pid_file = tmp_path / "a" / "pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert parent.poll() is None and time.monotonic() < deadline, "the arm never started"
        time.sleep(0.2)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(30) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):  # terminated and reaped by the parent
        os.kill(child, 0)


def _rows(acc, vendi=None, flags=None, ways=None, entropy=None):
    """Generation rows as the report reads them: mean accuracy per generation (0: base)."""
    rows = []
    for g, a in enumerate(acc):
        r = {"generation": g, "mean_accuracy": a, "distinct_per_solved": ways[g] if ways else None}
        if g and entropy:
            r.update(entropy_samples_wf=entropy[g - 1], entropy_accepted_equal_n=entropy[g - 1] - 1,
                     entropy_probe=entropy[g - 1] + 1)
        if g and vendi:
            r.update(vendi_samples=vendi[g - 1], vendi_accepted=vendi[g - 1] / 2,
                     vendi_accepted_equal_n=vendi[g - 1] / 5, vendi_probe=vendi[g - 1] / 4,
                     monitor=[{"action": "raise_temperature", "signal": "vendi_samples"}]
                     if g in (flags or ()) else [])
        rows.append(r)
    return rows


def test_distinct_per_solved_pools_levels_by_solved_problems():
    from selfloop.ablate_report import distinct_per_solved

    levels = {"3": {"n": 500, "pass_at_k": 0.2, "distinct_per_solved": 1.5},  # 100 solved, 150 answers
              "4": {"n": 500, "pass_at_k": 0.1, "distinct_per_solved": 1.0},  # 50 solved, 50 answers
              "5": {"n": 500, "pass_at_k": 0.0, "distinct_per_solved": 0.0}}
    assert distinct_per_solved(levels) == pytest.approx(200 / 150)
    assert distinct_per_solved({"5": levels["5"]}) is None


def test_done_when_numbers(tmp_path):
    from selfloop.ablate_render import plots, table
    from selfloop.ablate_report import checks, onset

    default = _rows([0.1, 0.12, 0.14, 0.15, 0.16], [10, 11, 10.5, 12], ways=[1.05, 1.1, 1.089, 1.2, 1.3],
                    entropy=[4.0, 3.8, 4.2, 4.1])
    collapse = _rows([0.1, 0.12, 0.13, 0.10, 0.08], [10, 9.5, 8.5, 6], flags=(4,))
    assert onset(collapse, default) == 3  # vendi 8.5 < 0.9 x 10
    assert onset(_rows([0.1, 0.08], [10]), _rows([0.1, 0.12], [10])) == 1  # 4 points behind
    assert onset(default, default) is None
    arms = {"default": default, "control": _rows([0.1, 0.1, 0.1, 0.11, 0.1]), "collapse": collapse,
            "collapse_monitor": _rows([0.1, 0.12, 0.13, 0.14, 0.15], [10, 9.5, 9.6, 9.8], flags=(2,))}
    c = checks({k: {"generations": v} for k, v in arms.items()})
    assert c["collapse"]["onset"] == 3 and c["collapse"]["first_flag"]["generation"] == 4
    assert c["collapse"]["flag_within_2_of_onset"] is True
    assert c["default"]["ever_flagged"] is False
    assert c["default"]["vendi_samples"] == {"fell_below_gen1": False, "min_ratio_to_gen1": 1.05}
    assert c["default"]["vendi_probe"] == {"fell_below_gen1": False, "min_ratio_to_gen1": 1.05}
    ways = c["default"]["distinct_per_solved"]
    assert ways == {"fell_below_gen1": True, "min_ratio_to_gen1": pytest.approx(0.99)}
    # template entropy: 4.0 at generation 1, 3.8 at 2 (each set offset by the same bit)
    assert c["default"]["entropy_samples_wf"] == {"fell_below_gen1": True,
                                                  "min_ratio_to_gen1": pytest.approx(0.95)}
    assert c["default"]["entropy_accepted_equal_n"]["min_ratio_to_gen1"] == pytest.approx(2.8 / 3.0)
    assert c["default"]["entropy_probe"]["min_ratio_to_gen1"] == pytest.approx(4.8 / 5.0)
    # nothing solved at generation 1: no baseline, rather than a later generation standing in
    unsolved = _rows([0.1, 0.1, 0.1, 0.1], ways=[1.0, None, 1.2, 1.1])
    assert checks({"default": {"generations": unsolved}})["default"]["distinct_per_solved"] == {
        "fell_below_gen1": None, "min_ratio_to_gen1": None}
    assert c["floors"]["collapse"]["vendi_probe"] == pytest.approx(0.6)
    assert c["floors"]["collapse"]["entropy_probe"] is None  # not measured in that arm
    assert c["floors"]["default"]["entropy_samples_wf"] == pytest.approx(0.95)
    assert c["floors"]["default"]["distinct_per_solved"] == pytest.approx(0.99)
    assert "control" not in c["floors"]
    # accuracy over the last generations (all 4 here: fewer than 5) and against the default's
    assert c["floors"]["collapse"]["last_generations"] == [1, 2, 3, 4]
    assert c["floors"]["collapse"]["last_mean_accuracy"] == pytest.approx((0.12 + 0.13 + 0.10 + 0.08) / 4)
    assert c["floors"]["collapse"]["last_mean_vs_default"] == pytest.approx(0.43 / 0.57)
    assert c["floors"]["default"]["last_mean_vs_default"] == pytest.approx(1.0)
    # a shorter arm is compared with the default's same generations, not its last ones
    short = checks({"default": {"generations": default}, "short": {"generations": default[:3]}})
    assert short["floors"]["short"]["last_generations"] == [1, 2]
    assert short["floors"]["short"]["last_mean_vs_default"] == pytest.approx(1.0)
    # a default arm with no generation after the base: nothing to compare with, nothing made up
    alone = checks({"default": {"generations": default[:1]}, "short": {"generations": default[:3]}})
    assert alone["floors"]["short"]["last_mean_vs_default"] is None
    assert alone["floors"]["default"]["last_generations"] == []
    assert alone["floors"]["default"]["last_mean_accuracy"] is None
    assert c["collapse"]["onset"] == 3
    fell = checks({"default": {"generations": collapse}})["default"]
    assert fell["vendi_probe"]["fell_below_gen1"] is True
    assert fell["vendi_probe"]["min_ratio_to_gen1"] == pytest.approx(0.6)
    assert c["collapse_monitor"]["ratio"] == pytest.approx(0.15 / 0.16)
    assert c["collapse_monitor"]["within_10pct"] is True
    assert c["collapse_monitor"]["at_least_90pct"] is True
    # the steadier reading: generations 1-4 of each arm (the last min(5, 4) generations)
    assert c["collapse_monitor"]["last_generations"] == 4
    assert c["collapse_monitor"]["last_mean_ratio"] == pytest.approx((0.12 + 0.13 + 0.14 + 0.15) /
                                                                      (0.12 + 0.14 + 0.15 + 0.16))
    # above the default by more than 10%: outside the two-sided band, above the floor
    above = dict(arms, collapse_monitor=_rows([0.1, 0.12, 0.13, 0.14, 0.18]))
    ahead = checks({k: {"generations": v} for k, v in above.items()})["collapse_monitor"]
    assert (ahead["within_10pct"], ahead["at_least_90pct"]) == (False, True)
    behind = dict(arms, collapse_monitor=_rows([0.1, 0.12, 0.13, 0.14, 0.14]))
    low = checks({k: {"generations": v} for k, v in behind.items()})["collapse_monitor"]
    assert (low["within_10pct"], low["at_least_90pct"]) == (False, False)

    results = {"command": "selfloop ablate", "base": default[0], "checks": c,
               "arms": {k: {"generations": v, "complete": True, "stopped": ""} for k, v in arms.items()}}
    text = table(results)
    assert "| collapse | 4 | 8.0% | 13.0% (2) | -8.0 pts (0.50x) | gen 4: raise_temperature" in text
    assert "| control | 4 |" in text
    # default's last columns: accepted, accepted at equal size, probe, ways
    assert "| 5.00 → 6.00 | 2.00 → 2.40 | - → 2.50 → 3.00 | 1.050 → 1.100 → 1.300 |" in text
    assert "accepted Vendi at equal size False (1.050)" in text
    assert "correct answers per solved problem True (0.990)" in text
    assert ("template entropy (digits masked; the same fixed-size sets, mean over their draws) fell below "
            "generation 1's (lowest / generation 1's): well-formed samples True (0.950), accepted at "
            "equal size True (0.933), probe True (0.960)") in text
    assert ("| arm | mean accuracy, last generations | vs default, same generations | "
            "well-formed samples Vendi |") in text
    assert "| collapse | 10.75% (gens 1-4) | 0.75x | - | 0.600 | 0.600 | - | - | - | - |" in text
    assert "| default | 14.25% (gens 1-4) | - | - | 1.050 | 1.050 | 0.950 | 0.933 | 0.960 | 0.990 |" in text
    assert all(p.stat().st_size > 5000 for p in plots(results, tmp_path))


def test_cli_refuses_unknown_arms_and_bad_params(capsys):
    from selfloop.cli import main

    assert main(["ablate", "--arms", "default,nope"]) == 2
    assert "unknown arm(s) ['nope']" in capsys.readouterr().err
    assert main(["ablate", "--set", "train.stpes=3"]) == 2
    assert "unknown key(s) ['stpes']" in capsys.readouterr().err


def test_report_recomputes_the_probe_as_the_measure_step_does(tmp_path):
    """Generation 0 and the control arm have no measure step; the report's probe for them uses
    the same sample size and seed as the measure step would."""
    from selfloop.ablate_report import probe_vendi
    from selfloop.config import load_params, to_dict
    from selfloop.records import write_json, write_jsonl
    from selfloop.steps.measure import measure_probe
    from selfloop.steps.plan import generation_seed
    from selfloop.workspace import Workspace

    params = load_params(None, ["measure.probe_n=20", "measure.probe_draws=3", "run.seed=3"])
    ws = Workspace(tmp_path)
    write_json(tmp_path / "params.json", to_dict(params))
    probe = [{"level": lv, "response": f"{i}+{j}*{lv}", "well_formed": True, "reason": "wrong_value"}
             for lv in (3, 4) for i in range(1, 10) for j in range(1, 6)]
    ws.gen(0).mkdir(parents=True)
    write_jsonl(ws.gen(0) / "eval_samples.jsonl", probe)
    def expected(draws: int) -> list[dict]:
        return [measure_probe(probe, lv, [], None, 0, 20, generation_seed(params, 0), draws=draws)
                ["probe_well_formed"] for lv in (3, 4)]

    assert all(e["n"] == 20 and "vendi_ngram_sd" in e for e in expected(3))
    mean = [sum(e["vendi_ngram"] for e in expected(d)) / 2 for d in (3, 32)]
    assert mean[0] != pytest.approx(mean[1])  # so the check below sees probe_draws honoured
    assert probe_vendi(ws, 0) == pytest.approx(mean[0])
    assert probe_vendi(ws, 1) is None  # no samples kept


def test_user_defined_arms_parse_and_reach_the_ablation(monkeypatch, capsys):
    from selfloop import ablate as ab
    from selfloop.cli import main

    assert ab.parse_arm("hot:plan.temperature=1.2, plan.top_p=0.9") == (
        "hot", ("plan.temperature=1.2", "plan.top_p=0.9"))
    # a comma inside a value stays there
    assert ab.parse_arm("wide:domain.levels=[3,4]") == ("wide", ("domain.levels=[3,4]",))
    for bad, why in [("hot", "expected NAME:"), ("9x:plan.samples=2", "expected NAME:"),
                     ("default:plan.samples=2", "taken by a built-in"), ("x:", "SECTION.KEY=VALUE"),
                     ("x:temperature=2", "SECTION.KEY=VALUE")]:
        with pytest.raises(ValueError, match=why):
            ab.parse_arm(bad)

    seen = {}

    def fake_ablate(params, sets, iterations, arms, *rest, report_only=False):
        seen.update(arms)
        seen["report_only"] = report_only
        raise ValueError("stop here")  # the CLI's error path: exit 2, nothing run

    monkeypatch.setattr(ab, "ablate", fake_ablate)
    assert main(["ablate", "--arm", "hot:plan.temperature=1.2"]) == 2
    assert seen == {"hot": ("plan.temperature=1.2",), "report_only": False}  # --arm alone: no built-in arms
    seen.clear()
    assert main(["ablate", "--arms", "default", "--arm", "hot:plan.temperature=1.2"]) == 2
    assert list(seen) == ["default", "hot", "report_only"]
    seen.clear()
    assert main(["ablate", "--arms", "default", "--report-only"]) == 2 and seen["report_only"] is True
    assert main(["ablate", "--arm", "a:plan.samples=2", "--arm", "a:plan.samples=3"]) == 2
    assert "given twice" in capsys.readouterr().err


def test_a_user_arm_may_not_change_the_base(tmp_path, capsys):
    from selfloop.cli import main

    code = main(["ablate", "--arm", "big:model.n_layer=6", "--workdir", str(tmp_path / "w"),
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "shape the shared base checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_well_formed_samples_vendi_of_a_run_measured_before_it_was_recorded(tmp_path):
    """The report computes it from verified.jsonl as the measure step would have."""
    from selfloop import model as mdl
    from selfloop.ablate_report import samples_vendi
    from selfloop.config import DomainConfig, load_params, to_dict
    from selfloop.domains import get_domain
    from selfloop.monitor import mean_vendi
    from selfloop.records import write_jsonl
    from selfloop.steps.measure import measure
    from selfloop.steps.plan import generation_seed
    from selfloop.workspace import Workspace

    params = load_params(None, ["measure.probe_n=20", "measure.probe_draws=3", "run.seed=3"])
    ws = Workspace(tmp_path)
    write_json(tmp_path / "params.json", to_dict(params))
    tok = mdl.build_char_tokenizer(get_domain(DomainConfig()).alphabet)
    tok.save_pretrained(ws.init_model)
    problem = {"numbers": [1, 2, 3], "target": 6}
    samples = [{"level": 3, "response": f"{a}+{b}*{c}", "count": 2, "problem": problem}
               for a, b, c in [(1, 2, 3), (2, 3, 1), (3, 1, 2), (1, 3, 2), (2, 1, 3), (3, 2, 1)] * 3]
    samples += [{"level": 3, "response": f"{i}((", "count": 1, "problem": problem} for i in range(30)]
    ws.gen(2).mkdir(parents=True)
    write_jsonl(ws.gen(2) / "verified.jsonl", samples)
    dom = get_domain(DomainConfig())
    recorded = measure(samples, [], [], None, 0, generation_seed(params, 2), probe_n=20, probe_draws=3,
                       well_formed=lambda r: dom.verify(r["response"], r["problem"], 200).well_formed)
    assert recorded["3"]["samples_well_formed"]["available"] == 36  # malformed left out
    assert samples_vendi(ws, 2) == pytest.approx(mean_vendi(recorded, "samples_well_formed"))


def test_accepted_vendi_at_equal_size_of_a_run_measured_before_it_was_recorded(tmp_path):
    """For generations whose measure step did not record it, the report computes the accepted
    answers at a fixed size from accepted.jsonl as that step does; the series averages the
    levels generation 1 had at full size."""
    from selfloop.ablate_report import accepted_equal_n_levels
    from selfloop.config import load_params, to_dict
    from selfloop.monitor import equal_n_series
    from selfloop.records import write_jsonl
    from selfloop.steps.measure import measure
    from selfloop.steps.plan import generation_seed
    from selfloop.workspace import Workspace

    params = load_params(None, ["measure.accepted_n=12", "measure.probe_draws=3", "run.seed=3"])
    ws = Workspace(tmp_path)
    write_json(tmp_path / "params.json", to_dict(params))
    accepted = ([{"level": 3, "response": f"{a}+{b}-{c}"} for a in range(1, 5) for b in range(1, 4)
                 for c in (1, 2)]  # 24 at level 3
                + [{"level": 4, "response": f"{a}*{a}+1+2"} for a in range(1, 6)])  # 5 at level 4
    ws.gen(2).mkdir(parents=True)
    write_jsonl(ws.gen(2) / "accepted.jsonl", accepted)
    recorded = measure([], accepted, [], None, 0, generation_seed(params, 2), probe_draws=3, accepted_n=12)
    got = accepted_equal_n_levels(ws, 2)
    for lv in ("3", "4"):
        assert got[lv]["accepted_equal_n"]["vendi_ngram"] == pytest.approx(
            recorded[lv]["accepted_equal_n"]["vendi_ngram"])
    assert recorded["3"]["accepted_equal_n"]["n"] == 12 and recorded["3"]["accepted_equal_n"]["full_size"]
    assert not recorded["4"]["accepted_equal_n"]["full_size"]  # 5 < 12: left out of comparisons
    assert equal_n_series([got])[0] == pytest.approx(got["3"]["accepted_equal_n"]["vendi_ngram"])
    # a run that had it off (an earlier run reads measure.accepted_n as 0) is computed at the default
    off = to_dict(params)
    del off["measure"]["accepted_n"]
    write_json(tmp_path / "params.json", off)
    assert accepted_equal_n_levels(ws, 2)["3"]["accepted_equal_n"]["n"] == 24  # default 128 > 24


def test_template_entropy_is_recomputed_as_the_measure_step_records_it(tmp_path):
    """The report's template entropy of the three fixed-size sets equals what today's measure
    step records from the same files (the mean over the draws), whatever the run recorded."""
    from selfloop import model as mdl
    from selfloop.ablate_entropy import entropy_levels, legal_for
    from selfloop.ablate_report import add_template_entropy
    from selfloop.config import DomainConfig, load_params, to_dict
    from selfloop.domains import get_domain
    from selfloop.records import write_jsonl
    from selfloop.steps.measure import measure
    from selfloop.steps.plan import generation_seed
    from selfloop.workspace import Workspace

    params = load_params(None, ["measure.probe_n=12", "measure.accepted_n=10", "measure.probe_draws=4",
                                "run.seed=3"])
    ws = Workspace(tmp_path)
    write_json(tmp_path / "params.json", to_dict(params))
    mdl.build_char_tokenizer(get_domain(DomainConfig()).alphabet).save_pretrained(ws.init_model)
    p3, p4 = {"numbers": [1, 2, 3], "target": 6}, {"numbers": [1, 2, 3, 4], "target": 10}
    samples = ([{"level": 3, "response": r, "count": 2, "problem": p3}
                for r in ("1+2+3", "3+2+1", "1*2*3", "(1+2)*3", "3*2-1", "2+1+3", "3-2+1")]
               + [{"level": 3, "response": f"{i}((", "problem": p3} for i in range(9)]  # malformed
               + [{"level": 4, "response": r, "problem": p4} for r in ("1+2+3+4", "4*3-2", "(1+4)*2")])
    # 12 at level 3, one shape far more often than the others; a count is not a weight here
    shapes = ("{a}+{b}-1", "{a}+{b}-1", "{a}*{b}-1", "({a}+{b})*1")
    accepted = [{"level": 3, "response": shapes[(a + b) % 4].format(a=a, b=b), "count": 1 + 5 * (a == 1)}
                for a in range(1, 5) for b in range(1, 4)]
    # more well-formed probe answers than probe_n at level 4, so the draws differ; level 5: probe only
    probe = ([{"level": 4, "response": r, "well_formed": True}
              for r in ("1+2+3+4", "4*3-2+1", "(1+2)*3+4", "4*3*2-1") * 5]
             + [{"level": 4, "response": "(((", "well_formed": False}] * 4
             + [{"level": 5, "response": r, "well_formed": True} for r in ("1+2+3+4+5", "5*4-3-2-1")])
    dom, runs = get_domain(DomainConfig()), []
    # generation 2: 9 accepted, fewer than accepted_n; generation 3: exactly accepted_n
    for g, kept in ((1, accepted), (2, accepted[:9]), (3, accepted[:10])):
        ws.gen(g).mkdir(parents=True)
        write_jsonl(ws.gen(g) / "verified.jsonl", samples)
        write_jsonl(ws.gen(g) / "accepted.jsonl", kept)
        write_jsonl(ws.gen(g) / "eval_samples.jsonl", probe)
        runs.append(measure(samples, kept, [], None, 0, generation_seed(params, g), probe=probe, probe_n=12,
                            probe_draws=4, accepted_n=10,
                            well_formed=lambda r: dom.verify(r["response"], r["problem"], 200).well_formed))
    got = entropy_levels(ws, 1, *legal_for(tmp_path))
    assert got["3"]["samples_well_formed"]["available"] == 14  # repeats counted, malformed left out
    assert got["3"]["samples_well_formed"]["n"] == 12
    cases = (("3", "samples_well_formed"), ("4", "samples_well_formed"), ("3", "accepted_equal_n"),
             ("4", "probe_well_formed"), ("5", "probe_well_formed"))
    for lv, kind in cases:
        recorded = runs[0][lv][kind]
        assert got[lv][kind]["template_entropy"] == pytest.approx(recorded["template_entropy"]), (lv, kind)
        assert (got[lv][kind]["n"], got[lv][kind]["available"]) == (recorded["n"], recorded["available"])
    for lv, kind in (("3", "samples_well_formed"), ("3", "accepted_equal_n"), ("4", "probe_well_formed")):
        assert runs[0][lv][kind]["template_entropy_sd"] > 0  # more than the fixed size: the draws differ
    assert "probe_well_formed" not in got["3"] and got["3"]["accepted_equal_n"]["full_size"]
    assert set(got["5"]) == {"probe_well_formed"}  # a level only the probe has
    assert got["3"]["accepted_equal_n"]["available"] == 12  # one row per accepted answer, whatever its count
    rows = [{"generation": 1}, {"generation": 2}, {"generation": 3}]
    add_template_entropy(ws, rows)
    assert rows[0]["entropy_samples_wf"] == pytest.approx(
        (runs[0]["3"]["samples_well_formed"]["template_entropy"]
         + runs[0]["4"]["samples_well_formed"]["template_entropy"]) / 2)
    assert rows[0]["entropy_probe"] == pytest.approx(
        (runs[0]["4"]["probe_well_formed"]["template_entropy"]
         + runs[0]["5"]["probe_well_formed"]["template_entropy"]) / 2)
    assert rows[0]["entropy_accepted_equal_n"] == pytest.approx(
        runs[0]["3"]["accepted_equal_n"]["template_entropy"])
    # generation 2 lacks level 3 at full size: no value at equal size, rather than a smaller set's;
    # generation 3 has exactly the fixed size, which counts
    assert rows[1]["entropy_accepted_equal_n"] is None
    assert rows[2]["entropy_accepted_equal_n"] == pytest.approx(
        runs[2]["3"]["accepted_equal_n"]["template_entropy"])
    # the probe's draws are seeded by generation: the same answers give another mean
    assert rows[1]["entropy_probe"] == pytest.approx(
        (runs[1]["4"]["probe_well_formed"]["template_entropy"]
         + runs[1]["5"]["probe_well_formed"]["template_entropy"]) / 2)
    # a generation evaluated without keeping its samples has no probe
    (ws.gen(3) / "eval_samples.jsonl").unlink()
    assert all("probe_well_formed" not in v for v in entropy_levels(ws, 3, *legal_for(tmp_path)).values())


def test_a_finished_arm_asked_for_more_iterations_is_not_complete(tmp_path):
    from selfloop.ablate import complete

    assert not complete(tmp_path)
    write_json(tmp_path / "results.json", {"loop": [{}, {}], "stopped": ""})
    assert complete(tmp_path) and complete(tmp_path, 2) and complete(tmp_path, 1)
    assert not complete(tmp_path, 3)  # resumed to add the third
    write_json(tmp_path / "results.json", {"loop": [{}], "stopped": "monitor: audit_accepted"})
    assert complete(tmp_path, 10)  # it stopped early: more iterations would stop there again
