"""Ablations (``selfloop ablate`` / ``make ablate``): several arms of the loop, each in its own
run directory, all continuing from ONE base checkpoint, so that only what an arm changes
differs between them.

1. ``<workdir>/base``: one run with ``run.iterations=0`` (starting checkpoint, reference data,
   held-out sets, base model, its evaluation); skipped when already complete.
2. ``<workdir>/<arm>``: seeded with the base run's ``data/``, ``init_model/`` and ``gen_000/``
   (hard links where possible: they are only ever read, and every file is replaced by an
   atomic rename, never written in place) and the arm's own ``params.json``; then
   ``loop.run(arm_params, resume=True)`` continues from generation 1. Arms run as parallel
   processes; an arm already complete is not run again, a partial one resumes.
3. The report (``selfloop.ablate_report``): results.json, table.md, accuracy.png, diversity.png.

An arm may not override what shaped the base (``BASE_SHAPING``): its generation 0 would then
not be the shared checkpoint."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

from selfloop import loop
from selfloop.config import ConfigError, Params, load_params, to_dict, with_added_keys
from selfloop.records import read_json, write_json
from selfloop.terminate import sigterm_raises
from selfloop.workspace import Workspace

# Every arm: no DVC, no MLflow, no control arm (the default arm's control is the control),
# one torch thread per process.
COMMON = ("track.dvc=false", "track.mlflow=false", "run.control=false", "run.threads=1")

ARMS: dict[str, tuple[str, ...]] = {
    # params.yaml as it is, with the loop's control arm (reference data only) beside it
    "default": ("run.control=true",),
    # no reference data in the mix, one greedy answer per problem, every call train.steps long
    # however small the pool (the cap on passes is a guard too); the monitor only records
    "collapse": ("train.reference_fraction=0", "curate.selection=greedy", "train.max_epochs=0",
                 "monitor.act=false"),
    # the same, with the monitor's interventions on
    "collapse_monitor": ("train.reference_fraction=0", "curate.selection=greedy", "train.max_epochs=0",
                         "monitor.act=true"),
    # the pool holds only the last generation's accepted answers
    "replace": ("curate.accumulate=false",),
    # every answer passes unread; the monitor only records (its audit would stop it at once)
    "no_verifier": ("verify.verifier=none", "monitor.act=false"),
    # stronger answer-template balancing than the default's 0.25 (train.template_balance)
    "balance": ("train.template_balance=0.5",),
    # each generation trains from the one it sampled from, not from the base model
    "continue": ("train.start=previous",),
    # the default until the cap on passes over the pool: every call train.steps long, so a
    # generation-1 pool is seen about 30 times (answers that dip below generation 1's first)
    "uncapped": ("train.max_epochs=0",),
}

# What the shared generation 0 depends on: its data, its model, its evaluation.
BASE_SHAPING = ("reference", "bootstrap", "model", "domain", "evaluate", "run.seed", "run.device")
SEEDED = ("data", "init_model", "gen_000")
# In each arm's directory: the command that made the arm and the arm's overrides, written when
# it is seeded, so that a report rendered later from the files (--report-only) can say what
# made every arm, even arms made by different commands.
MADE_BY = "made_by.json"


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...]
    params: Params

    @property
    def workdir(self) -> Path:
        return Path(self.params.run.workdir)


def parse_arm(spec: str) -> tuple[str, tuple[str, ...]]:
    """A user-defined arm from ``NAME:SECTION.KEY=VALUE[,SECTION.KEY=VALUE...]`` (a comma
    starts a new override only where ``section.key=`` follows, so list values keep theirs)."""
    name, sep, rest = spec.partition(":")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ValueError(f"--arm {spec!r}: expected NAME:SECTION.KEY=VALUE[,SECTION.KEY=VALUE...] "
                         "with NAME a Python-style identifier")
    if name in ARMS or name in ("base", "control"):
        raise ValueError(f"--arm {spec!r}: {name!r} is taken by a built-in arm or the base run")
    overrides = tuple(o.strip() for o in re.split(r",(?=\s*\w+\.\w+\s*=)", rest) if o.strip())
    if not overrides or any("=" not in o or "." not in o.split("=", 1)[0] for o in overrides):
        raise ValueError(f"--arm {spec!r}: every override must be SECTION.KEY=VALUE")
    return name, overrides


def check_overrides(name: str, overrides: Sequence[str]) -> None:
    """Refuse an arm that changes what made the shared base checkpoint."""
    bad = [o for o in overrides
           if any(o.split("=", 1)[0].strip() == s or o.startswith(f"{s}.") for s in BASE_SHAPING)]
    if bad:
        raise ValueError(f"arm {name!r} overrides {bad}, which shape the shared base checkpoint "
                         f"({', '.join(BASE_SHAPING)}); set those for all arms with --set instead")


def base_params(params_path: str | Path | None, sets: Sequence[str], workdir: Path) -> Params:
    return load_params(params_path, [*sets, *COMMON, "run.iterations=0", f"run.workdir={workdir / 'base'}"])


def make_arms(params_path: str | Path | None, sets: Sequence[str], iterations: int, workdir: Path,
              arms: Mapping[str, Sequence[str]]) -> list[Arm]:
    """Each arm's parameters: params.yaml, then ``sets``, then ``COMMON``, then the arm's own."""
    out = []
    for name, overrides in arms.items():
        check_overrides(name, overrides)
        p = load_params(params_path, [*sets, *COMMON, *overrides, f"run.iterations={iterations}",
                                      f"run.workdir={workdir / name}"])
        out.append(Arm(name, tuple(overrides), p))
    return out


def _shaping(data: dict) -> dict:
    return {s: data[s] if "." not in s else data[s.split(".")[0]][s.split(".")[1]] for s in BASE_SHAPING}


def check_base(base: Params) -> None:
    """An existing base run must have been made with the same base-shaping parameters."""
    saved = Path(base.run.workdir) / "params.json"
    if not saved.exists():
        return
    import json

    # a base made before a key existed reads as what it did then (config.ADDED_KEYS)
    old = _shaping(with_added_keys(read_json(saved))[0])
    new = _shaping(json.loads(json.dumps(to_dict(base))))
    diff = [k for k in new if old[k] != new[k]]
    if diff:
        raise ValueError(f"{saved.parent} was made with other {diff}: remove it (and the arms beside "
                         "it) or pass another --workdir")


def complete(workdir: Path, iterations: int | None = None) -> bool:
    """A run is complete when its results.json exists (written last, also after an early stop)
    and, given ``iterations``, it has that many generations or stopped early (a finished arm
    asked for more iterations is resumed to add them)."""
    path = workdir / "results.json"
    if not path.exists():
        return False
    if iterations is None:
        return True
    results = read_json(path)
    return bool(results.get("stopped")) or len(results.get("loop", [])) >= iterations


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def seed_arm(base: Workspace, arm: Arm, command: str = "") -> None:
    """The arm's directory starts as the base run's generation 0, ``MADE_BY`` and the arm's
    params.json (written last: without it the seeding is redone)."""
    root = arm.workdir
    if (root / "params.json").exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    for name in SEEDED:
        shutil.rmtree(root / name, ignore_errors=True)
        shutil.copytree(base.root / name, root / name, copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns(".*.tmp", ".lock"))
    write_json(root / MADE_BY, {"arm": arm.name, "command": command, "overrides": list(arm.overrides)})
    write_json(root / "params.json", to_dict(arm.params))


class ArmReporter(loop.NullReporter):
    """One line per finished generation, prefixed with the arm's name (processes share stdout)."""

    def __init__(self, arm: str, levels: list[int]) -> None:
        self.arm, self.levels = arm, levels

    def iteration(self, row: dict) -> None:
        from selfloop.cli import format_row

        print(f"[{self.arm}] {format_row(row, self.levels)}", flush=True)


def run_arm(arm: Arm) -> None:
    """One arm, resumed from its seeded directory (the body of an arm's process)."""
    loop.run(arm.params, ArmReporter(arm.name, list(arm.params.domain.levels)), resume=True)


def _arm_process(arm: Arm) -> None:
    # SIGTERM as an exception, so the loop stops its own control process before exiting
    with sigterm_raises():
        run_arm(arm)


def run_arms(arms: Sequence[Arm], workers: int,
             target: Callable[[Arm], None] = _arm_process) -> dict[str, int]:
    """Run arms as processes (``target``), at most ``workers`` processes at a time (an arm with
    the control arm on counts two), in the given order; returns each arm's exit code.
    ``workers=1``: one after another in this process."""
    if workers <= 1:
        codes = {}
        for arm in arms:
            try:
                run_arm(arm)
                codes[arm.name] = 0
            except Exception as e:
                print(f"[{arm.name}] failed: {e}", file=sys.stderr, flush=True)
                codes[arm.name] = 1
        return codes
    ctx = mp.get_context("spawn")
    pending, running, codes, free = list(arms), {}, {}, workers

    def cost(a: Arm) -> int:
        return min(workers, 2 if a.params.run.control else 1)

    # a SIGTERM (kill, a CI timeout, a scheduler's cancel) must reach the `finally` below
    with sigterm_raises():
        try:
            while pending or running:
                while pending and cost(pending[0]) <= free:
                    arm = pending.pop(0)
                    proc = ctx.Process(target=target, args=(arm,), name=f"selfloop-ablate-{arm.name}")
                    proc.start()
                    running[proc.sentinel] = (arm, proc)
                    free -= cost(arm)
                for sentinel in wait(list(running)):
                    arm, proc = running.pop(sentinel)
                    proc.join()
                    codes[arm.name] = proc.exitcode
                    free += cost(arm)
                    if proc.exitcode:
                        print(f"[{arm.name}] failed (exit code {proc.exitcode}); see its lines above",
                              file=sys.stderr, flush=True)
        finally:
            for _, proc in running.values():
                with contextlib.suppress(Exception):
                    proc.terminate()
                    proc.join(10)
    return codes


def ablate(params_path: str | Path | None = "params.yaml", sets: Sequence[str] = (), iterations: int = 10,
           arms: Mapping[str, Sequence[str]] | None = None, workers: int = 2,
           workdir: str | Path = "runs/ablate", out: str | Path = "reports/ablation", command: str = "",
           log: Callable[[str], None] = print, report_only: bool = False) -> dict:
    """Base run, arms, report. Returns {"ran": arms run now, "skipped": arms already complete,
    "failed": {arm: exit code}, "results": the report's results, "files": what it wrote}.

    ``report_only``: only write the report, from the arm directories as they are (nothing is
    checked against today's parameters or run): to re-render runs made by an earlier version,
    or arms still running (see ``_report_only``)."""
    from selfloop.ablate_report import write_report

    workdir = Path(workdir)
    chosen = dict(ARMS if arms is None else arms)
    base = base_params(params_path, sets, workdir)
    todo = make_arms(params_path, sets, iterations, workdir, chosen)
    # the report's numpy work, here and in --report-only, beside arms that use a core each
    loop.set_threads(base.run.threads)
    if report_only:
        return _report_only(Path(base.run.workdir), todo, Path(out), command, log)
    check_base(base)
    for arm in todo:  # refuse now, not after the base: an arm run with other parameters
        try:
            loop.check_resume(Workspace(arm.workdir), arm.params)
        except ConfigError as e:
            raise ConfigError(f"arm {arm.name}: {e}; remove {arm.workdir} to run it again with "
                              "these parameters, pass another --workdir, or --report-only to only "
                              "write the report of the runs as they are") from None
    base_ws = Workspace(Path(base.run.workdir))
    if complete(base_ws.root):
        log(f"base: complete in {base_ws.root}, reused")
    else:
        log(f"base: data, base model and its evaluation in {base_ws.root}")
        loop.run(base, ArmReporter("base", list(base.domain.levels)), resume=True)
    skipped = [a.name for a in todo if complete(a.workdir, iterations)]
    pending = [a for a in todo if a.name not in skipped]
    for name in skipped:
        log(f"{name}: complete in {workdir / name}, not run again")
    for arm in pending:
        seed_arm(base_ws, arm, command)
    if pending:
        log(f"running {', '.join(a.name for a in pending)}: {iterations} iterations each, "
            f"{workers} process(es) at a time")
    codes = run_arms(pending, workers)
    failed = {k: v for k, v in codes.items() if v}
    made_by = {a.name: _made_by(a).get("command", command) for a in todo}  # an earlier command's arm keeps it
    results, files = write_report(base_ws.root, {a.name: a.workdir for a in todo},
                                  {a.name: list(a.overrides) for a in todo}, Path(out), made_by)
    return {"ran": [a.name for a in pending], "skipped": skipped, "failed": failed,
            "results": results, "files": files}


def _made_by(arm: Arm) -> dict:
    """The arm's ``MADE_BY`` record; empty for an arm seeded before the file existed."""
    path = arm.workdir / MADE_BY
    return read_json(path) if path.exists() else {}


def _report_only(base: Path, arms: Sequence[Arm], out: Path, command: str,
                 log: Callable[[str], None]) -> dict:
    """The report from the arm directories as they are. What made each arm (the command, its
    overrides) comes from the arm's ``MADE_BY``; for an arm seeded before that file existed,
    from the previous report in ``out`` when that report is of these same directories;
    otherwise the command is given as unknown and the overrides are today's arm definition."""
    from selfloop.ablate_report import write_report

    if not (base / "gen_000" / "eval.json").exists():
        raise ValueError(f"no finished base run in {base}: nothing to report")
    present = []
    for a in arms:  # params.json is written last when an arm is seeded
        if (a.workdir / "params.json").exists() and (a.workdir / "gen_000" / "eval.json").exists():
            present.append(a)
        else:
            log(f"{a.name}: no run in {a.workdir}, left out of the report")
    previous = read_json(out / "results.json") if (out / "results.json").exists() else {}
    workdirs = {a.name: a.workdir.resolve() for a in present}
    earlier = {name: arm for name, arm in previous.get("arms", {}).items() if name in workdirs}
    same_runs = bool(earlier) and all(Path(arm["workdir"]).resolve() == workdirs[name]
                                      for name, arm in earlier.items())
    made = {a.name: record for a in present if (record := _made_by(a))}
    unknown = f"unknown (no earlier report of {base.parent} in {out})"
    made_by, overrides = {}, {}
    for a in present:
        if a.name in made:
            made_by[a.name], overrides[a.name] = made[a.name]["command"], made[a.name]["overrides"]
        elif same_runs and a.name in earlier:
            made_by[a.name] = earlier[a.name].get("made_by", previous.get("command", ""))
            overrides[a.name] = earlier[a.name]["overrides"]
        else:
            made_by[a.name], overrides[a.name] = unknown, list(a.overrides)
    results, files = write_report(base, {a.name: a.workdir for a in present}, overrides, out, made_by,
                                  report_command=command)
    return {"ran": [], "skipped": [a.name for a in present if complete(a.workdir)], "failed": {},
            "reported": [a.name for a in present], "results": results, "files": files}
