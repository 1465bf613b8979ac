"""The collapse monitor on scripted metric histories."""

import pytest

from selfloop.monitor import Thresholds, decide, signals


def gen(g, vendi=10.0, entropy=3.0, kl=0.2, acc=0.1, monitor=()):
    div = {"samples": {"n": 100, "vendi_ngram": vendi},
           "accepted": {"n": 10, "template_entropy": entropy, "template_kl_vs_reference": kl}}
    return {"generation": g, "diversity": {"3": div, "4": div},
            "eval": {"3": {"greedy_acc": acc}, "4": {"greedy_acc": acc}}, "monitor": list(monitor)}


def actions(history, base=0.05, th=None, base_probe=0.0):
    return [d["action"] for d in decide(history, base, th or Thresholds(), base_probe=base_probe)]


def test_a_healthy_loop_is_never_flagged():
    history = [gen(1)]
    for g in range(2, 11):
        history.append(gen(g, vendi=10 + g * 0.1, entropy=3.0, kl=0.2, acc=0.1 + 0.01 * g))
        assert actions(history) == []


def test_collapse_signals_each_map_to_their_action():
    assert actions([gen(1), gen(2, vendi=5.0)]) == ["raise_temperature"]
    assert actions([gen(1), gen(2, entropy=1.0)]) == ["cap_harder"]
    assert actions([gen(1), gen(2, kl=0.9)]) == ["raise_reference_fraction"]
    decisions = decide([gen(1), gen(2, vendi=5.0, kl=0.9)], 0.05)
    assert {d["signal"] for d in decisions} == {"vendi_samples", "kl_accepted"}
    assert all(d["reason"] and d["value"] is not None for d in decisions)


def test_accuracy_drop_rolls_back_then_stops():
    history = [gen(1, acc=0.10), gen(2, acc=0.12), gen(3, acc=0.05)]
    assert actions(history) == ["rollback"]
    history[-1]["monitor"] = decide(history, 0.05)
    history.append(gen(4, acc=0.06))
    assert actions(history) == ["stop"]
    # small dips are noise, not collapse
    assert actions([gen(1, acc=0.10), gen(2, acc=0.09)]) == []


def test_kl_floor_and_thresholds_are_configurable():
    tiny = [gen(1, kl=0.001), gen(2, kl=0.004)]
    assert actions(tiny) == []  # 4x a tiny KL is still below kl_min
    assert [d["action"] for d in decide(tiny, 0.0, Thresholds(kl_min=0.0))] == ["raise_reference_fraction"]
    assert signals(gen(1))["accuracy"] == 0.1


def test_drift_within_the_reference_datas_own_noise_is_not_flagged():
    """The drift limit is also the KL that as many answers drawn from the reference data would
    show (``kl_noise``, per level): a KL 4.5x generation 1's is drift when that noise is 0.1
    bits, and not when it is 0.95 (few accepted answers at a level: a noisy KL)."""
    history = [gen(1, kl=0.2), gen(2, kl=0.9)]
    quiet = {"3": 0.1, "4": 0.1}
    flagged = decide(history, 0.05, kl_noise=quiet)
    assert [(d["action"], d["threshold"]) for d in flagged] == [("raise_reference_fraction", 0.6)]
    assert decide(history, 0.05, kl_noise={"3": 0.95, "4": 0.95}) == []
    # the limit is the mean of the levels' noise, the signal being the mean of their KLs
    limit = decide(history, 0.05, kl_noise={"3": 0.95, "4": 0.75})
    assert [d["threshold"] for d in limit] == [pytest.approx(0.85)]
    # with per_level, each level's own noise is its limit: level 3's KL of 0.9 is within its 0.95
    per = decide(history, 0.05, Thresholds(per_level=True), kl_noise={"3": 0.95, "4": 0.1})
    assert {d["signal"]: d["threshold"] for d in per} == {"kl_accepted": 0.6, "kl_accepted@L4": 0.6}


def test_decisions_change_the_next_plan_and_accumulate():
    from selfloop.config import load_params
    from selfloop.steps.plan import apply_decisions

    params = load_params(None, ["plan.top_p=0.9"])  # cap 2, reference fraction 0.2
    base = {"temperature": 1.0, "top_p": 0.9, "policy": {}, "decisions": []}
    flags = [{"action": a, "reason": "r"} for a in
             ("raise_temperature", "cap_harder", "raise_reference_fraction", "rollback")]
    acc = {0: 0.05, 1: 0.12, 2: 0.10, 3: 0.04}
    p1 = apply_decisions(base, None, flags, params, acc)
    assert (p1["top_p"], p1["temperature"]) == (0.95, 1.0)  # top-p first while below 1
    assert p1["policy"] == {"top_p": 0.95, "cap_per_problem": 1, "reference_fraction": 0.3,
                            "source_generation": 1}  # the champion: best held-out accuracy
    assert [d["action"] for d in p1["decisions"]] == [f["action"] for f in flags]
    # the next plan starts from this policy (the rollback applied once); top-p reaches 1,
    # then the temperature rises
    p2 = apply_decisions(base, p1, flags[:1], params, acc)
    assert p2["policy"] == {"top_p": 1.0, "cap_per_problem": 1, "reference_fraction": 0.3}
    p3 = apply_decisions(base, p2, flags[:1], params, acc)
    assert p3["temperature"] == 1.2 and p3["policy"]["temperature"] == 1.2
    # without decisions the policy only carries over; recorded only when monitor.act is off
    assert apply_decisions(base, None, [], params, acc)["policy"] == {}
    off = load_params(None, ["monitor.act=false"])
    assert apply_decisions(base, None, flags, off, acc)["decisions"] == []
    # two signals asking for the same action: applied once, both recorded
    twice = apply_decisions({**base, "top_p": 1.0}, None, flags[:1] * 2, load_params(None, []), acc)
    assert twice["temperature"] == 1.2 and len(twice["decisions"]) == 2


def test_a_recorded_stop_ends_the_loop_only_when_the_monitor_acts():
    from selfloop.config import load_params
    from selfloop.loop import next_action

    stop = [{"action": "stop", "reason": "accuracy fell twice"}]
    history = [{"3": {"greedy_acc": 0.1}}, {"3": {"greedy_acc": 0.05}}]
    assert next_action(load_params(None, ["monitor.act=true"]), history, stop)[0] == "stop"
    assert next_action(load_params(None, ["monitor.act=false"]), history, stop) == ("continue", "")


def _with_passk(m, greedy, passk):
    return {**m, "eval": {"3": {"greedy_acc": greedy, "pass_at_k": passk},
                          "4": {"greedy_acc": greedy / 2, "pass_at_k": passk / 2}}}


def test_template_drift_raises_the_reference_every_other_generation_while_it_persists():
    """Generation g's accepted answers come from generation g-1's model, trained before a raise
    decided after g-1: the generation right after a raise waits, the one after acts again."""
    from selfloop.ablate_report import first_flag
    from selfloop.config import load_params
    from selfloop.steps.plan import apply_decisions

    def run(th=None, act=True):
        history, got = [gen(1, kl=0.2)], []
        for g in range(2, 8):
            h = gen(g, kl=0.2 if g < 3 else 0.9)  # drifts from generation 3 on
            # what this generation's plan applied: the last decisions but waits, when acting
            h["applied"] = [d for d in history[-1]["monitor"] if d["action"] != "wait"] if act else []
            history.append(h)
            h["monitor"] = decide(history, 0.05, th or Thresholds())
            got.append([d["action"] for d in h["monitor"]])
        return history, got

    history, got = run()
    assert got == [[], ["raise_reference_fraction"], ["wait"], ["raise_reference_fraction"], ["wait"],
                   ["raise_reference_fraction"]]
    wait = history[3]["monitor"][0]
    assert wait["signal"] == "kl_accepted" and "generation 5's" in wait["reason"]
    assert wait["value"] == pytest.approx(0.9) and wait["threshold"] == pytest.approx(0.6)
    # nothing applied (monitor.act off), or kl_wait off: a raise every generation it persists
    assert run(act=False)[1] == run(Thresholds(kl_wait=False))[1] == [[]] + [["raise_reference_fraction"]] * 5
    # a raise for another signal counts too: the mix changed all the same
    probe_raise = {"action": "raise_reference_fraction", "signal": "vendi_probe", "reason": "r"}
    assert actions([gen(1), {**gen(2, kl=0.9), "applied": [probe_raise]}]) == ["wait"]
    # a wait is no flag, and the plan applies nothing for it
    assert first_flag([{"generation": 0}, {"generation": 1, "monitor": [wait]}]) is None
    params = load_params(None, [])
    plan = {"temperature": 1.0, "top_p": 1.0, "policy": {"reference_fraction": 0.3}, "decisions": []}
    nxt = apply_decisions(plan, plan, [wait], params, {0: 0.05})
    assert nxt["policy"] == {"reference_fraction": 0.3} and nxt["decisions"] == []


def test_headroom_narrowing_onto_greedy_raises_temperature_and_reference():
    """pass@k / greedy against the base model's: 1.9 -> 1.8 is fine, 1.9 -> 1.4 is a model
    whose samples collapse onto its greedy answer."""
    base = 1.9
    healthy = [_with_passk(gen(1), 0.10, 0.19), _with_passk(gen(2), 0.12, 0.216)]
    assert decide(healthy, 0.05, base_headroom=base) == []
    narrow = [_with_passk(gen(1), 0.10, 0.19), _with_passk(gen(2), 0.12, 0.168)]
    d = decide(narrow, 0.05, base_headroom=base)
    assert [x["action"] for x in d] == ["raise_temperature", "raise_reference_fraction"]
    assert {x["signal"] for x in d} == {"headroom"} and d[0]["value"] == pytest.approx(1.4)
    assert d[0]["threshold"] == pytest.approx(0.85 * base)
    assert decide(narrow, 0.05, Thresholds(headroom_floor=0.7), base_headroom=base) == []


def test_the_audit_stops_a_loop_whose_verifier_lets_errors_through():
    def audited(g, share, n=10):
        h = gen(g)
        h["diversity"] = {lv: {**d, "accepted": {**d["accepted"], "n": n, "audit_pass_share": share}}
                          for lv, d in h["diversity"].items()}
        return h

    assert signals(gen(1))["audit_accepted"] == 1.0  # nothing audited: nothing to flag
    assert actions([audited(1, 1.0), audited(2, 1.0)]) == []
    decisions = decide([audited(1, 0.12)], 0.05)
    assert [(d["action"], d["signal"]) for d in decisions] == [("stop", "audit_accepted")]
    assert "12.0%" in decisions[0]["reason"]
    # pooled over answers, not levels: 90 answers at 1.0 and 10 at 0.5 -> 0.95, not 0.75
    h = audited(1, 1.0, n=90)
    h["diversity"]["4"]["accepted"].update(n=10, audit_pass_share=0.5)
    assert signals(h)["audit_accepted"] == pytest.approx(0.95)
    assert actions([h], 0.05) == []
    assert [d["action"] for d in decide([audited(1, 0.9)], 0.05, Thresholds(audit_floor=0.8))] == []


def test_probe_narrowing_below_the_base_models_raises_temperature_and_reference():
    """The well-formed held-out samples' Vendi against the base model's: 34 -> 32.5 (0.96x)
    is fine, 34 -> 30 (0.88x) is a model whose own answers narrow. Without the base model's
    value, or with no well-formed samples to measure, the signal is off."""
    def probed(g, v):
        h = gen(g)
        for d in h["diversity"].values():
            d["probe_well_formed"] = {"n": 256, "vendi_ngram": v}
        return h

    assert signals(probed(2, 2.0))["vendi_probe"] == 2.0 and signals(gen(1))["vendi_probe"] == 0.0
    assert actions([probed(1, 33.0), probed(2, 32.5)], base_probe=34.0) == []
    d = decide([probed(1, 33.0), probed(2, 30.0)], 0.05, base_probe=34.0)
    assert [(x["action"], x["signal"]) for x in d] == [("raise_temperature", "vendi_probe"),
                                                       ("raise_reference_fraction", "vendi_probe")]
    assert d[0]["value"] == pytest.approx(30.0) and d[0]["threshold"] == pytest.approx(0.92 * 34.0)
    assert "below 92% of the base model's" in d[0]["reason"]
    assert actions([probed(1, 33.0), probed(2, 30.0)]) == []  # base model's probe unknown
    assert actions([probed(1, 33.0), probed(2, 0.0)], base_probe=34.0) == []  # nothing measured
    assert actions([probed(1, 33.0), probed(2, 30.0)], base_probe=34.0, th=Thresholds(probe_floor=0)) == []


def test_the_base_models_probe_is_measured_as_a_generations_and_reread_when_replaced(tmp_path):
    from selfloop.ablate_report import probe_vendi
    from selfloop.config import load_params, to_dict
    from selfloop.loop import base_probe_vendi
    from selfloop.records import write_json, write_jsonl
    from selfloop.workspace import Workspace

    params = load_params(None, ["measure.probe_n=20", "measure.probe_draws=3", f"run.workdir={tmp_path}"])
    ws = Workspace(tmp_path)
    write_json(tmp_path / "params.json", to_dict(params))
    assert base_probe_vendi(params, ws) == 0.0  # no base evaluation yet: the signal is off
    ws.gen(0).mkdir(parents=True)
    wide = [{"level": 3, "response": f"{i}+{j}*3", "well_formed": True}
            for i in range(1, 10) for j in range(1, 6)]
    write_jsonl(ws.gen(0) / "eval_samples.jsonl", wide)
    first = base_probe_vendi(params, ws)
    assert first > 5 and first == pytest.approx(probe_vendi(ws, 0))  # as the ablation report computes it
    write_jsonl(ws.gen(0) / "eval_samples.jsonl", [wide[0]] * 40)  # a base run replaced in place
    assert base_probe_vendi(params, ws) == pytest.approx(1.0)


def test_equal_n_series_compares_the_levels_generation_1_had_at_full_size():
    from selfloop.monitor import equal_n_series

    def div(**levels):
        return {lv[1:]: {"accepted_equal_n": {"vendi_ngram": v, "full_size": full}}
                for lv, (v, full) in levels.items()}

    series = equal_n_series([div(L3=(10.0, True), L4=(20.0, True), L5=(3.0, False)),
                             div(L3=(11.0, True), L4=(19.0, True), L5=(30.0, True)),  # L5 joins: left out
                             div(L3=(12.0, True), L4=(25.0, False)),  # L4 short: no comparable value
                             None])  # not measured
    assert series == [15.0, 15.0, None, None]
    assert equal_n_series([div(L3=(4.0, False)), div(L3=(9.0, True))]) == [None, None]
    assert equal_n_series([]) == []


def split(g, level3: dict, level5: dict):
    """A generation whose levels 3 and 5 have their own numbers (``gen``'s keywords)."""
    out = gen(g, **level3)
    out["diversity"] = {"3": gen(g, **level3)["diversity"]["3"], "5": gen(g, **level5)["diversity"]["3"]}
    return out


def test_per_level_catches_a_narrowing_the_mean_dilutes():
    # level 5's sample Vendi halves while level 3's rises: the mean stays above 70% of generation 1
    history = [split(1, {}, {}), split(2, {"vendi": 11.0}, {"vendi": 5.0})]
    assert actions(history) == []
    got = decide(history, 0.05, Thresholds(per_level=True))
    assert [(d["action"], d["signal"]) for d in got] == [("raise_temperature", "vendi_samples@L5")]
    assert "at level 5" in got[0]["reason"] and got[0]["value"] == 5.0 and got[0]["threshold"] == 7.0
    # each first-generation-calibrated signal has its per-level twin; a healthy level flags nothing
    narrowed = [split(1, {}, {}), split(2, {}, {"entropy": 1.0, "kl": 0.9})]
    signals_seen = {d["signal"] for d in decide(narrowed, 0.05, Thresholds(per_level=True))}
    assert {"entropy_accepted@L5", "kl_accepted@L5"} <= signals_seen
    assert not any(s.endswith("@L3") for s in signals_seen)


def test_per_level_skips_drift_at_a_level_without_generation_1_answers():
    first = split(1, {}, {})
    first["diversity"]["5"]["accepted"] = {"n": 0}
    history = [first, split(2, {}, {"kl": 0.9})]
    assert not any(d["signal"] == "kl_accepted@L5" for d in decide(history, 0.05, Thresholds(per_level=True)))
