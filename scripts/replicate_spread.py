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
It also prints each replicate's held-out accuracy (the last generation's, and the mean over the
last five, the report's steadier reading) with their mean and its standard error. With
``--versus RESULTS_JSON:ARM ...`` (replicates of another arm, e.g. the default) it prints the
ratio of the two means and that ratio's standard error (first order: the two relative errors
added in quadrature), the way to read "arm A within 10% of arm B" against chance:

    .venv/bin/python scripts/replicate_spread.py runs/a/results.json:collapse_monitor \\
        runs/a/results.json:cm1 --versus runs/a/results.json:default runs/a/results.json:r1
"""

from __future__ import annotations

import argparse
import math
import statistics

from selfloop.ablate_report import read_arm

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
    rows = read_arm(spec)
    return {m: {r["generation"]: r[m] for r in rows if r.get(m) is not None}
            for m in (*MEASURES, "mean_accuracy")}


LAST_N = 5  # the ablation report's steadier accuracy reading: the mean of the last 5 generations


def accuracy(replicates: list[dict[int, float]]) -> dict[str, dict]:
    """Held-out mean accuracy over replicates (each: generation -> accuracy, generation 0 the
    base model): the last generation's and the mean over the last ``LAST_N`` generations after
    the base, per replicate, with their mean and standard error. Replicates must reach the
    same last generation, or the readings would not be of the same thing."""
    if len(replicates) < 2:
        raise ValueError("need at least two replicates to measure a spread")
    lasts = {max(r) for r in replicates if r}
    if len(lasts) != 1 or not all(r for r in replicates):
        raise ValueError(f"replicates end at different generations ({sorted(lasts)}); compare equal lengths")
    last = lasts.pop()
    out = {}
    for name, pick in (("final", lambda r: r[last]),
                       ("last_n", lambda r: statistics.fmean(
                           [r[g] for g in sorted(r) if g >= 1][-LAST_N:]))):
        values = [pick(r) for r in replicates]
        mean, sd = _mean_sd(values)
        out[name] = {"values": values, "mean": mean, "se": sd / math.sqrt(len(values))}
    out["generation"] = last
    return out


def ratio(a: dict, b: dict) -> tuple[float, float]:
    """Ratio of two means (``{"mean", "se"}``) and its first-order standard error."""
    r = a["mean"] / b["mean"]
    return r, abs(r) * math.hypot(a["se"] / a["mean"], b["se"] / b["mean"])


def _print_accuracy(label: str, got: dict) -> None:
    for name, what in (("final", f"generation {got['generation']}"),
                       ("last_n", f"last {LAST_N} generations")):
        row = got[name]
        each = ", ".join(f"{100 * x:.2f}" for x in row["values"])
        print(f"{label} accuracy, {what}: {each}%; mean {100 * row['mean']:.2f} +- {100 * row['se']:.2f}%")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("replicates", nargs="+", help="RESULTS_JSON:ARM, one per replicate (at least two)")
    ap.add_argument("--versus", nargs="+", default=[], metavar="RESULTS_JSON:ARM",
                    help="replicates of another arm: print the ratio of the accuracy means")
    args = ap.parse_args(argv)
    loaded = [load(s) for s in args.replicates]
    try:
        acc = accuracy([d["mean_accuracy"] for d in loaded])
    except ValueError as err:
        if args.versus:
            ap.error(f"--versus: {err}")
        # the diversity spread below needs only the generations the replicates share
        print(f"accuracy: not compared: {err}")
    else:
        _print_accuracy("replicates'", acc)
    if args.versus:
        other = accuracy([load(s)["mean_accuracy"] for s in args.versus])
        _print_accuracy("--versus", other)
        for name in ("final", "last_n"):
            r, se = ratio(acc[name], other[name])
            print(f"ratio of means, {name.replace('_n', f' {LAST_N}')}: {r:.3f} +- {se:.3f}")
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
