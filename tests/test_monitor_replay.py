"""Replaying the monitor over a recorded run (``selfloop monitor``): with the run's own
thresholds it decides what the loop recorded, with others it says where the actions differ,
and it refuses settings a replay cannot redo."""

import dataclasses

import pytest

from selfloop.cli import main
from selfloop.config import ConfigError, Params, to_dict
from selfloop.loop import step_monitor
from selfloop.monitor_replay import actions, first_difference, replay, replay_params, table
from selfloop.records import write_json, write_jsonl
from selfloop.workspace import Workspace

BASE = {"3": {"greedy_acc": 0.20, "pass_at_k": 0.40}, "4": {"greedy_acc": 0.05, "pass_at_k": 0.10}}
# (greedy, pass@k) per level and generation: headroom (pass@k / greedy, summed) 2.0 at the base;
# 1.64 at generation 1 (0.82x: below 0.85x, above 0.80x), 1.9 at 2, 1.5 at 3 (0.75x: below both)
EVALS = [{"3": (0.25, 0.40), "4": (0.025, 0.051)},
         {"3": (0.25, 0.47), "4": (0.05, 0.10)},
         {"3": (0.30, 0.45), "4": (0.06, 0.09)}]


def _recorded_run(root, act=True, evals=EVALS):
    """A run directory holding what the monitor reads, and the decisions the loop's own
    monitor step recorded over it (no sampling or training: the files are scripted)."""
    params = Params()
    monitor = dataclasses.replace(params.monitor, act=act, probe_floor=0.0)
    params = dataclasses.replace(params, monitor=monitor)
    ws = Workspace(root)
    write_json(root / "params.json", to_dict(params))
    write_json(ws.gen(0) / "eval.json", {"levels": BASE})
    # reference data of one shape: its own KL (the drift check's noise floor) is 0 at any size
    write_jsonl(ws.reference, [{"level": 3, "response": f"{i}+{i + 1}"} for i in range(40)])
    for g, levels in enumerate(evals, start=1):
        d = ws.gen(g)
        write_json(d / "eval.json", {"levels": {lv: {"greedy_acc": a, "pass_at_k": p}
                                                for lv, (a, p) in levels.items()}})
        write_json(d / "diversity.json", {"3": {"samples": {"n": 100, "vendi_ngram": 10.0},
                                                "accepted": {"n": 50, "template_entropy": 3.0,
                                                             "template_kl_vs_reference": 0.1}}})
        write_json(d / "plan.json", {"decisions": []})
        step_monitor(params, ws, g, None)
    return ws


def test_replay_with_the_runs_thresholds_decides_what_was_recorded(tmp_path):
    ws = _recorded_run(tmp_path / "run")
    rows = replay(ws, replay_params(ws, []))
    assert [r.generation for r in rows] == [1, 2, 3]
    assert all(r.recorded == r.replayed for r in rows)
    assert {d["signal"] for d in rows[0].recorded} == {"headroom"}  # 1.64 < 0.85 x 2.0
    assert rows[1].recorded == []
    assert first_difference(rows) is None
    assert "acts the same in every generation" in table(rows, True, [])


def test_replay_at_another_threshold_shows_where_the_actions_differ(tmp_path):
    ws = _recorded_run(tmp_path / "run")
    rows = replay(ws, replay_params(ws, ["monitor.headroom_floor=0.8"]))
    assert [r.same_actions for r in rows] == [False, True, True]  # 1.64 >= 1.6; 1.5 < 1.6 still
    assert rows[0].replayed == [] and rows[2].replayed[0]["threshold"] == pytest.approx(1.6)
    assert first_difference(rows) == 1
    text = table(rows, True, ["monitor.headroom_floor=0.8"])
    assert "| 1 | raise_temperature (headroom), raise_reference_fraction (headroom) | - | **no** |" in text
    assert "first differ at generation 1" in text and "from generation 2 on" in text
    # a run that only recorded its decisions: every replayed row is exact
    quiet = _recorded_run(tmp_path / "quiet", act=False)
    params = replay_params(quiet, ["monitor.headroom_floor=0.8"])
    assert params.monitor.act is False
    quiet_rows = replay(quiet, params)
    assert [r.same_actions for r in quiet_rows] == [False, True, True]
    text = table(quiet_rows, params.monitor.act, ["monitor.headroom_floor=0.8"])
    assert "did not act on its monitor" in text
    assert "every row is what this monitor would have decided" in text


def test_replay_refuses_what_it_cannot_redo(tmp_path, capsys):
    ws = _recorded_run(tmp_path / "run")
    with pytest.raises(ConfigError, match="only the monitor's thresholds"):
        replay_params(ws, ["train.steps=3"])
    # act and the steps a plan applies changed what the run did: not replayable
    for setting in ("monitor.act=false", "monitor.temperature_step=0.5", " monitor.reference_max=1"):
        with pytest.raises(ConfigError, match="only the monitor's thresholds"):
            replay_params(ws, [setting])
    assert replay_params(ws, [" monitor.kl_wait=false"]).monitor.kl_wait is False
    with pytest.raises(ConfigError, match=r"no params\.json"):
        replay_params(Workspace(tmp_path / "nothing"), [])
    assert main(["monitor", str(ws.root), "--set", "monitor.headroom_floor=0.8"]) == 0
    out = capsys.readouterr().out
    assert "first differ at generation 1" in out and "probe signal is off" not in out
    # the run has no base probe samples: asking for the probe signal says it cannot be replayed
    assert main(["monitor", str(ws.root), "--set", "monitor.probe_floor=0.9"]) == 0
    assert "probe signal is off in this replay" in capsys.readouterr().out
    assert main(["monitor", str(ws.root), "--set", "train.steps=3"]) == 2
    assert "only the monitor's thresholds" in capsys.readouterr().err
    assert main(["monitor", str(ws.root), "--set", "monitor.nope=1"]) == 2
    assert "monitor.nope=1" in capsys.readouterr().err
    # a generation missing its decisions while later ones have them: refused, not cut short
    (ws.gen(2) / "monitor.json").unlink()
    with pytest.raises(ConfigError, match=r"generation\(s\) \[2\] have no monitor\.json"):
        replay(ws, replay_params(ws, []))
    # the generation in progress (no decisions yet) ends the replay
    more = _recorded_run(tmp_path / "more")
    more.gen(4).mkdir()
    assert [r.generation for r in replay(more, replay_params(more, []))] == [1, 2, 3]


def test_replay_counts_rollbacks_from_its_own_decisions(tmp_path):
    # mean accuracy 0.30, then 0.25 (0.05 below the best), then 0.20 (0.10 below); pass@k
    # twice greedy throughout, so only the accuracy signal speaks
    evals = [{"3": (0.30, 0.60)}, {"3": (0.25, 0.50)}, {"3": (0.20, 0.40)}]
    ws = _recorded_run(tmp_path / "run", evals=evals)
    recorded = [actions(r.recorded) for r in replay(ws, replay_params(ws, []))]
    assert recorded == [set(), {"rollback"}, {"stop"}]  # the second drop in a row stops
    rows = replay(ws, replay_params(ws, ["monitor.accuracy_drop=0.06"]))
    # no rollback at generation 2 in the replay, so generation 3's drop is a first: a rollback
    assert [actions(r.replayed) for r in rows] == [set(), set(), {"rollback"}]
    assert first_difference(rows) == 2


def test_the_drift_floor_comes_from_the_runs_reference_data(tmp_path):
    """What the monitor step records as ``kl_noise``: per level with accepted answers, the
    reference data's own KL at that level's size, seeded by the run's seed, level and size;
    nothing when ``monitor.kl_noise_quantile`` is 0."""
    from selfloop.diversity import reference_kl_noise as noise
    from selfloop.loop import reference_kl_noise
    from selfloop.records import read_json

    ws = _recorded_run(tmp_path / "run")
    assert read_json(ws.gen(3) / "monitor.json")["kl_noise"] == {"3": 0.0}
    texts = ["1+2"] * 20 + ["(1+2)*3"] * 15 + ["1*2-3"] * 5
    write_jsonl(ws.reference, [{"level": 3, "response": t} for t in texts]
                + [{"level": 4, "response": "1+2+3+4"}])
    params = replay_params(ws, [])
    metrics = {"diversity": {"3": {"accepted": {"n": 50}}, "4": {"accepted": {"n": 0}}}}
    got = reference_kl_noise(params, ws, metrics)
    assert got == {"3": round(noise(texts, 50, 0.95, "0-3-50"), 6)} and got["3"] > 0
    off = dataclasses.replace(params, monitor=dataclasses.replace(params.monitor, kl_noise_quantile=0.0))
    assert reference_kl_noise(off, ws, metrics) == {}
