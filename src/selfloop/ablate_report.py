"""The ablation report: per arm and generation what the run directories hold (results.json),
one table row per arm (table.md), and two plots (accuracy.png, diversity.png).

The done-when numbers are computed here, not asserted:

- collapse onset (of the ``collapse`` arm): the first generation whose mean n-gram Vendi of
  the model's samples (over levels with samples) is below ``ONSET_VENDI`` (90%) of that arm's
  generation-1 value, or whose mean held-out greedy accuracy is more than ``ONSET_ACCURACY``
  (3 points) below the default arm's at the same generation;
- the first generation the monitor flagged (any decision but a ``wait``), and whether flag -
  onset <= 2;
- whether the default arm was ever flagged;
- collapse_monitor's final mean accuracy relative to the default arm's: within 10% either
  way, and at least 90% of it (the issue says "within 10%"; both readings are shown);
- whether the default arm's n-gram Vendi (samples, accepted answers, well-formed held-out probe
  samples), its answer-template entropy (the same fixed-size sets), and its distinct correct
  answers per solved held-out problem, ever fell below their generation-1 values;
- for every arm but the control (``floors``): the same fixed-size measures' lowest after
  generation 1 relative to generation 1, beside the arm's mean accuracy over its last
  ``LAST_N`` generations and that relative to the default arm's.

The probe (``steps.measure``): the held-out pass@k samples, the same problems at every
generation and in every arm, so it is also shown for the base model (generation 0) and the
control arm, computed here from their eval_samples.jsonl the way the measure step does."""

from __future__ import annotations

from pathlib import Path

from selfloop.ablate_entropy import RunCheck, entropy_levels, legal_for
from selfloop.monitor import equal_n_series, flags, mean_over_levels, mean_vendi
from selfloop.records import read_json, write_json, write_text
from selfloop.workspace import Workspace

ONSET_VENDI = 0.9
ONSET_ACCURACY = 0.03
CONTROL = "control"
LAST_N = 5  # generations the steadier accuracy reading averages over
# the default arm's template entropies the checks compare with generation 1's, and their labels
ENTROPY_KEYS = {"entropy_samples_wf": "well-formed samples",
                "entropy_accepted_equal_n": "accepted at equal size",
                "entropy_probe": "probe"}
# the default arm's other measures the checks compare with generation 1's, and their labels
VENDI_KEYS = {"vendi_samples": "samples Vendi",
              "vendi_samples_wf": "well-formed samples Vendi",
              "vendi_accepted": "accepted Vendi",
              "vendi_accepted_equal_n": "accepted Vendi at equal size",
              "vendi_probe": "probe Vendi",
              "distinct_per_solved": "correct answers per solved problem"}
# every arm's diversity floors (lowest of generations 2.. / generation 1), as columns of the
# per-arm table: the fixed-size sets, so that arms compare whatever their accuracy and plan
FLOOR_KEYS = {**{key: VENDI_KEYS[key]
                 for key in ("vendi_samples_wf", "vendi_accepted_equal_n", "vendi_probe")},
              **{key: f"template entropy, {label}" for key, label in ENTROPY_KEYS.items()},
              "distinct_per_solved": VENDI_KEYS["distinct_per_solved"]}


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def distinct_per_solved(levels: dict) -> float | None:
    """Distinct correct answers per solved held-out problem, pooled over levels (all correct
    answers over all solved problems): how many ways to a right answer the model keeps in its
    pass@k samples. None when nothing was solved."""
    solved = sum(v["pass_at_k"] * v["n"] for v in levels.values())
    if not solved:
        return None
    return sum(v["distinct_per_solved"] * v["pass_at_k"] * v["n"] for v in levels.values()) / solved


def _eval_row(g: int, levels: dict) -> dict:
    return {
        "generation": g,
        "accuracy": {k: v["greedy_acc"] for k, v in levels.items()},
        "mean_accuracy": _mean([v["greedy_acc"] for v in levels.values()]),
        "pass_at_k": {k: v["pass_at_k"] for k, v in levels.items()},
        "k": next(iter(levels.values()))["k"] if levels else None,
        "distinct_per_solved": distinct_per_solved(levels),
    }


def probe_levels(probe: list[dict], params, g: int) -> dict:
    """Per level, the measure step's probe numbers for evaluation samples ``probe`` of
    generation ``g`` (same sample size, draws and seed; no reference, so no KL or MMD)."""
    from selfloop.steps import measure
    from selfloop.steps.plan import generation_seed

    m = params.measure
    return measure.probe_levels(probe, m.probe_n, generation_seed(params, g), m.probe_draws)


def probe_vendi(ws: Workspace, g: int, arm: str = "loop") -> float | None:
    """Mean over levels of the well-formed probe samples' n-gram Vendi of a generation without a
    measure step (the base model, the control arm), as the measure step computes it; None
    when its evaluation kept no samples."""
    from selfloop.config import saved_params
    from selfloop.loop import probe_vendi_of
    from selfloop.records import read_jsonl

    path = ws.gen(g, arm) / "eval_samples.jsonl"
    if not path.exists():
        return None
    return probe_vendi_of(saved_params(read_json(ws.root / "params.json")), read_jsonl(path), g)


def samples_vendi(ws: Workspace, g: int, run: RunCheck | None = None) -> float | None:
    """Mean over levels of the well-formed samples' n-gram Vendi of a generation measured
    before the measure step recorded it, computed from its verified.jsonl as that step does.
    ``run``: the run's ``ablate_entropy.legal_for``, made here when not given."""
    from selfloop.records import read_jsonl
    from selfloop.steps.measure import samples_well_formed
    from selfloop.steps.plan import generation_seed

    params, legal = run or legal_for(ws.root)
    samples, m = read_jsonl(ws.gen(g) / "verified.jsonl"), params.measure
    levels = {str(lv): {"samples_well_formed": samples_well_formed(
        samples, lv, legal, [], 0, m.probe_n, generation_seed(params, g), m.probe_draws)}
        for lv in sorted({r["level"] for r in samples})}
    return mean_vendi(levels, "samples_well_formed")


def accepted_equal_n_levels(ws: Workspace, g: int) -> dict:
    """Per level, the accepted answers at a fixed size (``steps.measure.accepted_equal_n``) of a
    generation measured before the measure step recorded them, computed from its
    accepted.jsonl as that step does (at ``measure.accepted_n``, or its default for a run
    that did not measure it; no reference, so no template KL: the Vendi is the same)."""
    from selfloop.config import saved_params
    from selfloop.records import read_jsonl
    from selfloop.steps.measure import accepted_equal_n, accepted_size, texts_by_level
    from selfloop.steps.plan import generation_seed

    params = saved_params(read_json(ws.root / "params.json"))
    m, seed = params.measure, generation_seed(params, g)
    n = accepted_size(m)
    by_level = texts_by_level(read_jsonl(ws.gen(g) / "accepted.jsonl"), weighted=False)
    return {str(lv): {"accepted_equal_n": accepted_equal_n(texts, [], n, seed, m.probe_draws)}
            for lv, texts in sorted(by_level.items())}


def generation_row(ws: Workspace, g: int, run: RunCheck | None = None) -> dict:
    """One finished generation of a loop arm, from its files (``run``: as ``samples_vendi``)."""
    d = ws.gen(g)
    metrics, diversity = read_json(d / "metrics.json"), read_json(d / "diversity.json")
    row = _eval_row(g, read_json(d / "eval.json")["levels"])
    verify = metrics.get("verify", {})
    row.update({
        "acceptance": verify.get("acceptance_rate"),
        "accepted": metrics.get("curate", {}).get("accepted"),
        "pool": metrics.get("curate", {}).get("pool"),
        "vendi_samples": mean_vendi(diversity, "samples"),
        "vendi_samples_wf": (mean_vendi(diversity, "samples_well_formed")
                             if any("samples_well_formed" in d for d in diversity.values())
                             else samples_vendi(ws, g, run)),
        "vendi_accepted": mean_vendi(diversity, "accepted"),
        "vendi_probe": mean_vendi(diversity, "probe_well_formed"),
        "diversity": diversity,
        "monitor": read_json(d / "monitor.json")["decisions"],
    })
    if "exact_pass_rate" in verify:  # no verifier: what the exact checker would have passed
        row["exact_pass_rate"] = verify["exact_pass_rate"]
    return row


def arm_series(root: Path, arm: str = "loop") -> list[dict]:
    """Generation 0 (the shared base) and every finished generation after it, in order."""
    ws = Workspace(root)
    rows = [{**_eval_row(0, read_json(ws.gen(0) / "eval.json")["levels"]), "vendi_probe": probe_vendi(ws, 0)}]
    run = legal_for(ws.root) if arm == "loop" else None  # loads the tokenizer: once per arm
    g = 1
    while (ws.gen(g, arm) / "metrics.json").exists():
        if arm == "loop":
            rows.append(generation_row(ws, g, run))
        else:
            rows.append({**_eval_row(g, read_json(ws.gen(g, arm) / "eval.json")["levels"]),
                         "vendi_probe": probe_vendi(ws, g, arm)})
        g += 1
    if arm == "loop":
        for r in rows[1:]:  # generations measured before it was recorded: computed, kept per level
            if not any("accepted_equal_n" in d for d in r["diversity"].values()):
                for lv, d in accepted_equal_n_levels(ws, r["generation"]).items():
                    r["diversity"].setdefault(lv, {}).update(d)
        for row, v in zip(rows[1:], equal_n_series([r["diversity"] for r in rows[1:]]), strict=True):
            row["vendi_accepted_equal_n"] = v
        add_template_entropy(ws, rows[1:], run)
    return rows


def add_template_entropy(ws: Workspace, rows: list[dict], run: RunCheck | None = None) -> None:
    """Each generation's template entropy of its three fixed-size sets, per level
    (``template_entropy_levels``) and as means over levels (``entropy_*``; the accepted
    answers' over the levels generation 1 had at full size, as their Vendi), recomputed from
    its files (``selfloop.ablate_entropy``; ``run``: as ``samples_vendi``)."""
    params, legal = run or legal_for(ws.root)
    for r in rows:
        r["template_entropy_levels"] = ent = entropy_levels(ws, r["generation"], params, legal)
        r["entropy_samples_wf"] = mean_over_levels(ent, "samples_well_formed", "template_entropy")
        r["entropy_probe"] = mean_over_levels(ent, "probe_well_formed", "template_entropy")
    series = equal_n_series([r["template_entropy_levels"] for r in rows], metric="template_entropy")
    for r, v in zip(rows, series, strict=True):
        r["entropy_accepted_equal_n"] = v


def collect(base: Path, arms: dict[str, Path], overrides: dict[str, list[str]], made_by: dict[str, str],
            report_command: str = "") -> dict:
    """results.json: per arm (and the default arm's control generations as ``control``).
    ``made_by``: the command that made each arm; ``command`` is that command when one made
    them all. ``report_command``: the command that wrote this report, when not the one that
    made the runs."""
    base_eval = read_json(Workspace(base).gen(0) / "eval.json")["levels"]
    commands = list(dict.fromkeys(made_by[name] for name in arms if name in made_by))
    out: dict = {"command": commands[0] if len(commands) == 1 else f"{len(commands)} commands (see made_by)",
                 "base": _eval_row(0, base_eval), "arms": {}}
    if report_command:
        out["report_command"] = report_command
    for name, root in arms.items():
        if not (root / "gen_000" / "eval.json").exists():
            continue  # never seeded (failed before it started)
        done = root / "results.json"
        stopped = read_json(done).get("stopped", "") if done.exists() else None
        out["arms"][name] = {"overrides": overrides.get(name, []), "made_by": made_by.get(name, ""),
                             "workdir": str(root),
                             "complete": stopped is not None, "stopped": stopped or "",
                             "generations": arm_series(root)}
        if name == "default" and (root / CONTROL).exists():
            out["arms"][CONTROL] = {"overrides": ["(the default arm's control: reference data only)"],
                                    "made_by": made_by.get(name, ""),
                                    "workdir": str(root / CONTROL), "complete": stopped is not None,
                                    "stopped": "", "generations": arm_series(root, CONTROL)}
    out["checks"] = checks(out["arms"])
    return out


# ------------------------------------------------------------------ done-when numbers


def read_arm(spec: str) -> list[dict]:
    """``RESULTS_JSON:ARM`` (a report's results.json and an arm in it) -> that arm's
    per-generation rows, generation 0 first; for scripts that read several reports."""
    path, _, arm = spec.rpartition(":")
    if not path:
        raise ValueError(f"{spec!r}: expected RESULTS_JSON:ARM")
    arms = read_json(Path(path))["arms"]
    if arm not in arms:
        raise ValueError(f"{path} has no arm {arm!r} (it has {sorted(arms)})")
    return sorted(arms[arm]["generations"], key=lambda r: r["generation"])


def first_flag(rows: list[dict]) -> dict | None:
    """The first generation with any monitor decision but a ``wait``, and those decisions."""
    for r in rows[1:]:
        if flagged := flags(r.get("monitor") or []):
            return {"generation": r["generation"],
                    "decisions": [f"{d['action']} ({d['signal']})" for d in flagged]}
    return None


def onset(rows: list[dict], default: list[dict] | None) -> int | None:
    """The collapse onset (see the module docstring); None when there is none."""
    gens = rows[1:]
    first = gens[0].get("vendi_samples") if gens else None
    ref = {r["generation"]: r["mean_accuracy"] for r in default or []}
    for r in gens:
        v = r.get("vendi_samples")
        if first and v is not None and v < ONSET_VENDI * first:
            return r["generation"]
        if r["generation"] in ref and r["mean_accuracy"] < ref[r["generation"]] - ONSET_ACCURACY:
            return r["generation"]
    return None


def _fell_below_first(rows: list[dict], key: str) -> dict:
    """Whether a later generation's ``key`` is below generation 1's (None when generation 1
    has no value, or no later one has)."""
    first = rows[1].get(key) if len(rows) > 1 else None
    later = [r.get(key) for r in rows[2:] if r.get(key) is not None]
    if first is None or not later:
        return {"fell_below_gen1": None, "min_ratio_to_gen1": None}
    low = min(later)
    return {"fell_below_gen1": low < first, "min_ratio_to_gen1": low / first if first else None}


def floors(rows: list[dict], default: list[dict] | None) -> dict:
    """One arm's diversity floors (``FLOOR_KEYS``: lowest of generations 2.. / generation 1's,
    None where not measured) beside its mean accuracy over its last ``LAST_N`` generations
    (``last_generations``: which; all when it has fewer) and that mean / the default arm's
    over the same generations (None when the default lacks one of them)."""
    later = rows[1:][-LAST_N:]
    gens = [r["generation"] for r in later]
    own = _mean([r["mean_accuracy"] for r in later]) if later else None
    by_gen = {r["generation"]: r["mean_accuracy"] for r in (default or [])[1:]}
    base = _mean([by_gen[g] for g in gens]) if gens and all(g in by_gen for g in gens) else None
    return {"last_generations": gens, "last_mean_accuracy": own,
            "last_mean_vs_default": own / base if own is not None and base else None,
            **{key: _fell_below_first(rows, key)["min_ratio_to_gen1"] for key in FLOOR_KEYS}}


def collapse_check(collapse: list[dict], default: list[dict] | None) -> dict:
    """A collapse run's onset (against a default run), its first flag, and whether the flag
    came at most 2 generations after the onset (None when there is neither; False when only
    one of them happened)."""
    on, flag = onset(collapse, default), first_flag(collapse)
    return {"onset": on, "first_flag": flag,
            "flag_within_2_of_onset": (None if on is None and flag is None else
                                       False if on is None or flag is None else flag["generation"] - on <= 2)}


def checks(arms: dict) -> dict:
    rows = {k: v["generations"] for k, v in arms.items()}
    default = rows.get("default")
    out: dict = {"definitions": {
        "onset": f"first generation whose mean samples n-gram Vendi < {ONSET_VENDI:.0%} of the arm's "
                 f"generation 1, or whose mean held-out accuracy is > {ONSET_ACCURACY * 100:.0f} points "
                 "below the default arm's at the same generation",
        "flag": "first generation with any monitor decision but a wait"}}
    if "collapse" in rows:
        out["collapse"] = collapse_check(rows["collapse"], default)
    if default:
        flag = first_flag(default)
        out["default"] = {"ever_flagged": flag is not None, "first_flag": flag,
                          **{key: _fell_below_first(default, key) for key in (*VENDI_KEYS, *ENTROPY_KEYS)}}
    out["floors"] = {name: floors(r, default) for name, r in rows.items() if name != CONTROL}
    if "collapse_monitor" in rows and default and len(default) > 1:
        cm, df = rows["collapse_monitor"][-1]["mean_accuracy"], default[-1]["mean_accuracy"]
        ratio = cm / df if df else None
        # One generation's accuracy moves by about a point from checkpoint to checkpoint; the
        # mean over the last LAST_N generations (both arms) is the steadier reading beside it.
        n = min(LAST_N, len(default) - 1, len(rows["collapse_monitor"]) - 1)
        df_last = _mean([r["mean_accuracy"] for r in default[-n:]]) if n > 0 else None
        last_ratio = (_mean([r["mean_accuracy"] for r in rows["collapse_monitor"][-n:]]) / df_last
                      if df_last else None)
        out["collapse_monitor"] = {"final_accuracy": cm, "default_final_accuracy": df, "ratio": ratio,
                                   "within_10pct": None if ratio is None else abs(ratio - 1) <= 0.10,
                                   "at_least_90pct": None if ratio is None else ratio >= 0.90,
                                   "last_generations": n,
                                   "last_mean_ratio": last_ratio}
    return out


# ------------------------------------------------------------------ the report


def write_report(base: Path, arms: dict[str, Path], overrides: dict[str, list[str]], out: Path,
                 made_by: dict[str, str], report_command: str = "") -> tuple[dict, list[Path]]:
    """results.json, table.md and the plots (``selfloop.ablate_render``) in ``out``."""
    from selfloop.ablate_render import plots, table

    out.mkdir(parents=True, exist_ok=True)
    results = collect(base, arms, overrides, made_by, report_command)
    write_json(out / "results.json", results)
    write_text(out / "table.md", "# Ablation\n\n" + table(results))
    return results, [out / "results.json", out / "table.md", *plots(results, out)]
