from selfloop.config import load_params
from selfloop.steps.plan import make_plan


def ev(**levels):
    return {"levels": {k[1:]: {"greedy_acc": g, "pass_at_k": p, "k": 8} for k, (g, p) in levels.items()}}


P = load_params(None, ["plan.problems=1000", "plan.explore_share=0.25", "plan.mastered_share=0.1",
                        "plan.band_low=0.02", "plan.band_high=0.9"])


def test_frontier_gets_the_bulk_and_next_level_is_explored():
    plan = make_plan(P, 3, ev(L3=(0.95, 1.0), L4=(0.2, 0.5), L5=(0.0, 0.0)))
    counts = {int(k): v for k, v in plan["problems_per_level"].items()}
    assert counts == {3: 100, 4: 650, 5: 250}

    assert plan["level_status"]["5"].startswith("beyond") and "(explore)" in plan["level_status"]["5"]
    assert plan["generation"] == 3 and plan["decisions"] == []


def test_nothing_at_the_frontier_explores_the_first_unsolved_level():
    plan = make_plan(P, 1, ev(L3=(0.95, 1.0), L4=(0.0, 0.0), L5=(0.0, 0.0)))
    assert plan["problems_per_level"] == {"3": 100, "4": 900}


def test_all_mastered_spreads_evenly_and_plan_is_deterministic():
    e = ev(L3=(0.99, 1.0), L4=(0.95, 1.0), L5=(0.91, 1.0))
    plan = make_plan(P, 2, e)
    assert sum(plan["problems_per_level"].values()) == 1000
    assert plan == make_plan(P, 2, e)
    assert plan["seed"] != make_plan(P, 3, e)["seed"]


def test_harder_frontier_levels_get_more_problems():
    plan = make_plan(P, 1, ev(L3=(0.3, 0.6), L4=(0.05, 0.2), L5=(0.0, 0.0)))
    counts = {int(k): v for k, v in plan["problems_per_level"].items()}
    # 750 frontier problems split 0.6**-0.5 : 0.2**-0.5 = 1 : 1.73; 250 explore level 5
    assert counts == {3: 275, 4: 475, 5: 250}


def test_plateau_stops_the_loop_only_after_patience_generations():
    from selfloop.loop import next_action

    def h(*accs):
        return [{"3": {"greedy_acc": a}, "4": {"greedy_acc": a}} for a in accs]

    off = load_params(None, [])
    assert next_action(off, h(0.1, 0.1, 0.1, 0.1)) == ("continue", "")  # patience 0: never stops
    p = load_params(None, ["run.patience=2"])
    assert next_action(p, h(0.1, 0.2)) == ("continue", "")
    assert next_action(p, h(0.1, 0.2, 0.25, 0.2))[0] == "continue"  # gained within the window
    action, reason = next_action(p, h(0.1, 0.3, 0.2, 0.3))
    assert action == "stop" and "no gain over 0.300 in the last 2 generations" in reason
