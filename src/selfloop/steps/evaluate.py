"""Evaluate on the held-out sets: greedy accuracy and pass@k per level, and how many
distinct correct answers the model finds per solved problem. The pass@k samples are returned
too: the same problems, k answers each, at every generation and in every arm, they are the
fixed probe the diversity of the model itself is measured on (``steps.measure``)."""

from __future__ import annotations

from collections import defaultdict

from selfloop.domains import Domain
from selfloop.generation import Generator, Progress


def evaluate(
    domain: Domain, generator: Generator, heldout: list[dict], k: int, temperature: float,
    seed: int, max_chars: int, progress: Progress | None = None,
) -> dict:
    by_level: dict[int, list[dict]] = defaultdict(list)
    for h in heldout:
        by_level[h["level"]].append(h)
    levels, probe = {}, []
    for level, probs in sorted(by_level.items()):
        prompts = [domain.prompt(p) for p in probs]
        greedy = generator(prompts, 1, 0.0, 1.0, seed, progress)
        sampled = generator(prompts, k, temperature, 1.0, seed + level, progress) if k else []
        g_ok = [domain.verify(g[0], p, max_chars).correct for g, p in zip(greedy, probs, strict=True)]
        solved = distinct = 0
        for answers, p in zip(sampled, probs, strict=False):
            verdicts = [domain.verify(a, p, max_chars) for a in answers]
            good = {a for a, v in zip(answers, verdicts, strict=True) if v.correct}
            solved += bool(good)
            distinct += len(good)
            probe += [{"problem_id": p["problem_id"], "level": level, "response": a, "reason": v.reason,
                       "well_formed": v.well_formed} for a, v in zip(answers, verdicts, strict=True)]
        n = len(probs)
        levels[str(level)] = {
            "n": n,
            "k": k,
            "greedy_acc": sum(g_ok) / n,
            "pass_at_k": solved / n if k else 0.0,
            "distinct_per_solved": distinct / solved if solved else 0.0,
        }
    return {"levels": levels, "samples": probe}
