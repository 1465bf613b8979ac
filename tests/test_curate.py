import math
from collections import Counter

import pytest

from selfloop.config import CurateConfig
from selfloop.steps.curate import (
    PASS_RATE_PRIOR,
    build_mix,
    capped_steps,
    curate,
    draw_weights,
    mix_makeup,
    next_pool,
    origin_shares,
    weighted_pass,
)


def rec(i, problem="p1", ok=True, count=1, gen=1, level=3, response=None):
    return {
        "id": f"id{i}", "problem_id": problem, "generation": gen, "count": count, "level": level,
        "prompt": "x", "response": str(i) if response is None else response,
        "verification": [{"verifier": "v", "score": float(ok), "verdict": "pass" if ok else "fail",
                          "reason": "correct" if ok else "wrong_value"}],
    }


def test_only_verified_and_never_heldout():
    verified = [rec(1), rec(2, ok=False), rec(3, problem="held"), {**rec(4), "verification": []}]
    accepted, decisions, counts = curate(verified, [], {"held"}, CurateConfig(cap_per_problem=10))
    assert [r["id"] for r in accepted] == ["id1"]
    assert counts == {"accepted": 1, "rejected_heldout": 1, "rejected_unverified": 2}
    assert all(r["curation"]["decision"] == "accepted" for r in accepted)
    assert len(decisions) == len(verified)


def test_cap_keeps_most_sampled_and_dedupes():
    verified = [rec(1, count=1), rec(2, count=5), rec(3, count=3), rec(2, count=5), rec(9, problem="p2")]
    accepted, _, counts = curate(verified, [], set(), CurateConfig(cap_per_problem=2))
    assert [r["id"] for r in accepted] == ["id2", "id3", "id9"]
    assert counts["duplicate"] == 1 and counts["over_cap"] == 1
    one, _, _ = curate(verified, [], set(), CurateConfig(selection="one", cap_per_problem=9))
    assert [r["id"] for r in one] == ["id2", "id9"]


def test_duplicates_of_earlier_generations_are_dropped_and_pool_accumulates():
    pool = [rec(1, gen=1)]
    accepted, _, counts = curate([rec(1, gen=2), rec(2, gen=2)], pool, set(), CurateConfig())
    assert [r["id"] for r in accepted] == ["id2"] and counts["duplicate"] == 1
    assert [r["id"] for r in next_pool(pool, accepted, accumulate=True)] == ["id1", "id2"]
    assert [r["id"] for r in next_pool(pool, accepted, accumulate=False)] == ["id2"]


@pytest.mark.parametrize("pool_size", [1, 7, 5000])
def test_reference_fraction_is_fixed_per_batch_whatever_the_pool(pool_size):
    reference = [{"id": f"r{i}"} for i in range(50)]
    pool = [{"id": f"s{i}", "generation": 1 + i % 3} for i in range(pool_size)]
    mix = build_mix(reference, pool, steps=20, batch_size=10, reference_fraction=0.3, seed=0)
    assert len(mix) == 20
    for m in mix:
        assert len(m["reference"]) == 3 and len(m["synthetic"]) == 7
        assert set(m["reference"]) <= {r["id"] for r in reference}
    makeup = mix_makeup(mix, pool)
    assert makeup["reference_share"] == pytest.approx(0.3)
    # streamed from the manifest, as history.json reads it
    assert origin_shares(iter(mix), set())["reference"] == pytest.approx(0.3)
    assert sum(makeup["synthetic_by_generation"].values()) == pytest.approx(0.7)
    assert origin_shares([], set()) is None


def test_origin_shares_split_the_synthetic_draws_by_generation():
    """The generation's own answers against earlier ones, streamed from the manifest: they
    agree with mix_makeup's split by generation, on a pool where generation 3 is the newest."""
    reference = [{"id": f"r{i}"} for i in range(50)]
    pool = [{"id": f"s{i}", "generation": 1 + i % 3} for i in range(30)]
    mix = build_mix(reference, pool, steps=20, batch_size=10, reference_fraction=0.3, seed=0)
    newest = {r["id"] for r in pool if r["generation"] == 3}
    shares = origin_shares(iter(mix), newest)
    by_generation = mix_makeup(mix, pool)["synthetic_by_generation"]
    assert shares["reference"] == pytest.approx(0.3)
    assert shares["this_generation"] == pytest.approx(by_generation["3"])
    assert shares["earlier"] == pytest.approx(by_generation["1"] + by_generation["2"])
    assert shares["this_generation"] > 0 and shares["earlier"] > 0
    assert origin_shares([], newest) is None


def test_mix_cycles_through_all_examples_and_is_seeded():
    reference = [{"id": f"r{i}"} for i in range(8)]
    pool = [{"id": f"s{i}", "generation": 1} for i in range(12)]
    mix = build_mix(reference, pool, steps=6, batch_size=6, reference_fraction=0.5, seed=1)
    syn = Counter(i for m in mix for i in m["synthetic"])
    assert set(syn) == {p["id"] for p in pool}  # 18 draws cover all 12 before repeating
    assert mix == build_mix(reference, pool, steps=6, batch_size=6, reference_fraction=0.5, seed=1)


def test_empty_pool_trains_on_reference_only():
    mix = build_mix([{"id": "r"}], [], steps=2, batch_size=4, reference_fraction=0.3, seed=0)
    assert all(len(m["reference"]) == 4 and not m["synthetic"] for m in mix)


def _leveled(reference_levels, pool_levels):
    reference = [{"id": f"r{lv}-{i}", "level": lv} for lv, n in reference_levels.items() for i in range(n)]
    pool = [{"id": f"s{lv}-{i}", "level": lv, "generation": 1}
            for lv, n in pool_levels.items() for i in range(n)]
    return reference, pool


def test_reference_by_level_holds_the_fraction_within_each_level():
    # 90% of the reference data is level 3; the pool is half level 3, half level 5.
    reference, pool = _leveled({3: 90, 5: 10}, {3: 50, 5: 50})
    kw = dict(steps=400, batch_size=10, reference_fraction=0.2, seed=3)
    pooled = mix_makeup(build_mix(reference, pool, **kw), pool, reference)["reference_share_by_level"]
    mix = build_mix(reference, pool, **kw, reference_by_level=True)
    assert all(len(m["reference"]) == 2 and len(m["synthetic"]) == 8 for m in mix)
    makeup = mix_makeup(mix, pool, reference)
    assert makeup["reference_share"] == pytest.approx(0.2)
    # pooled: level 3 gets about 0.9 * 2 of the 6 level-3 examples per batch, level 5 about 0.2 of 4.2
    assert pooled["3"] > 0.27 and pooled["5"] < 0.06
    assert makeup["reference_share_by_level"] == {"3": pytest.approx(0.2), "5": pytest.approx(0.2)}
    # every level-5 reference example is drawn, each level in its own seeded cycle
    assert {i for m in mix for i in m["reference"] if i.startswith("r5")} == {f"r5-{i}" for i in range(10)}
    assert mix == build_mix(reference, pool, **kw, reference_by_level=True)
    assert mix != build_mix(reference, pool, **{**kw, "seed": 4}, reference_by_level=True)


def test_reference_by_level_skips_levels_without_reference_data():
    # level 6 has no reference examples: its share goes to the levels that have some
    reference, pool = _leveled({3: 20, 5: 20}, {3: 30, 5: 10, 6: 60})
    mix = build_mix(reference, pool, steps=400, batch_size=10, reference_fraction=0.2, seed=0,
                    reference_by_level=True)
    ref = Counter(i.split("-")[0] for m in mix for i in m["reference"])
    assert ref == {"r3": 600, "r5": 200}  # 30:10 exactly, whole passes of 40 levels
    # no pool level with reference data, or no pool at all: drawn from all reference alike
    only6 = dict(steps=50, batch_size=10, reference_fraction=0.2, seed=0)
    assert build_mix(reference, pool[-60:], **only6, reference_by_level=True) == build_mix(
        reference, pool[-60:], **only6)
    empty = build_mix(reference, [], steps=5, batch_size=4, reference_fraction=0.2, seed=0,
                      reference_by_level=True)
    assert empty == build_mix(reference, [], steps=5, batch_size=4, reference_fraction=0.2, seed=0)


def test_training_guard_refuses_heldout_problems():
    from selfloop.steps.curate import HeldoutLeak, assert_no_heldout

    assert_no_heldout([rec(1), rec(2, problem="p2")], {"p9"})
    with pytest.raises(HeldoutLeak, match=r"1 training record\(s\) share a held-out problem, e.g. \['id2'\]"):
        assert_no_heldout([rec(1), rec(2, problem="held")], {"held"})


def test_draw_weights_flatten_shapes_within_a_level_and_keep_level_shares():
    # level 4: nine answers of one shape, one of another; level 3: two of one shape
    pool = ([{"id": f"a{i}", "level": 4, "response": f"{i}+1+2+3"} for i in range(9)]
            + [{"id": "b", "level": 4, "response": "(1+2)*3-4"}]
            + [{"id": f"c{i}", "level": 3, "response": f"{i}*2+3"} for i in range(2)])
    w = draw_weights(pool, 1.0)
    # balance 1: each shape of a level gets the same total weight, and level 4 keeps 10 of 12
    assert sum(w[:9]) == pytest.approx(w[9])
    assert sum(w[:10]) == pytest.approx(10) and sum(w[10:]) == pytest.approx(2)
    half = draw_weights(pool, 0.5)
    assert w[9] > half[9] > 1.0  # 0.5: between uniform (1 each) and fully balanced
    assert draw_weights(pool, 0.0) == pytest.approx([1.0] * 12)


def test_balanced_mix_draws_rare_shapes_more_often_and_is_seeded():
    reference = [{"id": f"r{i}"} for i in range(8)]
    pool = ([{"id": f"a{i}", "level": 4, "response": f"{i}+1+2+3", "generation": 1} for i in range(9)]
            + [{"id": "b", "level": 4, "response": "(1+2)*3-4", "generation": 1}])
    kw = {"steps": 200, "batch_size": 10, "reference_fraction": 0.2, "seed": 3}
    plain = Counter(i for m in build_mix(reference, pool, **kw) for i in m["synthetic"])
    mix = build_mix(reference, pool, **kw, template_balance=1.0)
    balanced = Counter(i for m in mix for i in m["synthetic"])
    assert all(len(m["reference"]) == 2 and len(m["synthetic"]) == 8 for m in mix)
    assert plain["b"] == 160  # uniform cycling: 1,600 draws over 10 examples
    # balanced: half of the draws; every pass over the pool holds b 5 times (weight 5 of 10)
    assert balanced["b"] == 800
    # the other 800 over the nine: each is in 5 of 9 passes on average, which ones is random
    assert sum(balanced[f"a{i}"] for i in range(9)) == 800
    assert all(60 < balanced[f"a{i}"] < 120 for i in range(9))
    assert mix == build_mix(reference, pool, **kw, template_balance=1.0)


def test_weighted_pass_repeats_each_id_floor_or_ceil_of_its_weight():
    ids = [f"x{i}" for i in range(6)]
    assert weighted_pass(ids, [1.0] * 6, 0.37) == ids  # uniform: the plain cycle's pass
    weights = [2.5, 0.25, 0.25, 1.0, 0.4, 1.6]
    for offset in (0.0, 0.3, 0.99):
        got = Counter(weighted_pass(ids, weights, offset))
        assert sum(got.values()) == 6
        assert all(math.floor(w) <= got[i] <= math.ceil(w) for i, w in zip(ids, weights, strict=True))
    assert weighted_pass(ids, [0.0] * 6, 0.5) == []


def test_curation_records_how_often_each_problem_was_solved():
    verified = [
        rec(1, count=3), rec(2), rec(3, ok=False, count=4),  # p1: 3 + 1 of 8 samples pass
        rec(4, problem="p2"), rec(5, problem="p2", ok=False, count=7),  # p2: 1 of 8
    ]
    accepted, _, _ = curate(verified, [], set(), CurateConfig(cap_per_problem=2))
    assert {r["id"]: r["curation"]["solve_rate"] for r in accepted} == {"id1": 0.5, "id2": 0.5, "id4": 0.125}


def test_difficulty_weights_favour_rarely_solved_problems_and_keep_level_shares():
    def row(i, level, rate):
        return {"id": f"x{i}", "level": level, "response": f"{i}+1", "curation": {"solve_rate": rate}}

    pool = [row(0, 4, 1.0), row(1, 4, 0.125), row(2, 3, 0.5), row(3, 3, 0.5),
            {**row(4, 3, 0), "curation": {}}]
    w = draw_weights(pool, 0.0, difficulty=1.0)
    assert w[1] == pytest.approx(8 * w[0]) and sum(w[:2]) == pytest.approx(2)
    # level 3: the record without a solve rate counts as always solved (half the weight of 0.5)
    assert w[2] == pytest.approx(w[3]) == pytest.approx(2 * w[4]) and sum(w[2:]) == pytest.approx(3)
    assert draw_weights(pool, 0.0, difficulty=0.0) == pytest.approx([1.0] * 5)
    # both at once multiply: two answers of one shape (balance 1: 1/2 each) solved at 1 and
    # 1/2, and one of another shape (balance 1: 1) solved at 1/4 -> raw 1/2, 1, 4, level sum 3
    mixed = [{**row(5, 4, 1.0), "response": "1+2"}, {**row(6, 4, 0.5), "response": "3+4"},
             {**row(7, 4, 0.25), "response": "5*6"}]
    assert draw_weights(mixed, 1.0, difficulty=1.0) == pytest.approx([x * 3 / 5.5 for x in (0.5, 1, 4)])


def test_curation_records_each_template_pass_rate_relative_to_its_level():
    verified = [
        rec(1, response="1+2", count=3), rec(2, response="3+4", ok=False),  # "#+#": 3 of 4 pass
        rec(3, "p2", response="1*2"), rec(4, "p2", response="3*4", ok=False, count=3),  # "#*#": 1 of 4
        rec(5, "p3", response="9-9", ok=False, level=5),  # level 5: nothing passed, no rate
    ]
    accepted, _, _ = curate(verified, [], set(), CurateConfig(cap_per_problem=2))
    level = 4 / 8
    shrunk = {"1+2": (3 + PASS_RATE_PRIOR * level) / (4 + PASS_RATE_PRIOR) / level,
              "1*2": (1 + PASS_RATE_PRIOR * level) / (4 + PASS_RATE_PRIOR) / level}
    got = {r["response"]: r["curation"]["template_pass_rate"] for r in accepted}
    assert got == pytest.approx(shrunk) and got["1+2"] == pytest.approx(1.1)


def test_pass_rate_weights_divide_out_the_verifiers_preference_and_keep_level_shares():
    def row(i, level, rate):
        return {"id": f"x{i}", "level": level, "response": f"{i}+1", "curation": {"template_pass_rate": rate}}

    pool = [row(0, 4, 2.0), row(1, 4, 0.5), row(2, 4, 0.01), {**row(3, 4, 0), "curation": {}}, row(4, 3, 3.0)]
    w = draw_weights(pool, 0.0, pass_rate=1.0)
    # raw 0.5, 2, 10 (0.01 is read as MIN_RELATIVE_PASS_RATE = 0.1), 1 (no rate recorded)
    assert w[:4] == pytest.approx([x * 4 / 13.5 for x in (0.5, 2, 10, 1)]) and w[4] == pytest.approx(1)
    assert draw_weights(pool, 0.0, pass_rate=0.0) == pytest.approx([1.0] * 5)

    # A generation where half the samples have each of two shapes, one passing 4 times as
    # often: the accepted answers are 80% that shape; weighted at 1, about half again.
    verified = []
    for shape, op, good in (("a", "+", 400), ("b", "*", 100)):
        verified += [rec(f"{shape}{i}", f"{shape}{i}", response=f"{i}{op}{i}", level=4) for i in range(good)]
        verified += [rec(f"{shape}f", f"{shape}f", ok=False, count=1000 - good, response=f"7{op}7", level=4)]
    accepted, _, _ = curate(verified, [], set(), CurateConfig(cap_per_problem=2))
    assert sum("+" in r["response"] for r in accepted) / len(accepted) == pytest.approx(0.8)
    weights = draw_weights(accepted, 0.0, pass_rate=1.0)
    plus = sum(w for w, r in zip(weights, accepted, strict=True) if "+" in r["response"])
    assert plus / sum(weights) == pytest.approx(0.5, abs=0.01)


def test_pass_rate_balance_changes_the_mix_only_when_on():
    reference = [{"id": f"r{i}", "level": 3, "response": "1+1"} for i in range(5)]
    pool = [{"id": f"a{i}", "level": 3, "response": f"{i}+1", "curation": {"template_pass_rate": 2.0}}
            for i in range(8)] + [{"id": "b", "level": 3, "response": "1*(2+3)",
                                   "curation": {"template_pass_rate": 0.25}}]
    kw = {"steps": 200, "batch_size": 4, "reference_fraction": 0.25, "seed": 3}
    def drawn(**extra):
        return Counter(i for m in build_mix(reference, pool, **kw, **extra) for i in m["synthetic"])

    plain, tilted = drawn(), drawn(pass_rate_balance=1.0)
    a_plain = sum(plain[f"a{i}"] for i in range(8))
    a_tilted = sum(tilted[f"a{i}"] for i in range(8))
    assert plain["b"] * 8 == pytest.approx(a_plain, abs=16)  # each record once a pass
    # raw 4 against 8 x 0.5: drawn as often as all eight together (600 draws, offsets random)
    assert tilted["b"] == pytest.approx(a_tilted, rel=0.1)


def test_capped_steps_caps_passes_over_a_small_pool():
    # 64 x 0.2 -> 13 reference, 51 synthetic per batch
    assert capped_steps(800, 64, 0.2, 1219, 0.0) == 800  # no cap
    assert capped_steps(800, 64, 0.2, 1219, 8.0) == 192  # ceil(8 * 1219 / 51)
    assert capped_steps(800, 64, 0.2, 5100, 8.0) == 800  # large pool: train.steps
    assert capped_steps(800, 64, 0.2, 1, 0.01) == 1  # never 0 steps
    assert capped_steps(800, 64, 0.2, 0, 8.0) == 800  # empty pool: all-reference batches
    assert capped_steps(800, 64, 1.0, 1219, 8.0) == 800  # no synthetic share


def test_capped_mix_passes_the_pool_at_most_max_epochs_times():
    reference = [{"id": f"r{i}", "level": 3} for i in range(10)]
    pool = [{"id": f"s{i}", "level": 3, "response": "1+2", "generation": 1} for i in range(100)]
    steps = capped_steps(800, 64, 0.2, len(pool), 4.0)
    mix = build_mix(reference, pool, steps, 64, 0.2, seed=0)
    drawn = Counter(i for m in mix for i in m["synthetic"])
    assert len(mix) == 8 and sum(drawn.values()) == 8 * 51
    assert max(drawn.values()) <= 5 and set(drawn) == {r["id"] for r in pool}
