"""The report a user looks at: one self-contained HTML page (inline CSS, plots as base64
PNG) for a finished or running loop directory. ``collect`` reads the run's files into a
plain dict, ``report_html.render`` turns that into the page, ``write_report`` does both.

Read: params.json, results.json, mlflow.json, gen_000/eval.json, and for each generation
that finished (its metrics.json exists) gen_NNN/{metrics,monitor,plan}.json and
control/gen_NNN/metrics.json; benchmarks/results/*.json of the project the run belongs to."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from selfloop.records import read_json, write_text
from selfloop.workspace import Workspace

GEN_DIR = re.compile(r"gen_(\d{3,})$")


class NoRun(ValueError):
    """The directory holds no selfloop run."""


def _json(path: Path) -> dict | None:
    """A JSON file's content; None when it is missing or unreadable (a run may be writing it)."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _generations(base: Path) -> list[tuple[int, Path]]:
    """(generation, directory) of every gen_NNN under ``base`` whose metrics.json exists, in order."""
    if not base.is_dir():
        return []
    found = [(int(m.group(1)), d) for d in base.iterdir() if (m := GEN_DIR.match(d.name)) and d.is_dir()]
    return sorted((g, d) for g, d in found if g > 0 and (d / "metrics.json").exists())


def _loop_generation(d: Path) -> dict | None:
    m = _json(d / "metrics.json")
    if m is None:
        return None
    monitor = _json(d / "monitor.json") or {}
    plan = _json(d / "plan.json") or {}
    return {**m, "signals": monitor.get("signals", {}),
            "sampling": {k: plan[k] for k in ("temperature", "top_p", "samples") if k in plan}}


def _model_summary(model: dict) -> str:
    if model.get("path"):
        return str(model["path"])
    shape = ", ".join(f"{k}={model[k]}" for k in ("n_layer", "n_embd", "n_head") if k in model)
    return f"GPT-2 from scratch ({shape})" if shape else "-"


def _status(results: dict | None, done: int, planned: int | None) -> str:
    if results is None:
        return "running or interrupted (no results.json yet)"
    if results.get("stopped"):
        return f"finished early: {results['stopped']}"
    if planned is not None and done < planned:
        return f"{done} of {planned} generations (an earlier results.json: resumed and running?)"
    return "finished"


def _git_commit(root: Path, params: dict, state: dict | None) -> tuple[str, str]:
    """(commit, where it came from): what the run recorded, else the project's commit now."""
    for name, src in (("params.json", params), ("mlflow.json", state or {})):
        if src.get("git_commit"):
            return str(src["git_commit"]), f"recorded in {name}"
    from selfloop.recording import git_commit, project_root

    now = git_commit(project_root(Workspace(root)))
    return now, "the project's commit when the report was written"


def benchmarks(root: Path) -> list[dict]:
    """benchmarks/results/*.json of the project the run belongs to: [{file, data}], by name."""
    from selfloop.recording import project_root

    results = project_root(Workspace(root)) / "benchmarks" / "results"
    out = []
    for f in sorted(results.glob("*.json")) if results.is_dir() else []:
        data = _json(f)
        if isinstance(data, dict):
            out.append({"file": f.name, "path": str(f), "data": data})
    return out


def collect(root: Path) -> dict:
    """Everything the page shows, from the run's files (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise NoRun(f"{root}: no such run directory")
    ws = Workspace(root)
    params = _json(root / "params.json")
    base = _json(ws.gen(0) / "eval.json")
    if params is None and base is None:
        raise NoRun(f"{root} holds no selfloop run (neither params.json nor gen_000/eval.json); "
                    "pass a run's directory, e.g. runs/default")
    params = params or {}
    base_levels = (base or {}).get("levels")
    loop = [m for _, d in _generations(root) if (m := _loop_generation(d)) is not None]
    control = [m for _, d in _generations(root / "control") if (m := _json(d / "metrics.json")) is not None]
    levels = [str(lv) for lv in params.get("domain", {}).get("levels", [])] or sorted(
        (base_levels or (loop[0]["eval"] if loop else {})).keys(), key=int)
    results, state = _json(ws.results()), _json(root / "mlflow.json")
    planned = params.get("run", {}).get("iterations")
    commit, commit_source = _git_commit(root, params, state)
    return {
        "workdir": str(root.resolve()),
        "name": root.resolve().name,
        "domain": params.get("domain", {}).get("name", "-"),
        "model": _model_summary(params.get("model", {})),
        "levels": levels,
        "iterations": {"done": len(loop), "planned": planned},
        "status": _status(results, len(loop), planned),
        "git_commit": commit,
        "git_commit_source": commit_source,
        "mlflow_run_id": (state or {}).get("run_id"),
        "tracked": bool(params.get("track", {}).get("mlflow")),
        "written": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "base": base_levels,
        "loop": loop,
        "control": control,
        "results": results,
        "benchmarks": benchmarks(root),
    }


def write_report(root: Path, out: Path | None = None) -> Path:
    """Collect and render the report of the run in ``root`` to ``out`` (default:
    ROOT/report.html). Returns the path written. Raises NoRun."""
    from selfloop.report_html import render

    out = Path(out) if out else Path(root) / "report.html"
    html = render(collect(Path(root)))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, html)
    return out


def attach(root: Path, path: Path) -> str | None:
    """Attach the report ``path`` to the loop's MLflow parent run when the run was tracked
    (ROOT/mlflow.json exists and params.json has track.mlflow on). Returns the run id, or
    None when the run was not tracked. Raises TrackingError when the store is unusable."""
    from selfloop.config import saved_params
    from selfloop.recording import Recorder

    root = Path(root)
    state, params = _json(root / "mlflow.json"), _json(root / "params.json")
    if not state or not params or not params.get("track", {}).get("mlflow"):
        return None
    tracker = Recorder(saved_params(params), Workspace(root)).tracker
    tracker.log_report(state["run_id"], Path(path))
    return state["run_id"]
