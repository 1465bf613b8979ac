"""Reference data: solved problems from the exact solver (never model-made) and the fixed
held-out evaluation sets. No held-out problem ever appears in a training file."""

from __future__ import annotations

import random
from pathlib import Path

from selfloop.config import Params
from selfloop.domains import Domain, draw_problems
from selfloop.records import content_id, write_jsonl

HELDOUT_SEED_OFFSET = 7_919  # held-out sets use their own seed stream


def make_heldout(params: Params, domain: Domain) -> list[dict]:
    rows, seen = [], set()
    for level in params.domain.levels:
        rng = random.Random(params.run.seed * 1_000_003 + HELDOUT_SEED_OFFSET + level)
        for problem, solution in draw_problems(domain, rng, level, params.reference.heldout_per_level, seen):
            rows.append({**problem, "domain": domain.name, "reference_solution": solution})
    return rows


def make_reference(params: Params, domain: Domain, heldout_ids: set[str]) -> list[dict]:
    rows, seen = [], set(heldout_ids)
    for level, count in sorted(params.reference.train_per_level.items()):
        rng = random.Random(params.run.seed * 1_000_003 + level)
        for problem, _ in draw_problems(domain, rng, level, count, seen):
            solution = domain.solve(problem)  # the exact solver, not the construction
            prompt, response = domain.prompt(problem), domain.completion(solution)
            rows.append({
                "id": content_id(domain.name, prompt, response),
                "origin": "reference",
                "generation": 0,
                "domain": domain.name,
                "level": level,
                "problem_id": problem["problem_id"],
                "problem": {"numbers": problem["numbers"], "target": problem["target"]},
                "prompt": prompt,
                "response": response,
                "source": "exact_solver",
            })
    return rows


def run(params: Params, domain: Domain, out_dir: Path) -> dict:
    """Write ``heldout.jsonl`` and ``reference.jsonl`` under ``out_dir``."""
    heldout = make_heldout(params, domain)
    reference = make_reference(params, domain, {h["problem_id"] for h in heldout})
    write_jsonl(out_dir / "heldout.jsonl", heldout)
    write_jsonl(out_dir / "reference.jsonl", reference)
    return {"heldout": len(heldout), "reference": len(reference)}
