"""What orchestration, versioning, tracking and validation cost: the same loop run as
``make run`` runs it (Prefect flow against a project-local server, DVC, MLflow,
great-expectations gates) and as the plain core loop (``selfloop run`` with all four off),
side by side in one benchmark run, alternating which goes first.

    python benchmarks/overhead.py [--repeats N] [--set section.key=value ...]

Writes benchmarks/results/overhead.json (and the name given by --name)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
PLAIN_OFF = ["run.gates=false", "track.dvc=false", "track.mlflow=false"]
WARMUP = ["run.iterations=1", "reference.train_per_level={3: 50}", "reference.heldout_per_level=8",
          "domain.levels=[3]", "bootstrap.steps=5", "plan.problems=10", "plan.samples=2", "train.steps=2",
          "evaluate.pass_k=2", "measure.embeddings=false"]


def commands(overrides: list[str]) -> dict[str, list[str]]:
    sets = [a for o in overrides for a in ("--set", o)]
    return {
        "plain": [str(BIN / "selfloop"), "run", "--fresh", "--workdir", "runs/bench-plain", *sets,
                  *[a for o in PLAIN_OFF for a in ("--set", o)]],
        "full": [str(ROOT / "infra" / "with-prefect-server.sh"), "--early", str(BIN / "python"), "-m",
                 "flows.loop", "runs/bench-full", *sets],
    }


def timed(cmd: list[str], log: Path) -> tuple[float, float]:
    """Wall seconds, and CPU seconds (user + system) of the command and every process it
    started (the loop, the control arm, the Prefect server, DVC): the machine is shared
    and noisy, and CPU time is much less sensitive to other tenants than wall time."""
    env = {**os.environ, "SELFLOOP_PREFECT_PORT": "4209"}
    env.pop("PREFECT_API_URL", None)  # the full run starts its own server, as make run does
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    sec = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return sec, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def accuracies(workdir: str) -> list:
    r = json.loads((ROOT / workdir / "results.json").read_text())
    return [r["base"], r["loop"], r["control"]]


def step_costs(workdir: str) -> dict:
    """An iteration's time and peak memory by step in a finished run: per step, the median
    seconds over its generations and the largest peak RSS (MiB; the loop process)."""
    runs = [json.loads(p.read_text()) for p in sorted((ROOT / workdir).glob("gen_*/metrics.json"))]
    runs = [m for m in runs if m["generation"] > 0]
    steps = list(runs[0]["seconds"]) if runs else []
    results = json.loads((ROOT / workdir / "results.json").read_text())
    return {
        "generations": len(runs),
        "iteration_s": round(statistics.median(sum(m["seconds"].values()) for m in runs), 2),
        "seconds_by_step": {k: round(statistics.median(m["seconds"][k] for m in runs), 3) for k in steps},
        "peak_rss_mb_by_step": {k: max(m.get("memory", {}).get(k, 0.0) for m in runs) for k in steps},
        "before_the_loop_s": {k: v for k, v in results["seconds"].items() if k in ("data", "bootstrap")},
        "before_the_loop_peak_rss_mb": results.get("memory", {}),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--name", default="overhead")
    args = ap.parse_args(argv)
    cmds = commands(args.set)
    logs = ROOT / "benchmarks" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # Untimed: a tiny full run first creates the Prefect server's and MLflow's databases
    # (one-time costs of a fresh project, ~10-20 s), so the pairs compare steady states.
    warm = commands([*args.set, *WARMUP])["full"]
    warm[warm.index("runs/bench-full")] = "runs/bench-warmup"
    timed(warm, logs / f"{args.name}-warmup.log")
    shutil.rmtree(ROOT / "runs/bench-warmup", ignore_errors=True)
    times: dict[str, list[float]] = {"plain": [], "full": []}
    cpu: dict[str, list[float]] = {"plain": [], "full": []}
    for i in range(args.repeats):
        for arm in (("plain", "full") if i % 2 == 0 else ("full", "plain")):
            sec, cpu_s = timed(cmds[arm], logs / f"{args.name}-{arm}-{i}.log")
            times[arm].append(round(sec, 1))
            cpu[arm].append(round(cpu_s, 1))
            print(f"{arm:5} run {i + 1}/{args.repeats}: {sec:.1f}s wall, {cpu_s:.1f}s CPU", flush=True)
    same = accuracies("runs/bench-plain") == accuracies("runs/bench-full")
    steps = {arm: step_costs(f"runs/bench-{arm}") for arm in ("plain", "full")}
    full_results = json.loads((ROOT / "runs/bench-full/results.json").read_text())
    plain, full = statistics.median(times["plain"]), statistics.median(times["full"])
    argv_shown = " ".join(["python benchmarks/overhead.py", f"--repeats {args.repeats}",
                           *[f"--set {o}" for o in args.set]] + ([f"--name {args.name}"]
                                                                 if args.name != "overhead" else []))
    out = {
        "command": argv_shown, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "plain_command": " ".join(cmds["plain"]).replace(str(ROOT) + "/", ""),
        "full_command": " ".join(cmds["full"]).replace(str(ROOT) + "/", ""),
        "plain_seconds": times["plain"], "full_seconds": times["full"],
        "median_plain_s": plain, "median_full_s": full, "ratio": round(full / plain, 3),
        "overhead_percent": round(100 * (full / plain - 1), 1),
        "plain_cpu_seconds": cpu["plain"], "full_cpu_seconds": cpu["full"],
        "cpu_ratio": round(statistics.median(cpu["full"]) / statistics.median(cpu["plain"]), 3),
        "identical_accuracy": same,
        "full_run_record_seconds": full_results["seconds"].get("record"),
        "last_pair_steps": steps,
    }
    dest = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    if args.name == "overhead":  # the default run's step breakdown, from its last plain run
        steps_out = {k: out[k] for k in ("command", "date", "machine", "plain_command")}
        (dest.parent / "steps.json").write_text(json.dumps({**steps_out, **steps["plain"]}, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    for d in ("runs/bench-plain",):
        shutil.rmtree(ROOT / d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
