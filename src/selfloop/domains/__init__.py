"""Task domains. A domain makes problems (with reference solutions from an exact solver),
renders prompts, and verifies answers, returning a verdict with a reason, never raising."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

from selfloop.config import DomainConfig
from selfloop.domains.countdown import Countdown, Verdict


class Domain(Protocol):
    name: str
    alphabet: str

    def make_problem(self, rng: random.Random, level: int) -> tuple[dict, str]: ...
    def prompt(self, problem: dict) -> str: ...
    def completion(self, solution: str) -> str: ...
    def verify(self, response: str, problem: dict, max_chars: int = ...) -> Verdict: ...
    def solve(self, problem: dict) -> str | None: ...


class ProblemSpaceExhausted(ValueError):
    """More distinct problems were asked for than the level's ranges allow."""


def draw_problems(
    domain: Domain, rng: random.Random, level: int, count: int, excluded: set[str],
    max_misses: int = 20_000, strict: bool = True,
) -> list[tuple[dict, str]]:
    """``count`` new distinct problems (with a solution) not in ``excluded``; the ids drawn
    are added to ``excluded``. When the level runs out (``max_misses`` draws in a row find
    nothing new) it raises, or with ``strict=False`` returns the ones it found."""
    out: list[tuple[dict, str]] = []
    misses = 0
    while len(out) < count:
        problem, solution = domain.make_problem(rng, level)
        if problem["problem_id"] in excluded:
            misses += 1
            if misses > max_misses:
                if not strict:
                    return out
                raise ProblemSpaceExhausted(
                    f"level {level}: found only {len(out)} of {count} new distinct problems "
                    f"({len(excluded)} already taken); lower the count or widen the number/target ranges"
                )
            continue
        misses = 0
        excluded.add(problem["problem_id"])
        out.append((problem, solution))
    return out


def get_domain(cfg: DomainConfig, template: Callable[[str], str] | None = None) -> Domain:
    """The configured domain; ``template`` wraps prompts for chat models."""
    if cfg.name != "countdown":
        raise ValueError(f"unknown domain {cfg.name!r}; available: 'countdown'")
    return Countdown(
        (cfg.num_min, cfg.num_max), (cfg.target_min, cfg.target_max), template, cfg.answer_format
    )


__all__ = ["Domain", "ProblemSpaceExhausted", "Verdict", "draw_problems", "get_domain"]
