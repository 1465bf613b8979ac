"""The ``selfloop`` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

QUIET_ENV = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
}


class RichReporter:
    """Progress bars per step and a table row per generation."""

    def __init__(self, levels: list[int]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(soft_wrap=True)  # rows stay whole when piped to a file
        self.levels = levels
        self.progress = Progress(
            TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=self.console, transient=True,
            disable=not self.console.is_terminal,  # bars only on a terminal; logs get the rows
        )
        self.task = None

    @contextlib.contextmanager
    def step(self, name: str, total: int | None = None) -> Iterator[None]:
        with self.progress:
            self.task = self.progress.add_task(name, total=total)
            try:
                yield
            finally:
                self.progress.remove_task(self.task)
                self.task = None

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)

    def iteration(self, row: dict) -> None:
        self.console.print(format_row(row, self.levels))
        for line in format_reasons(row):
            self.console.print(line, style="dim", markup=False, highlight=False)


def format_reasons(row: dict) -> list[str]:
    """One indented line per distinct monitor signal in a generation's row: its value against
    its threshold and the reason (a signal asking for two actions gives one line)."""
    seen, out = set(), []
    for d in row.get("monitor") or []:
        key = (d.get("signal"), d["reason"])
        if key in seen:
            continue
        seen.add(key)
        numbers = (f" {d['value']:.4g} (threshold {d['threshold']:.4g})"
                   if d.get("value") is not None and d.get("threshold") is not None else "")
        out.append(f"          {d['action'] if d['action'] == 'wait' else 'why'}: "
                   f"{d.get('signal', '?')}{numbers}: {d['reason']}")
    return out


def format_row(row: dict, levels: list[int]) -> str:
    ev = row["eval"]
    accs = "  ".join(
        f"L{lv} {ev[str(lv)]['greedy_acc']:6.1%} (p@{ev[str(lv)]['k']} {ev[str(lv)]['pass_at_k']:5.1%})"
        for lv in levels
    )
    extra = ""
    if "verify" in row:
        plan = ",".join(f"{k}:{v}" for k, v in row["plan"].items())
        extra = (f"  accept {row['verify']['acceptance_rate']:5.1%}  +{row['curate']['accepted']:>5}"
                 f" pool {row['curate']['pool']:>6}  plan[{plan}]")
    if row.get("monitor"):
        extra += "  monitor: " + ", ".join(
            f"{d['action']} ({d['signal']})" if d.get("signal") else d["action"] for d in row["monitor"])
    secs = sum(row.get("seconds", {}).values())
    return f"{row['arm']:>7} gen {row['generation']:>2}  {accs}{extra}  {secs:5.1f}s"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else ("-" if a == 0 else "inf")


def _cell(ev: dict | None, k: str) -> str:
    return "-" if ev is None else f"{ev[k]['greedy_acc']:.1%} ({ev[k]['pass_at_k']:.1%})"


def results_table(results: dict, levels: list[int]) -> str:
    """Markdown: held-out greedy accuracy (pass@k) of base, last loop and last control models."""
    base = results["base"]
    loop = results["loop"][-1] if results["loop"] else None
    ctl = results["control"][-1] if results["control"] else None
    lines = ["| level | base | loop (last) | control (last) | loop / base | loop / control |",
             "|---|---|---|---|---|---|"]
    for lv in levels:
        k = str(lv)
        acc = {name: ev[k]["greedy_acc"] for name, ev in (("base", base), ("loop", loop), ("ctl", ctl)) if ev}
        vs_base = _ratio(acc["loop"], acc["base"]) if loop else "-"
        vs_ctl = _ratio(acc["loop"], acc["ctl"]) if loop and ctl else "-"
        lines.append(f"| {lv} numbers | {_cell(base, k)} | {_cell(loop, k)} | {_cell(ctl, k)} | "
                     f"{vs_base} | {vs_ctl} |")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from selfloop.config import load_params
    from selfloop.loop import run

    overrides = list(args.set)
    if args.iterations is not None:
        overrides.append(f"run.iterations={args.iterations}")
    if args.workdir:
        overrides.append(f"run.workdir={args.workdir}")
    if args.no_control:
        overrides.append("run.control=false")
    params = load_params(args.params, overrides)
    workdir = Path(params.run.workdir)
    if args.fresh and args.resume:
        print("selfloop: --fresh and --resume exclude each other", file=sys.stderr)
        return 2
    if workdir.exists() and any(workdir.iterdir()) and not args.resume and not args.fresh:
        print(f"selfloop: {workdir} already holds a run; pass --resume to continue it, --fresh "
              "to replace it, or --workdir DIR to keep it", file=sys.stderr)
        return 2
    rep = RichReporter(params.domain.levels)
    rep.console.print(f"selfloop run -> {workdir}  ({params.run.iterations} iterations, "
                      f"control arm {'on' if params.run.control else 'off'})")
    from selfloop.recording import Recorder
    from selfloop.workspace import Workspace

    rep.console.print(Recorder(params, Workspace(workdir)).describe())
    rep.console.print("rows: arm, generation, held-out greedy accuracy per level (pass@k), acceptance, "
                      "accepted answers, pool size, problems per level, step seconds")
    results = run(params, rep, resume=args.resume and (workdir / "params.json").exists(),
                  fresh=args.fresh)
    rep.console.print("\nHeld-out greedy accuracy (pass@k in brackets)\n"
                      + results_table(results, params.domain.levels))
    rep.console.print(f"wall time {results['seconds']['total']:.0f}s; results in {workdir / 'results.json'}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    import shlex

    from selfloop.ablate import ARMS, ablate, parse_arm

    # built-in arms: --arms, else all of them unless --arm defines arms of its own
    names = ([a.strip() for a in args.arms.split(",") if a.strip()] if args.arms
             else [] if args.arm else list(ARMS))
    unknown = [a for a in names if a not in ARMS]
    if unknown:
        print(f"selfloop: unknown arm(s) {unknown}; arms: {', '.join(ARMS)}", file=sys.stderr)
        return 2
    if args.workers < 1 or args.iterations < 1:
        print("selfloop: --workers and --iterations must be >= 1", file=sys.stderr)
        return 2
    try:
        arms = {a: ARMS[a] for a in names}
        for spec in args.arm:
            name, overrides = parse_arm(spec)
            if name in arms:
                raise ValueError(f"--arm {spec!r}: arm {name!r} given twice")
            arms[name] = overrides
        out = ablate(args.params, args.set, args.iterations, arms, args.workers,
                     args.workdir, args.out, shlex.join(["selfloop", *args.argv]),
                     report_only=args.report_only)
    except ValueError as e:  # ConfigError included
        print(f"selfloop: {e}", file=sys.stderr)
        return 2
    print("\n" + (Path(args.out) / "table.md").read_text())
    print("wrote " + ", ".join(str(f) for f in out["files"]))
    if out["failed"]:
        print(f"selfloop: arm(s) failed: {out['failed']} (finished steps are kept: run again to resume)",
              file=sys.stderr)
        return 1
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from selfloop.lineage import RecordNotFound, format_lineage, lineage
    from selfloop.recording import model_versions
    from selfloop.workspace import Workspace

    try:
        ws = Workspace(Path(args.workdir))
        print(format_lineage(lineage(ws, args.record_id, model_versions(ws))))
    except RecordNotFound as e:
        print(f"selfloop: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    from selfloop.stages import run_stage

    try:
        run_stage(args.step, args.generation, args.arm, Path(args.workdir))
    except ValueError as e:
        print(f"selfloop: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_checkout(args: argparse.Namespace) -> int:
    from selfloop.versioning import DvcError, checkout

    try:
        paths = checkout(Path(args.workdir), args.generation)
    except DvcError as e:
        print(f"selfloop: {e}", file=sys.stderr)
        return 2
    print(f"restored generation {args.generation} of {args.workdir} as recorded in its dvc.lock:")
    for p in paths:
        print(f"  {Path(args.workdir) / p}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from selfloop.report import NoRun, attach, write_report
    from selfloop.tracking import TrackingError

    workdir = Path(args.workdir)
    try:
        out = write_report(workdir, Path(args.out) if args.out else None)
    except NoRun as e:
        print(f"selfloop: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    try:
        run_id = attach(workdir, out)
    except TrackingError as e:
        print(f"selfloop: {out} was written but not attached to MLflow: {e}", file=sys.stderr)
        return 4
    if run_id:
        print(f"attached it to MLflow run {run_id} (artifact {out.name})")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from selfloop.monitor_replay import caveats, replay, replay_params, table
    from selfloop.workspace import Workspace

    ws = Workspace(Path(args.workdir))
    params = replay_params(ws, args.set)
    rows = replay(ws, params)
    if not rows:
        print(f"selfloop: {args.workdir}: no generation has a monitor decision yet", file=sys.stderr)
        return 2
    print(table(rows, params.monitor.act, args.set, caveats(ws, params)))
    return 0


def main(argv: list[str] | None = None) -> int:
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    parser = argparse.ArgumentParser(prog="selfloop", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="bootstrap a base model and run N self-improvement iterations")
    r.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    r.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one parameter (repeatable), e.g. --set train.steps=100")
    r.add_argument("--iterations", type=int, help="override run.iterations")
    r.add_argument("--workdir", help="override run.workdir")
    r.add_argument("--no-control", action="store_true", help="skip the control arm")
    r.add_argument("--fresh", action="store_true", help="replace an existing run in the workdir")
    r.add_argument("--resume", action="store_true",
                   help="continue a stopped run in the workdir (same parameters); completed steps are kept")
    r.set_defaults(func=cmd_run)
    ab = sub.add_parser("ablate", help="ablation arms (default, collapse, collapse_monitor, replace, "
                        "no_verifier, balance, continue, uncapped) from one base checkpoint, with a report")
    ab.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    ab.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one parameter for the base and every arm (repeatable)")
    ab.add_argument("--iterations", type=int, default=10, help="iterations per arm (default: 10)")
    ab.add_argument("--arms", help="comma-separated built-in arms (default: all; none when --arm is given)")
    ab.add_argument("--arm", action="append", default=[], metavar="NAME:SECTION.KEY=VALUE[,...]",
                    help="an arm of your own: these overrides on top of params.yaml and --set, from the "
                    "same base (repeatable; e.g. --arm hot:plan.temperature=1.2)")
    ab.add_argument("--workers", type=int, default=2,
                    help="processes at a time (default: 2; the default arm with its control counts 2; "
                    "1: arms one after another in this process)")
    ab.add_argument("--workdir", default="runs/ablate", help="run directories (default: runs/ablate)")
    ab.add_argument("--out", default="reports/ablation", help="report directory (default: reports/ablation)")
    ab.add_argument("--report-only", action="store_true",
                    help="only write the report from the arm directories as they are (no checks, nothing "
                    "run): for runs made by an earlier version, or arms still running")
    ab.set_defaults(func=cmd_ablate)
    li = sub.add_parser("lineage", help="where a record came from and which checkpoints trained on it")
    li.add_argument("record_id")
    li.add_argument("--workdir", default="runs/default", help="the run's directory (default: runs/default)")
    li.set_defaults(func=cmd_lineage)
    st = sub.add_parser("stage", help="run one step of a recorded run (what dvc.yaml stages call)")
    st.add_argument("step", help="init, data, bootstrap, history (no generation); plan, generate, "
                    "verify, curate, train, evaluate, measure, monitor (--arm control: mix, train, evaluate)")
    st.add_argument("generation", nargs="?", type=int, help="the generation (steps after bootstrap)")
    st.add_argument("--arm", default="loop", choices=["loop", "control"])
    st.add_argument("--workdir", default=".", help="the run's directory (default: the current one)")
    st.set_defaults(func=cmd_stage)
    co = sub.add_parser("checkout", help="restore a generation's data and checkpoint from DVC")
    co.add_argument("generation", type=int)
    co.add_argument("--workdir", default="runs/default", help="the run's directory (default: runs/default)")
    co.set_defaults(func=cmd_checkout)
    mo = sub.add_parser("monitor", help="replay the collapse monitor over a recorded run at other "
                        "thresholds: which generations it would flag (nothing is run)")
    mo.add_argument("workdir", nargs="?", default="runs/default",
                    help="the run's directory (default: runs/default)")
    mo.add_argument("--set", action="append", default=[], metavar="monitor.KEY=VALUE",
                    help="a threshold to replay with (repeatable; the settings that decide, not "
                    "monitor.act or the steps a plan applies), e.g. --set monitor.headroom_floor=0.8")
    mo.set_defaults(func=cmd_monitor)
    rp = sub.add_parser("report", help="one self-contained HTML page on a run: accuracy, acceptance, "
                        "diversity, training mix, monitor decisions, timings, benchmarks")
    rp.add_argument("workdir", nargs="?", default="runs/default",
                    help="the run's directory (default: runs/default)")
    rp.add_argument("--out", help="the HTML file to write (default: WORKDIR/report.html)")
    rp.set_defaults(func=cmd_report)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from selfloop.config import ConfigError
    from selfloop.lock import RunLocked
    from selfloop.tracking import TrackingError
    from selfloop.validate import ValidationFailed
    from selfloop.versioning import DvcError, RunDirIgnored

    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, RunLocked, RunDirIgnored) as e:
        print(f"selfloop: {e}", file=sys.stderr)
        return 2
    except (DvcError, TrackingError) as e:
        print(f"selfloop: {e}\n(finished steps are kept: fix the cause and continue with --resume; "
              "--set track.dvc=false / track.mlflow=false runs without DVC / MLflow)", file=sys.stderr)
        return 4
    except ValidationFailed as e:
        print(f"selfloop: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
