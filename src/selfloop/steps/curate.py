"""Curate: decide what is worth learning and build the training mix.

Invariants (tested): nothing without a passing verdict is accepted; no held-out problem is
accepted; duplicates (within a generation and against the pool) are dropped; at most
``cap_per_problem`` answers per problem per generation; the pool accumulates across
generations (or is replaced); every training batch holds the same fixed number of
reference examples, whatever the pool size."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable

from selfloop.config import CurateConfig
from selfloop.diversity import template


def passed(r: dict) -> bool:
    trace = r.get("verification") or []
    return bool(trace) and all(v["verdict"] == "pass" for v in trace)


# The template pass rate is shrunk towards its level's by this many pseudo-samples (one
# problem's worth at the default plan.samples), so a shape sampled once and passed once does
# not read as a certainty; and it is read as at least this share of the level's, so one
# lucky pass of a shape the model nearly always gets wrong is not drawn without bound.
PASS_RATE_PRIOR = 16
MIN_RELATIVE_PASS_RATE = 0.1


def template_pass_rates(verified: list[dict], ok: list[bool]) -> dict[tuple[int, str], float]:
    """(level, answer template) -> the share of that template's samples that passed, shrunk
    towards the level's share by ``PASS_RATE_PRIOR`` pseudo-samples, over the level's share.
    A level where nothing passed has no entries."""
    shape_n: Counter[tuple[int, str]] = Counter()
    shape_good: Counter[tuple[int, str]] = Counter()
    level_n: Counter[int] = Counter()
    level_good: Counter[int] = Counter()
    for r, passes in zip(verified, ok, strict=True):
        n, key = r.get("count", 1), (r["level"], template(r["response"]))
        shape_n[key] += n
        level_n[key[0]] += n
        if passes:
            shape_good[key] += n
            level_good[key[0]] += n
    rates = {}
    for key, n in shape_n.items():
        if level_good[key[0]]:
            level_rate = level_good[key[0]] / level_n[key[0]]
            rates[key] = (shape_good[key] + PASS_RATE_PRIOR * level_rate) / (n + PASS_RATE_PRIOR) / level_rate
    return rates


def curate(
    verified: list[dict], pool: list[dict], heldout_ids: set[str], cfg: CurateConfig
) -> tuple[list[dict], list[dict], dict]:
    """Returns (accepted records, every candidate's decision, counts by decision).

    Each accepted record's curation says how often the model solved its problem this
    generation (``solve_rate``: the share of the problem's samples that passed), which
    ``train.difficulty_balance`` weighs by, and how often its answer's template passed
    relative to its level (``template_pass_rate``, ``template_pass_rates``), which
    ``train.pass_rate_balance`` weighs by."""
    in_pool = {r["id"] for r in pool}
    ok = [passed(r) for r in verified]
    sampled: Counter[str] = Counter()
    solved: Counter[str] = Counter()
    for r, good in zip(verified, ok, strict=True):
        sampled[r["problem_id"]] += r.get("count", 1)
        solved[r["problem_id"]] += r.get("count", 1) if good else 0
    shape_rate = template_pass_rates(verified, ok)
    per_problem: dict[str, int] = defaultdict(int)
    accepted, decisions = [], []
    # Most-sampled answers first: with a cap, keep the model's most consistent solutions.
    order = sorted(range(len(verified)), key=lambda i: (-verified[i].get("count", 1), i))
    seen: set[str] = set()
    cap = 1 if cfg.selection in ("one", "greedy") else cfg.cap_per_problem
    for i in order:
        r = verified[i]
        if not ok[i]:
            decision = "rejected_unverified"
        elif r["problem_id"] in heldout_ids:
            decision = "rejected_heldout"
        elif r["id"] in seen or r["id"] in in_pool:
            decision = "duplicate"
        elif per_problem[r["problem_id"]] >= cap:
            decision = "over_cap"
        else:
            decision = "accepted"
            per_problem[r["problem_id"]] += 1
            rate = solved[r["problem_id"]] / sampled[r["problem_id"]]
            relative = shape_rate[(r["level"], template(r["response"]))]
            accepted.append({**r, "curation": {"decision": decision, "selection": cfg.selection,
                                               "solve_rate": rate,
                                               "template_pass_rate": round(relative, 6)}})
        seen.add(r["id"])
        decisions.append({"id": r["id"], "decision": decision})
    counts = Counter(d["decision"] for d in decisions)
    return accepted, decisions, dict(sorted(counts.items()))


class HeldoutLeak(RuntimeError):
    """A training record's problem is in the held-out evaluation set."""


def assert_no_heldout(records, heldout_ids: set[str]) -> None:
    """The last guard before training: no training record may share a held-out problem."""
    leaked = sorted({r["id"] for r in records if r["problem_id"] in heldout_ids})
    if leaked:
        raise HeldoutLeak(f"{len(leaked)} training record(s) share a held-out problem, e.g. {leaked[:5]}")


def next_pool(pool: list[dict], accepted: list[dict], accumulate: bool) -> list[dict]:
    return [*pool, *accepted] if accumulate else list(accepted)


def draw_weights(pool: list[dict], balance: float, difficulty: float = 0.0,
                 pass_rate: float = 0.0) -> list[float]:
    """Each record's draw weight: (count of its answer template within its level)^-``balance``
    x (its problem's solve rate)^-``difficulty`` x (its template's relative pass rate in the
    generation that sampled it, at least ``MIN_RELATIVE_PASS_RATE``)^-``pass_rate``, scaled
    so every level keeps its share of the pool.

    Self-training favours the shapes the model already finds easiest (on Countdown, adding
    every number): ``balance`` draws the rarer shapes of the same level more often.
    ``difficulty`` draws the answers to problems the model rarely solved more often: a
    pool of verified samples over-represents easy problems, since those yield a correct
    answer most often (the bias DART-Math, Tong et al. 2024, corrects by sampling hard
    problems more). ``pass_rate`` undoes the verifier's own tilt: a template that passes
    twice as often as the level's answers do is about twice as common among the accepted as
    among the model's samples (less where the cap or duplicates bind), and at 1 that
    preference is divided out. None
    of them changes how much each level gets. A record curated before ``solve_rate`` or
    ``template_pass_rate`` was recorded counts as weight 1 for it."""
    shape = [(r["level"], template(r["response"])) for r in pool]
    count, size = Counter(shape), Counter(level for level, _ in shape)
    def factor(r: dict) -> float:
        c = r.get("curation") or {}
        relative = max(c.get("template_pass_rate", 1.0), MIN_RELATIVE_PASS_RATE)
        return c.get("solve_rate", 1.0) ** -difficulty * relative ** -pass_rate

    raw = [count[s] ** -balance * factor(r) for s, r in zip(shape, pool, strict=True)]
    mass: dict[int, float] = defaultdict(float)
    for (level, _), w in zip(shape, raw, strict=True):
        mass[level] += w
    return [w * size[level] / mass[level] for (level, _), w in zip(shape, raw, strict=True)]


def weighted_pass(ids: list[str], weights: list[float], offset: float) -> list[str]:
    """One pass over the pool in which each id appears floor or ceil of its weight times
    (systematic sampling: cumulative weights cut at ``offset`` + 0, 1, 2, ...). With every
    weight 1 it is each id once, the plain cycle's pass; any weights give exactly
    round(sum of weights) rows. Drawing with replacement instead (``random.choices``) leaves
    about a third of the pool out of each pass by chance, which is not what balancing means."""
    out, cum, taken = [], 0.0, 0
    for i, w in zip(ids, weights, strict=True):
        cum += w
        k = math.floor(cum + offset) - taken
        out.extend([i] * k)
        taken += k
    return out


def capped_steps(steps: int, batch_size: int, reference_fraction: float, pool_size: int,
                 max_epochs: float) -> int:
    """``steps``, or fewer so that the synthetic draws pass over a pool of ``pool_size`` at most
    ``max_epochs`` times (rounded up to a whole step; 0: no cap). A batch with no synthetic
    share (an empty pool, or ``reference_fraction`` 1) is never capped: it repeats no pool.

    A generation trained from the base model on a small early pool sees each answer dozens
    of times (800 steps x 51 draws over 1,200 answers: 34 passes), and its samples narrow
    to that pool's shapes; a later, larger pool is seen a few times. The cap makes the early
    calls as light as the later ones."""
    n_syn = batch_size - round(reference_fraction * batch_size)
    if max_epochs <= 0 or pool_size == 0 or n_syn == 0:
        return steps
    return min(steps, max(1, math.ceil(max_epochs * pool_size / n_syn)))


def build_mix(
    reference: list[dict], pool: list[dict], steps: int, batch_size: int,
    reference_fraction: float, seed: int, template_balance: float = 0.0,
    difficulty_balance: float = 0.0, reference_by_level: bool = False,
    pass_rate_balance: float = 0.0,
) -> list[dict]:
    """One manifest line per optimizer step: the ids of that batch, by origin.

    Each batch takes ``round(reference_fraction * batch_size)`` reference examples, the
    rest from the synthetic pool (both cycled in seeded random order; with
    ``template_balance``, ``difficulty_balance`` or ``pass_rate_balance`` > 0 each pass over
    the pool repeats every
    synthetic example about ``draw_weights`` times, see ``weighted_pass``). With
    ``reference_by_level`` each reference draw first takes a level, in proportion to the
    pool's records at the levels the reference data has, then the next example of that
    level's own cycle. With an empty pool the batch is all reference, drawn from all of it
    alike. The count never depends on how much was accepted."""
    rng = random.Random(seed)
    n_ref = round(reference_fraction * batch_size) if pool else batch_size
    n_syn = batch_size - n_ref

    def cycle(rows: list[dict]):
        ids = [r["id"] for r in rows]
        while True:
            order = ids[:]
            rng.shuffle(order)
            yield from order

    def weighted(rows: list[dict]):
        ids = [r["id"] for r in rows]
        weights = draw_weights(rows, template_balance, difficulty_balance, pass_rate_balance)
        while True:
            order = weighted_pass(ids, weights, rng.random())
            rng.shuffle(order)
            yield from order

    def by_level(share: Counter[int]):
        its = {lv: cycle([r for r in reference if r["level"] == lv]) for lv in sorted(share)}
        # Levels in passes that hold each level as often as the pool does, shuffled: the
        # shares are exact per pass (independent draws would miss them by chance).
        while True:
            order = [lv for lv in sorted(share) for _ in range(share[lv])]
            rng.shuffle(order)
            for lv in order:
                yield next(its[lv])

    # The pool's levels that have reference data; none (flag off, empty pool, or no level in
    # common): every reference example alike.
    share: Counter[int] = Counter()
    if reference_by_level:
        ref_levels = {r["level"] for r in reference}
        share = Counter(r["level"] for r in pool if r["level"] in ref_levels)
    ref_it = by_level(share) if share else cycle(reference)
    balanced = template_balance > 0 or difficulty_balance > 0 or pass_rate_balance > 0
    syn_it = (weighted(pool) if balanced else cycle(pool)) if pool else iter(())
    mix = []
    for step in range(steps):
        mix.append({
            "step": step,
            "reference": [next(ref_it) for _ in range(n_ref)],
            "synthetic": [next(syn_it) for _ in range(n_syn)],
        })
    return mix


def origin_shares(mix: Iterable[dict], newest: set[str]) -> dict[str, float] | None:
    """The shares of a training mix's draws that are reference data, synthetic answers whose
    id is in ``newest`` (the generation's own accepted answers) and earlier synthetic answers,
    streamed from the manifest (the pool is not needed); None for an empty mix."""
    n_ref = n_new = n_old = 0
    for batch in mix:
        n_ref += len(batch["reference"])
        fresh = sum(1 for i in batch["synthetic"] if i in newest)
        n_new, n_old = n_new + fresh, n_old + len(batch["synthetic"]) - fresh
    total = n_ref + n_new + n_old
    if not total:
        return None
    return {"reference": n_ref / total, "this_generation": n_new / total, "earlier": n_old / total}


def mix_makeup(mix: list[dict], pool: list[dict], reference: list[dict] | None = None) -> dict:
    """Share of the mix by origin, and of the synthetic part by generation; with
    ``reference``, also the reference share of the draws at each level."""
    gen_of = {r["id"]: r["generation"] for r in pool}
    n_ref = sum(len(m["reference"]) for m in mix)
    syn = Counter(gen_of[i] for m in mix for i in m["synthetic"])
    total = n_ref + sum(syn.values())
    out = {
        "reference_share": n_ref / total if total else 0.0,
        "synthetic_by_generation": {str(g): c / total for g, c in sorted(syn.items())},
    }
    if reference is not None:
        level_of = {r["id"]: r["level"] for r in (*reference, *pool)}
        ref = Counter(level_of[i] for m in mix for i in m["reference"])
        drawn = ref + Counter(level_of[i] for m in mix for i in m["synthetic"])
        out["reference_share_by_level"] = {str(lv): ref[lv] / n for lv, n in sorted(drawn.items())}
    return out
