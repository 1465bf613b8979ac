"""Lineage of one record: where it came from and which checkpoints trained on it, read from
the files a run wrote (no database needed)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from selfloop.records import file_sha256, iter_jsonl
from selfloop.workspace import Workspace


class RecordNotFound(LookupError):
    pass


def _generations(ws: Workspace, arm: str = "loop") -> list[Path]:
    base = ws.root if arm == "loop" else ws.root / arm
    return sorted(p for p in base.glob("gen_[0-9][0-9][0-9]") if p.is_dir())


def _find(path: Path, record_id: str) -> dict | None:
    if path.exists():
        for r in iter_jsonl(path):
            if r.get("id") == record_id:
                return r
    return None


def lineage(ws: Workspace, record_id: str, version_of: Callable[[str], int | None] | None = None) -> dict:
    """The chain for ``record_id``: the record, its generation, generator, sampling, verdicts,
    curation decision, and every checkpoint whose training mix contained it. ``version_of``
    maps a checkpoint's sha256 to its MLflow model version (when a tracking store exists)."""
    record = _find(ws.reference, record_id)
    decision = None
    if record is None:
        for d in _generations(ws):
            record = _find(d / "verified.jsonl", record_id)
            if record is not None:
                found = _find(d / "curation.jsonl", record_id)
                decision = found["decision"] if found else None
                break
    if record is None:
        raise RecordNotFound(f"no record {record_id!r} in {ws.root} (reference data or any generation)")
    trained = []
    for arm in ("loop", "control"):
        for d in _generations(ws, arm):
            mix = d / "mix.jsonl"
            if not mix.exists():
                continue
            uses = Counter()
            for m in iter_jsonl(mix):
                for origin in ("reference", "synthetic"):
                    uses[origin] += m[origin].count(record_id)
            if sum(uses.values()):
                weights = d / "model" / "model.safetensors"
                trained.append({
                    "arm": arm,
                    "generation": int(d.name.split("_")[1]),
                    "checkpoint": str(weights.parent.relative_to(ws.root)),
                    "sha256": file_sha256(weights) if weights.exists() else None,
                    "times_in_mix": sum(uses.values()),
                })
    version = version_of or (lambda sha: None)
    for t in trained:
        t["model_version"] = version(t["sha256"]) if t["sha256"] else None
    generator_sha = (record.get("generator") or {}).get("sha256")
    return {"record": record, "curation": decision, "trained": trained,
            "generator_version": version(generator_sha) if generator_sha else None}


def format_lineage(chain: dict) -> str:
    r = chain["record"]
    lines = [
        f"record      {r['id']}  ({r['origin']}, generation {r['generation']})",
        f"problem     {r['problem_id']}  level {r['level']}  {r.get('problem', '')}",
        f"prompt      {r['prompt']!r}",
        f"response    {r['response']!r}",
    ]
    if r["origin"] == "reference":
        lines.append(f"made by     {r.get('source', 'reference data')}")
    else:
        g, s = r.get("generator", {}), r.get("sampling", {})
        lines += [
            f"generator   {g.get('path')}  sha256 {g.get('sha256')}  "
            f"model version {chain.get('generator_version') or '-'}",
            f"sampling    temperature {s.get('temperature')}  top_p {s.get('top_p')}  seed {s.get('seed')}"
            f"  samples/problem {s.get('samples_per_problem')}  (this answer {r.get('count', 1)}x)",
        ]
        for v in r.get("verification", []):
            lines.append(f"verified    {v['verifier']}: {v['verdict']} ({v['reason']}, score {v['score']})")
        lines.append(f"curation    {chain['curation']}")
    if chain["trained"]:
        for t in chain["trained"]:
            lines.append(f"trained     {t['arm']} generation {t['generation']}: {t['checkpoint']} "
                         f"sha256 {t['sha256']} model version {t.get('model_version') or '-'} "
                         f"({t['times_in_mix']}x in its mix)")
    else:
        lines.append("trained     no checkpoint trained on it")
    return "\n".join(lines)
