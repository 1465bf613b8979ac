"""The loop as Prefect flows. ``python -m flows.loop`` (what ``make run`` calls, against the
project-local server infra/with-prefect-server.sh starts) runs it; ``make serve`` serves the
deployments in prefect.yaml so runs can be scheduled or triggered from the UI with parameters."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run

from selfloop import loop
from selfloop.cli import RichReporter, format_reasons, format_row, results_table
from selfloop.config import load_params, params_from_dict, to_dict
from selfloop.meter import Meter
from selfloop.recording import Recorder
from selfloop.workspace import Workspace
from tasks import steps

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"


def metrics_table(metrics: dict) -> list[dict]:
    """One row per level for the UI: accuracy, pass@k, diversity (n-gram Vendi of the model's
    samples and of the accepted answers), and the generation's totals."""
    rows = []
    for level, e in metrics["eval"].items():
        div = metrics.get("diversity", {}).get(level, {})
        rows.append({
            "level": int(level), "greedy_acc": round(e["greedy_acc"], 4),
            "pass_at_k": round(e["pass_at_k"], 4), "problems": metrics.get("plan", {}).get(level, 0),
            "acceptance": round(metrics.get("verify", {}).get("acceptance_rate", 0.0), 4),
            "accepted": metrics.get("curate", {}).get("accepted", 0),
            "pool": metrics.get("curate", {}).get("pool", 0),
            "vendi_samples": div.get("samples", {}).get("vendi_ngram"),
            "vendi_accepted": div.get("accepted", {}).get("vendi_ngram"),
            "monitor": "; ".join(f"{d['action']} ({d['reason']})" for d in metrics.get("monitor", [])) or "-",
            "seconds": round(sum(metrics.get("seconds", {}).values()), 1),
        })
    return rows


class _LogReporter(loop.NullReporter):
    """A row per generation in the flow run's log (the UI shows it)."""

    def __init__(self, levels: list[int]) -> None:
        self.levels = levels

    def iteration(self, row: dict) -> None:
        get_run_logger().info("\n".join([format_row(row, self.levels), *format_reasons(row)]))


@flow(name="selfloop-iteration")
def iteration_flow(params: dict, workdir: str, generation: int) -> dict:
    """plan -> generate -> verify (+gate) -> curate (+gate) -> train -> evaluate, one task each."""
    p = params_from_dict(params)
    stats, meter = {}, Meter()
    for name, step in steps.STEPS:
        with meter(name):
            stats.update(step(p, workdir, generation))
    metrics = loop.finish_iteration(Workspace(Path(workdir)), generation, stats, meter.times,
                                    memory=meter.memory)
    for d in metrics.get("monitor", []):  # automations can react to these
        emit_event(event=f"selfloop.monitor.{d['action']}", payload={**d, "generation": generation},
                   resource={"prefect.resource.id": f"selfloop.run.{Path(workdir).resolve()}"})
    create_table_artifact(metrics_table(metrics), key=f"selfloop-gen-{generation:03d}",
                          description=f"Generation {generation}: held-out accuracy per level")
    return metrics


@flow(name="selfloop-loop")
def loop_flow(
    iterations: int | None = None,
    domain: str | None = None,
    model_path: str | None = None,
    overrides: list[str] | None = None,
    workdir: str | None = None,
    resume: bool = False,
    fresh: bool = False,
) -> dict:
    """Bootstrap and ``iterations`` generations (defaults: params.yaml). ``overrides`` are
    ``section.key=value`` strings; ``workdir`` defaults to runs/<flow run name>."""
    log = get_run_logger()
    ov = list(overrides or [])
    if iterations is not None:
        ov.append(f"run.iterations={iterations}")
    if domain:
        ov.append(f"domain.name={domain}")
    if model_path:
        ov.append(f"model.path={model_path}")
    ov.append(f"run.workdir={workdir or f'runs/{flow_run.get_name() or int(time.time())}'}")
    params = load_params(PARAMS_FILE, ov)
    ws = Workspace(Path(params.run.workdir))
    log.info("run in %s: %s", ws.root, Recorder(params, ws).describe())
    with loop.claim(ws, params, resume=resume, fresh=fresh):
        results = loop.drive(
            params, ws, _LogReporter(params.domain.levels),
            prepare_fn=lambda p, w, r: steps.prepare(p, str(w.root)),
            base_fn=lambda p, w, r: steps.bootstrap(p, str(w.root)),
            iteration_fn=lambda p, w, g, r: iteration_flow(to_dict(p), str(w.root), g),
            recorder=steps.TaskRecorder(params, str(ws.root), str(flow_run.get_id())),
        )
        if results["stopped"]:
            log.info("stopped early: %s", results["stopped"])
    table = results_table(results, params.domain.levels)
    create_markdown_artifact(f"## Held-out greedy accuracy (pass@k)\n\n{table}\n",
                             key="selfloop-results", description=f"selfloop run in {ws.root}")
    log.info("results in %s\n%s", ws.results(), table)
    return results


def _warm_gates(overrides: list[str]) -> None:
    """Create the process's great-expectations context ahead of the first gate (when the
    gates are on). Best effort: a failure here shows again, with context, at the first gate."""
    import contextlib

    with contextlib.suppress(Exception):  # the first gate reports any failure properly
        if load_params(PARAMS_FILE, overrides).run.gates:
            from selfloop.validate import warm_up

            warm_up()


def wait_for_api(server_log: str, seconds: float = 120.0) -> None:
    """Wait until the Prefect API answers (the server was started beside this process by
    ``infra/with-prefect-server.sh --early``); a clear error if it never does."""
    import os

    import httpx

    url = os.environ["PREFECT_API_URL"].rstrip("/") + "/health"
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"selfloop: the Prefect server at {url} did not come up in {seconds:.0f} s; "
                             f"see {server_log}")
        time.sleep(0.25)


def main(argv: list[str] | None = None) -> int:
    """``make run``: the loop as this flow (fresh in runs/default unless told otherwise)."""
    import argparse
    import os

    from selfloop.config import ConfigError
    from selfloop.lock import RunLocked
    from selfloop.tracking import TrackingError
    from selfloop.validate import ValidationFailed
    from selfloop.versioning import DvcError, RunDirIgnored

    ap = argparse.ArgumentParser(prog="python -m flows.loop", description=main.__doc__)
    ap.add_argument("workdir", nargs="?", default="runs/default",
                    help="run directory (default: runs/default)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one parameter (repeatable)")
    ap.add_argument("--iterations", type=int, help="override run.iterations")
    ap.add_argument("--resume", action="store_true", help="continue a stopped run instead of replacing it")
    args = ap.parse_args(argv)
    if os.environ.get("SELFLOOP_WAIT_FOR_API"):
        # While the server starts (on the other core), pay great-expectations' import and
        # context (~5-10 s, otherwise spent inside the first task) instead of waiting idle.
        warm = threading.Thread(target=_warm_gates, args=(args.set,), daemon=True)
        warm.start()
        wait_for_api(os.environ["SELFLOOP_WAIT_FOR_API"])
        warm.join()
    rep = RichReporter(load_params(PARAMS_FILE).domain.levels)
    if rep.console.is_terminal:
        steps.use_reporter(rep)
    try:
        results = loop_flow(iterations=args.iterations, overrides=args.set, workdir=args.workdir,
                            resume=args.resume, fresh=not args.resume)
    except (ConfigError, RunLocked, RunDirIgnored) as e:
        rep.console.print(f"selfloop: {e}")
        return 2
    except ValidationFailed as e:
        rep.console.print(f"selfloop: {e}")
        return 3
    except (DvcError, TrackingError) as e:
        rep.console.print(f"selfloop: {e}\n(finished steps are kept: continue with --resume)")
        return 4
    levels = load_params(PARAMS_FILE, args.set).domain.levels
    rep.console.print("\nHeld-out greedy accuracy (pass@k in brackets)\n" + results_table(results, levels))
    rep.console.print(f"wall time {results['seconds']['total']:.0f}s; results in {args.workdir}/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
