"""How an iteration's cost grows with the number of problems per generation: one iteration
from one shared base checkpoint at 1x, 4x and 16x ``plan.problems``, each repeated, run one
after another on one thread (``selfloop ablate`` machinery, so every arm starts from the same
generation 0). Per step: median seconds and peak memory.

    python benchmarks/scaling.py [--problems 500] [--repeats 2] [--set section.key=value ...]

Writes benchmarks/results/scaling.json. Training is a fixed number of optimizer steps and
evaluation a fixed held-out set, so the whole iteration grows more slowly than the problem
count; generate and verify are the steps that must scale (at most) linearly."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SCALES = (1, 4, 16)


def arm_name(scale: int, rep: int) -> str:
    return f"x{scale}_r{rep}"


def iteration_costs(workdir: Path, scales: tuple[int, ...], repeats: int) -> dict:
    """Median total seconds, per-step seconds and per-step peak RSS of generation 1, by scale."""
    out = {}
    for s in scales:
        runs = [json.loads((workdir / arm_name(s, r) / "gen_001" / "metrics.json").read_text())
                for r in range(repeats)]
        steps = sorted(runs[0]["seconds"])
        out[str(s)] = {
            "total_s": round(statistics.median(sum(m["seconds"].values()) for m in runs), 2),
            "totals_s": [round(sum(m["seconds"].values()), 2) for m in runs],
            "seconds_by_step": {k: round(statistics.median(m["seconds"][k] for m in runs), 3) for k in steps},
            "peak_rss_mb_by_step": {k: max(m.get("memory", {}).get(k, 0.0) for m in runs) for k in steps},
            "samples": runs[0]["generate"]["samples"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=500, help="problems per generation at 1x")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--keep", action="store_true", help="keep runs/bench-scale afterwards")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    from selfloop.ablate import ablate

    workdir = ROOT / "runs" / "bench-scale"
    arms = {arm_name(s, r): (f"plan.problems={s * args.problems}",)
            for s in SCALES for r in range(args.repeats)}
    t = time.perf_counter()
    res = ablate(ROOT / "params.yaml", args.set, iterations=1, arms=arms, workers=1, workdir=workdir,
                 out=ROOT / "benchmarks" / "logs" / "scaling", command="python benchmarks/scaling.py")
    if res["failed"]:
        raise SystemExit(f"scaling arms failed: {res['failed']}")
    costs = iteration_costs(workdir, SCALES, args.repeats)
    base = costs[str(SCALES[0])]["total_s"]
    argv_shown = " ".join(["python benchmarks/scaling.py", f"--problems {args.problems}",
                           f"--repeats {args.repeats}", *[f"--set {o}" for o in args.set]])
    out = {
        "command": argv_shown, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "problems_at_1x": args.problems, "threads": 1,
        "by_scale": costs,
        "time_ratio_vs_1x": {s: round(c["total_s"] / base, 2) for s, c in costs.items()},
        "linear_or_better": all(c["total_s"] <= int(s) * base for s, c in costs.items()),
        "wall_s": round(time.perf_counter() - t, 1),
    }
    dest = ROOT / "benchmarks" / "results" / "scaling.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
