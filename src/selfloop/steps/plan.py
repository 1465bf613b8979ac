"""Curriculum: choose levels and sampling settings from the last evaluation, aiming at the
frontier where the model is right sometimes but not always. The plan is data, so a replay
reproduces it rather than re-deciding it."""

from __future__ import annotations

from selfloop.config import Params


def classify(level_eval: dict, p: Params) -> str:
    if level_eval["greedy_acc"] >= p.plan.band_high:
        return "mastered"
    if level_eval["pass_at_k"] >= p.plan.band_low:
        return "frontier"
    return "beyond"


def _apportion(n: int, shares: dict[int, float]) -> dict[int, int]:
    """Split ``n`` in proportion to ``shares`` so the counts sum to exactly ``n``
    (largest remainder; ties go to the lower level)."""
    total = sum(shares.values())
    exact = {k: n * v / total for k, v in shares.items()}
    counts = {k: int(x) for k, x in exact.items()}
    by_rest = sorted(shares, key=lambda k: (-(exact[k] - counts[k]), k))
    for k in by_rest[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def generation_seed(params: Params, generation: int) -> int:
    """The seed of one generation's sampling and training mix (both arms)."""
    return params.run.seed * 1_000_003 + 101 * generation


def make_plan(params: Params, generation: int, last_eval: dict) -> dict:
    """Split ``plan.problems`` across levels: frontier levels share the bulk (weighted by
    1/sqrt(pass@k)), mastered levels keep a small share, and the first level
    beyond the frontier gets an exploration share so the curriculum can move on."""
    p = params.plan
    levels = sorted(params.domain.levels)
    kinds = {lv: classify(last_eval["levels"][str(lv)], params) for lv in levels}
    mastered = [lv for lv in levels if kinds[lv] == "mastered"]
    frontier = [lv for lv in levels if kinds[lv] == "frontier"]
    beyond = [lv for lv in levels if kinds[lv] == "beyond"]
    explore = beyond[:1]
    shares = {lv: 0.0 for lv in levels}
    budget = 1.0
    if mastered:
        for lv in mastered:
            shares[lv] = p.mastered_share / len(mastered)
        budget -= p.mastered_share
    if explore:
        share = p.explore_share if frontier else budget
        shares[explore[0]] = share
        budget -= share
    if frontier:
        # Harder frontier levels get more problems (weight 1/sqrt(pass@k)): they yield
        # fewer solved problems each. Fully inverse weighting starved a level that was still
        # improving as soon as the next one entered the frontier.
        weight = {lv: max(last_eval["levels"][str(lv)]["pass_at_k"], p.band_low) ** -0.5 for lv in frontier}
        for lv in frontier:
            shares[lv] = budget * weight[lv] / sum(weight.values())
    elif not explore:  # everything mastered: spread the rest evenly
        for lv in levels:
            shares[lv] += budget / len(levels)
    counts = _apportion(p.problems, shares)
    reasons = {}
    for lv in levels:
        e = last_eval["levels"][str(lv)]
        reasons[str(lv)] = (
            f"{kinds[lv]}: greedy {e['greedy_acc']:.3f}, pass@{e['k']} {e['pass_at_k']:.3f}"
            + (" (explore)" if lv in explore else "")
        )
    return {
        "generation": generation,
        "problems_per_level": {str(lv): c for lv, c in counts.items() if c > 0},
        "level_status": reasons,
        "samples": p.samples,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "seed": generation_seed(params, generation),
        "decisions": [],  # monitor interventions are appended here (collapse guard)
    }
