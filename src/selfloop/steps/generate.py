"""Generate: new problems for the plan's levels, k samples per problem, one record per
distinct (problem, response) with full provenance."""

from __future__ import annotations

import random
from collections import Counter

from selfloop.domains import Domain, draw_problems
from selfloop.generation import Generator, Progress
from selfloop.records import content_id


def new_problems(domain: Domain, plan: dict, excluded: set[str]) -> list[dict]:
    """Fresh problems per level, seeded by the plan, never a held-out or excluded one;
    fewer than planned when a level has no more (``generate`` stats show the count)."""
    out, seen = [], set(excluded)
    for level, count in sorted(plan["problems_per_level"].items(), key=lambda kv: int(kv[0])):
        rng = random.Random(plan["seed"] * 31 + int(level))
        # A small level may hold fewer unseen problems than planned: take all there are.
        out.extend(p for p, _ in draw_problems(domain, rng, int(level), count, seen, strict=False))
    return out


def greedy_plan(plan: dict) -> dict:
    """The plan for greedy-only selection (``curate.selection: greedy``): one greedy answer
    per problem (temperature 0) instead of ``samples`` sampled ones. When the monitor has
    raised the temperature or top-p (the plan's policy says so), its intervention wins: the
    plan's own sampling is used, and curation still keeps one answer per problem."""
    policy = plan.get("policy") or {}
    if "temperature" in policy or "top_p" in policy:
        return plan
    return {**plan, "samples": 1, "temperature": 0.0, "top_p": 1.0}


def generate(
    domain: Domain,
    generator: Generator,
    plan: dict,
    problems: list[dict],
    checkpoint: dict,
    progress: Progress | None = None,
) -> tuple[list[dict], dict]:
    """Sample ``plan['samples']`` answers per problem (temperature 0: one greedy answer).
    Returns records (duplicates of the same answer to the same problem collapsed, with their
    count) and raw counts."""
    prompts = [domain.prompt(p) for p in problems]
    samples = generator(
        prompts, plan["samples"], plan["temperature"], plan["top_p"], plan["seed"], progress
    )
    sampling = {
        "temperature": plan["temperature"],
        "top_p": plan["top_p"],
        "seed": plan["seed"],
        "samples_per_problem": plan["samples"],
        "greedy": plan["temperature"] == 0,
    }
    records = []
    for problem, prompt, answers in zip(problems, prompts, samples, strict=True):
        counts = Counter(answers)
        for response in sorted(counts, key=answers.index):  # first-seen order: deterministic
            records.append({
                "id": content_id(domain.name, prompt, response),
                "origin": "synthetic",
                "generation": plan["generation"],
                "domain": domain.name,
                "level": problem["level"],
                "problem_id": problem["problem_id"],
                "problem": {"numbers": problem["numbers"], "target": problem["target"]},
                "prompt": prompt,
                "response": response,
                "count": counts[response],
                "generator": checkpoint,
                "sampling": sampling,
            })
    stats = {"problems": len(problems), "samples": sum(map(len, samples)), "distinct": len(records)}
    return records, stats


def verify(domain: Domain, records: list[dict], max_chars: int) -> tuple[list[dict], dict]:
    """Attach the verification trace to every record. Never raises on model output."""
    out, reasons = [], Counter()
    correct_samples = total_samples = 0
    for r in records:
        v = domain.verify(r["response"], r["problem"], max_chars)
        reasons[v.reason] += r["count"]
        total_samples += r["count"]
        correct_samples += r["count"] * v.correct
        out.append({
            **r,
            "verification": [
                {"verifier": f"{domain.name}_exact", "score": v.score,
                 "verdict": "pass" if v.correct else "fail", "reason": v.reason}
            ],
        })
    stats = {
        "acceptance_rate": correct_samples / total_samples if total_samples else 0.0,
        "reasons": dict(sorted(reasons.items())),
    }
    return out, stats


def pass_unverified(domain: Domain, records: list[dict], max_chars: int) -> tuple[list[dict], dict]:
    """The no-verifier ablation (``verify.verifier: none``): every answer passes unread (only
    the length cap still rejects), and its trace says so: verifier ``none``, no score, reason
    ``not_verified``. The stats also give the share of samples the exact checker would have
    passed (measured for the report, never used to decide)."""
    out, reasons = [], Counter()
    passed = exact = total = 0
    for r in records:
        ok = len(r["response"]) <= max_chars
        reason = "not_verified" if ok else "too_long"
        reasons[reason] += r["count"]
        total += r["count"]
        passed += r["count"] * ok
        exact += r["count"] * domain.verify(r["response"], r["problem"], max_chars).correct
        out.append({**r, "verification": [
            {"verifier": "none", "score": None, "verdict": "pass" if ok else "fail", "reason": reason}]})
    stats = {
        "acceptance_rate": passed / total if total else 0.0,
        "exact_pass_rate": exact / total if total else 0.0,
        "verifier": "none",
        "reasons": dict(sorted(reasons.items())),
    }
    return out, stats
