"""Evaluate on the held-out sets: greedy accuracy and pass@k per level, and how many
distinct correct answers the model finds per solved problem."""

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
    levels = {}
    for level, probs in sorted(by_level.items()):
        prompts = [domain.prompt(p) for p in probs]
        greedy = generator(prompts, 1, 0.0, 1.0, seed, progress)
        sampled = generator(prompts, k, temperature, 1.0, seed + level, progress) if k else []
        g_ok = [domain.verify(g[0], p, max_chars).correct for g, p in zip(greedy, probs, strict=True)]
        solved = distinct = 0
        for answers, p in zip(sampled, probs, strict=False):
            good = {a for a in answers if domain.verify(a, p, max_chars).correct}
            solved += bool(good)
            distinct += len(good)
        n = len(probs)
        levels[str(level)] = {
            "n": n,
            "k": k,
            "greedy_acc": sum(g_ok) / n,
            "pass_at_k": solved / n if k else 0.0,
            "distinct_per_solved": distinct / solved if solved else 0.0,
        }
    return {"levels": levels}
