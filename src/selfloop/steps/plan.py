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


REPLICATE_STRIDE = 7_919  # a prime: replicate r of generation g never reuses another's seed


def replicate_offset(params: Params, generation: int) -> int:
    """What ``run.replicate`` adds to generation ``generation``'s seeds: nothing at generation 0,
    which the base model and its evaluation share with every replicate."""
    return REPLICATE_STRIDE * params.run.replicate if generation > 0 else 0


def generation_seed(params: Params, generation: int) -> int:
    """The seed of one generation's sampling and training mix (both arms)."""
    return params.run.seed * 1_000_003 + 101 * generation + replicate_offset(params, generation)


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
        "policy": {},  # the monitor's overrides (apply_decisions); empty: params as they are
        "decisions": [],  # the monitor's decisions this plan applied
    }


def apply_decisions(plan: dict, previous: dict | None, decisions: list[dict], params: Params,
                    accuracy_by_generation: dict[int, float]) -> dict:
    """The next generation's plan with the monitor's decisions applied. The policy (only
    what the monitor changed: temperature, top_p, cap_per_problem, reference_fraction)
    carries over from the previous plan, so interventions accumulate; a rollback
    (``source_generation``: continue from the champion, the best mean held-out greedy
    accuracy so far, instead of the last checkpoint) applies to one generation only.
    Without decisions the plan does not depend on the curation and training settings, so a
    counterfactual replay of those does not re-run generation."""
    m = params.monitor
    policy = {k: v for k, v in ((previous or {}).get("policy") or {}).items() if k != "source_generation"}
    applied, done = [], set()
    for d in decisions if m.act else []:
        a = d["action"]
        if a in done:  # two signals asking for one action: it is applied once
            applied.append(d)
            continue
        done.add(a)
        if a == "raise_temperature":
            top_p = policy.get("top_p", plan["top_p"])
            if top_p < 1.0:
                policy["top_p"] = round(min(1.0, top_p + m.top_p_step), 6)
            else:
                t = policy.get("temperature", plan["temperature"]) + m.temperature_step
                policy["temperature"] = round(min(m.temperature_max, t), 6)
        elif a == "cap_harder":
            cap = policy.get("cap_per_problem", params.curate.cap_per_problem)
            policy["cap_per_problem"] = max(1, cap - 1)
        elif a == "raise_reference_fraction":
            rf = policy.get("reference_fraction", params.train.reference_fraction) + m.reference_step
            policy["reference_fraction"] = round(min(m.reference_max, rf), 6)
        elif a == "rollback":
            acc = accuracy_by_generation
            policy["source_generation"] = max(acc, key=lambda k: (acc[k], -k))
        else:
            continue
        applied.append(d)
    out = {**plan, "policy": policy, "decisions": applied}
    out["temperature"] = policy.get("temperature", plan["temperature"])
    out["top_p"] = policy.get("top_p", plan["top_p"])
    return out
