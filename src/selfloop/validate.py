"""great-expectations gates: one suite per record kind. A batch that fails its suite stops
the iteration before training; the error names the expectation, the file and the offending
ids, the batch stays on disk for inspection, and the result is saved beside it.

One ephemeral GX context per process (importing GX and creating the context costs ~5 s);
each suite is built on it once and reused for every batch of its kind."""

from __future__ import annotations

import functools
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfloop.config import Params
from selfloop.records import write_json

KINDS = ("reference", "candidates", "accepted", "mix")
_serial = itertools.count()
MAX_IDS_SHOWN = 20


class ValidationFailed(RuntimeError):
    """A batch failed its suite; ``failures`` lists (expectation, column, offending ids)."""

    def __init__(self, kind: str, path: Path, failures: list[dict]) -> None:
        self.kind, self.path, self.failures = kind, path, failures
        lines = [f"{kind} batch {path} failed validation; it is kept for inspection, nothing trained on it:"]
        for f in failures:
            ids = ", ".join(map(str, f["ids"][:5])) + (" ..." if len(f["ids"]) > 5 else "")
            lines.append(f"  - {f['expectation']}({f['column']}): {f['count']} offending"
                         + (f" e.g. ids {ids}" if ids else ""))
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Check:
    """One expectation: its GX class name and keyword arguments."""

    name: str
    kwargs: dict[str, Any]


@functools.cache
def _context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # no per-context INFO lines
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


def warm_up() -> None:
    """Import great-expectations and create this process's context now rather than at the
    first gate (``python -m flows.loop`` does it while the Prefect server starts)."""
    _context()


# --------------------------------------------------------------------------- frames


def record_frame(records: list[dict], heldout_ids: set[str] = frozenset()):
    """One row per record with provenance flattened into columns, and whether its problem
    is a held-out one (computed here: an expectation holding the ~1,500 held-out ids as its
    value set made GX spend seconds per batch serializing and copying that list)."""
    import pandas as pd

    rows = []
    for r in records:
        trace = r.get("verification") or []
        gen = r.get("generator") or {}
        sampling = r.get("sampling") or {}
        rows.append({
            "id": r.get("id"), "origin": r.get("origin"), "generation": r.get("generation"),
            "domain": r.get("domain"), "level": r.get("level"), "problem_id": r.get("problem_id"),
            "prompt": r.get("prompt"), "response": r.get("response"),
            "generator_sha256": gen.get("sha256"), "sampling_seed": sampling.get("seed"),
            "verdict": (None if not trace else "pass" if all(v.get("verdict") == "pass" for v in trace)
                        else "fail"),
            "curation": (r.get("curation") or {}).get("decision"),
            "heldout_problem": r.get("problem_id") in heldout_ids,
        })
    columns = ["id", "origin", "generation", "domain", "level", "problem_id", "prompt", "response",
               "generator_sha256", "sampling_seed", "verdict", "curation", "heldout_problem"]
    return pd.DataFrame(rows, columns=columns)


def mix_frame(mix: list[dict], by_id: dict[str, dict], heldout_ids: set[str]):
    """One row per batch: its size and reference share, how many ids do not resolve to a
    record, and how many are of a held-out problem."""
    import pandas as pd

    rows = []
    for m in mix:
        ids = [*m["reference"], *m["synthetic"]]
        rows.append({
            "id": f"step-{m['step']}",
            "step": m["step"],
            "size": len(ids),
            "reference_share": len(m["reference"]) / len(ids) if ids else 0.0,
            "unknown_ids": sum(i not in by_id for i in ids),
            "heldout_ids": sum(by_id[i]["problem_id"] in heldout_ids for i in ids if i in by_id),
        })
    return pd.DataFrame(rows, columns=["id", "step", "size", "reference_share", "unknown_ids", "heldout_ids"])


# --------------------------------------------------------------------------- suites


def _record_checks(params: Params, max_response: int, origin: str) -> list[Check]:
    levels = list(params.domain.levels) + sorted(params.reference.train_per_level)
    return [
        Check("ExpectColumnValuesToNotBeNull", {"column": "id"}),
        Check("ExpectColumnValuesToBeUnique", {"column": "id"}),
        Check("ExpectColumnValuesToBeInSet", {"column": "origin", "value_set": [origin]}),
        Check("ExpectColumnValuesToBeInSet", {"column": "domain", "value_set": [params.domain.name]}),
        Check("ExpectColumnValuesToBeInSet", {"column": "level", "value_set": sorted(set(levels))}),
        Check("ExpectColumnValuesToNotBeNull", {"column": "problem_id"}),
        Check("ExpectColumnValuesToBeInSet", {"column": "heldout_problem", "value_set": [False]}),
        Check("ExpectColumnValueLengthsToBeBetween", {"column": "prompt", "min_value": 1, "max_value": 4000}),
        Check("ExpectColumnValuesToNotBeNull", {"column": "response"}),
        Check("ExpectColumnValueLengthsToBeBetween",
              {"column": "response", "min_value": 0, "max_value": max_response}),
    ]


def _synthetic_checks() -> list[Check]:
    # Column-map expectations skip nulls: every "must be there" field also gets NotBeNull.
    return [
        Check("ExpectColumnValuesToNotBeNull", {"column": "generator_sha256"}),
        Check("ExpectColumnValueLengthsToEqual", {"column": "generator_sha256", "value": 64}),
        Check("ExpectColumnValuesToNotBeNull", {"column": "sampling_seed"}),
        Check("ExpectColumnValuesToNotBeNull", {"column": "generation"}),
        Check("ExpectColumnValuesToBeInSet", {"column": "verdict", "value_set": ["pass", "fail"]}),
        Check("ExpectColumnValuesToNotBeNull", {"column": "verdict"}),
    ]


def checks_for(kind: str, params: Params, heldout_ids: set[str], pool_nonempty: bool = True) -> list[Check]:
    """The suite for one record kind."""
    max_chars = params.verify.max_chars
    # A sampled response may be longer than the verifier accepts (it is then rejected), but
    # never longer than max_new_tokens tokens; 16 characters a token bounds any tokenizer here.
    max_sampled = max(max_chars, 16 * params.generate.max_new_tokens)
    if kind == "reference":
        return [*_record_checks(params, max_chars, "reference"),
                Check("ExpectColumnValueLengthsToBeBetween",
                      {"column": "response", "min_value": 1, "max_value": max_chars})]
    if kind == "candidates":
        return [*_record_checks(params, max_sampled, "synthetic"), *_synthetic_checks()]
    if kind == "accepted":
        return [*_record_checks(params, max_chars, "synthetic"), *_synthetic_checks(),
                Check("ExpectColumnValuesToBeInSet", {"column": "verdict", "value_set": ["pass"]}),
                Check("ExpectColumnValuesToBeInSet", {"column": "curation", "value_set": ["accepted"]})]
    if kind == "mix":
        share = params.train.reference_fraction if pool_nonempty else 1.0
        n_ref = round(share * params.train.batch_size)
        return [
            Check("ExpectColumnValuesToBeUnique", {"column": "step"}),
            Check("ExpectColumnValuesToBeInSet", {"column": "size", "value_set": [params.train.batch_size]}),
            Check("ExpectColumnValuesToBeBetween",
                  {"column": "reference_share", "min_value": n_ref / params.train.batch_size - 1e-9,
                   "max_value": 1.0}),
            Check("ExpectColumnValuesToBeInSet", {"column": "unknown_ids", "value_set": [0]}),
            Check("ExpectColumnValuesToBeInSet", {"column": "heldout_ids", "value_set": [0]}),
        ]
    raise ValueError(f"unknown record kind {kind!r}; known: {KINDS}")


# --------------------------------------------------------------------------- running


_definitions: dict[tuple, Any] = {}


def _definition(kind: str, checks: tuple[Check, ...]):
    """The validation definition for a suite, built once per process and reused for every
    batch of that kind (the checks stay the same through a run): building a suite, its
    asset and its definition on the GX context cost about as much as validating a batch."""
    import json

    import great_expectations as gx
    import great_expectations.expectations as gxe

    key = (kind, tuple((c.name, json.dumps(c.kwargs, sort_keys=True)) for c in checks))
    if key not in _definitions:
        ctx = _context()
        name = f"{kind}-{next(_serial)}"  # assets and suites need unique names per context
        suite = ctx.suites.add(gx.ExpectationSuite(name=name))
        for c in checks:
            suite.add_expectation(getattr(gxe, c.name)(**c.kwargs))
        # A data source per definition: replacing a shared one would orphan the assets of the
        # definitions already cached.
        source = ctx.data_sources.add_pandas(f"selfloop-{name}")
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        _definitions[key] = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch,
                                                                                   suite=suite))
    return _definitions[key]


def run_checks(kind: str, frame, checks: list[Check], path: Path, out: Path | None = None) -> dict:
    """Validate ``frame`` (from ``path``); save the result to ``out``; raise on failure."""
    missing = [c for c in {c.kwargs.get("column") for c in checks} if c and c not in frame.columns]
    fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": ["id"]}
    result = _definition(kind, tuple(checks)).run(batch_parameters={"dataframe": frame}, result_format=fmt)
    failures = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        idx = r.result.get("unexpected_index_list") or []
        ids = list(dict.fromkeys(row.get("id") for row in idx if isinstance(row, dict)))
        failures.append({
            "expectation": cfg.type,
            "column": cfg.kwargs.get("column"),
            "count": r.result.get("unexpected_count") if r.result.get("unexpected_count") is not None
            else (1 if cfg.kwargs.get("column") in missing else 0),
            "ids": ids[:MAX_IDS_SHOWN],
        })
    # The file is named relative to the generation directory (the summary sits in its
    # validation/ folder), so a replay from another directory writes the same bytes.
    shown = os.path.relpath(path, out.parent.parent) if out is not None else str(path)
    summary = {
        "kind": kind, "file": shown, "rows": len(frame), "success": bool(result.success),
        "expectations": len(checks), "failures": failures,
    }
    if out is not None:
        write_json(out, summary)
    if not result.success:
        raise ValidationFailed(kind, path, failures)
    return summary


def skipped(kind: str, path: Path, out: Path | None) -> dict:
    """``run.gates`` off: no suite runs; the summary says so (and the file still exists, so a
    versioned run has the same files either way)."""
    shown = os.path.relpath(path, out.parent.parent) if out is not None else str(path)
    summary = {"kind": kind, "file": shown, "skipped": True, "success": True}
    if out is not None:
        write_json(out, summary)
    return summary


def validate_records(kind: str, records: list[dict], path: Path, params: Params, heldout_ids: set[str],
                     out: Path | None = None) -> dict:
    if not params.run.gates:
        return skipped(kind, path, out)
    frame = record_frame(records, heldout_ids)
    return run_checks(kind, frame, checks_for(kind, params, heldout_ids), path, out)


def validate_mix(mix: list[dict], by_id: dict[str, dict], path: Path, params: Params,
                 heldout_ids: set[str], pool_nonempty: bool, out: Path | None = None) -> dict:
    if not params.run.gates:
        return skipped("mix", path, out)
    frame = mix_frame(mix, by_id, heldout_ids)
    return run_checks("mix", frame, checks_for("mix", params, heldout_ids, pool_nonempty), path, out)
