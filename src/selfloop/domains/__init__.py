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


def get_domain(cfg: DomainConfig, template: Callable[[str], str] | None = None) -> Domain:
    """The configured domain; ``template`` wraps prompts for chat models."""
    if cfg.name != "countdown":
        raise ValueError(f"unknown domain {cfg.name!r}; available: 'countdown'")
    return Countdown(
        (cfg.num_min, cfg.num_max), (cfg.target_min, cfg.target_max), template, cfg.answer_format
    )


__all__ = ["Domain", "Verdict", "get_domain"]
