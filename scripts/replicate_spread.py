"""How far chance alone moves the diversity measures, from replicates of one arm.

Replicates are one arm run again from the same base model with ``run.replicate`` 1, 2, ...
(README, "Ablations"): every seed of generations 1 and on differs, nothing else. Given their
ablation reports, this prints for each fixed-size diversity measure the replicates' values at
generation 1 (mean and standard deviation: the noise of one generation's reading) and, for
every later generation, each replicate's value over its own generation 1, their mean and the
mean's standard error. A generation is read as "below generation 1 beyond chance" when its
mean ratio plus two standard errors is still under 1.

    .venv/bin/python scripts/replicate_spread.py runs/ablate/results.json:default \\
        runs/rep/results.json:r1 runs/rep/results.json:r2

Each argument is ``RESULTS_JSON:ARM`` (an ablation report's ``results.json`` and an arm in it).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

MEASURES = {  # results.json key per generation -> what it is
    "vendi_samples_wf": "n-gram Vendi, well-formed samples",
    "vendi_accepted_equal_n": "n-gram Vendi, accepted at a fixed size",
    "vendi_probe": "n-gram Vendi, probe",
    "entropy_samples_wf": "template entropy, well-formed samples",
    "entropy_accepted_equal_n": "template entropy, accepted at a fixed size",
    "entropy_probe": "template entropy, probe",
    "distinct_per_solved": "correct answers per solved problem",
}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def spread(replicates: list[dict[int, float]]) -> dict:
    """One measure over replicates (each: generation -> value). Generation 1's mean and sd,
    and per later generation present in every replicate: the ratios to each replicate's own
    generation 1, their mean, its standard error, and whether mean + 2 SE < 1."""
    if len(replicates) < 2:
        raise ValueError("need at least two replicates to measure a spread")
    if any(1 not in r or not r[1] for r in replicates):
        raise ValueError("every replicate needs a generation-1 value")
    first = [r[1] for r in replicates]
    mean1, sd1 = _mean_sd(first)
    later = sorted(set.intersection(*(set(r) for r in replicates)) - {0, 1})
    rows = {}
    for g in later:
        ratios = [r[g] / r[1] for r in replicates]
        mean, sd = _mean_sd(ratios)
        se = sd / math.sqrt(len(ratios))
        rows[g] = {"ratios": ratios, "mean": mean, "se": se, "below_beyond_chance": mean + 2 * se < 1}
    return {"gen1_mean": mean1, "gen1_sd": sd1, "gen1_cv": sd1 / mean1, "generations": rows}


def load(spec: str) -> dict[str, dict[int, float]]:
    """``RESULTS_JSON:ARM`` -> measure -> generation -> value (generations without it left out)."""
    path, _, arm = spec.rpartition(":")
    if not path:
        raise ValueError(f"{spec!r}: expected RESULTS_JSON:ARM")
    arms = json.loads(Path(path).read_text())["arms"]
    if arm not in arms:
        raise ValueError(f"{path} has no arm {arm!r} (it has {sorted(arms)})")
    rows = arms[arm]["generations"]
    return {m: {r["generation"]: r[m] for r in rows if r.get(m) is not None} for m in MEASURES}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("replicates", nargs="+", help="RESULTS_JSON:ARM, one per replicate (at least two)")
    args = ap.parse_args(argv)
    loaded = [load(s) for s in args.replicates]
    for key, name in MEASURES.items():
        series = [d[key] for d in loaded]
        if any(1 not in s for s in series):
            print(f"{name}: not in every replicate")
            continue
        got = spread(series)
        print(f"{name}: generation 1 {got['gen1_mean']:.3f} (sd {got['gen1_sd']:.3f}, "
              f"{100 * got['gen1_cv']:.1f}%) over {len(series)} replicates")
        for g, row in got["generations"].items():
            each = ", ".join(f"{x:.3f}" for x in row["ratios"])
            flag = "  below beyond chance" if row["below_beyond_chance"] else ""
            print(f"  gen {g:2d} / gen 1: {each}; mean {row['mean']:.3f} +- {row['se']:.3f}{flag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
