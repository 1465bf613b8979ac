"""The ablation report's rendering: the table (``table.md``, with the done-when checks as
notes) and the PNG plots of held-out accuracy and diversity per generation, from the
results ``selfloop.ablate_report.collect`` gathers."""

from __future__ import annotations

from pathlib import Path

from selfloop.ablate_report import CONTROL, ENTROPY_KEYS, FLOOR_KEYS, VENDI_KEYS, first_flag


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(results: dict) -> str:
    arms = results["arms"]
    default = arms.get("default", {}).get("generations")
    lines = ["| arm | generations | final mean accuracy | best (generation) | vs default (final) | "
             "first monitor flag | samples Vendi gen 1 → last | well-formed samples Vendi gen 1 → last | "
             "accepted Vendi gen 1 → last | accepted Vendi at equal size gen 1 → last | "
             "probe Vendi gen 0 → 1 → last | correct answers per solved problem gen 0 → 1 → last |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, arm in arms.items():
        rows = arm["generations"]
        last = rows[-1]
        best = max(rows, key=lambda r: (r["mean_accuracy"], -r["generation"]))
        vs = "-"
        if default and name != "default" and len(default) > 1:
            d = default[-1]["mean_accuracy"]
            vs = f"{(last['mean_accuracy'] - d) * 100:+.1f} pts"
            vs += f" ({last['mean_accuracy'] / d:.2f}x)" if d else ""
        flag = first_flag(rows)
        flag_s = "-" if name == CONTROL else "none" if flag is None else \
            f"gen {flag['generation']}: {', '.join(flag['decisions'])}"
        gens = rows[1:]

        def span(key: str, gens: list[dict] = gens, digits: int = 2) -> str:
            if not gens:
                return "-"
            return f"{_num(gens[0].get(key), digits)} → {_num(gens[-1].get(key), digits)}"

        stop = (f" (stopped: {arm['stopped']})" if arm["stopped"]
                else "" if arm["complete"] else " (incomplete)")
        lines.append(f"| {name}{stop} | {len(rows) - 1} | {_pct(last['mean_accuracy'])} | "
                     f"{_pct(best['mean_accuracy'])} ({best['generation']}) | {vs} | {flag_s} | "
                     f"{span('vendi_samples')} | {span('vendi_samples_wf')} | {span('vendi_accepted')} | "
                     f"{span('vendi_accepted_equal_n')} | "
                     f"{_num(rows[0].get('vendi_probe'))} → {span('vendi_probe')} | "
                     f"{_num(rows[0].get('distinct_per_solved'), 3)} → "
                     f"{span('distinct_per_solved', digits=3)} |")
    c = results["checks"]
    notes = ["", "Mean held-out greedy accuracy over levels; generation 0 is the shared base model "
             f"({_pct(results['base']['mean_accuracy'])}). Vendi: n-gram Vendi score, mean over levels. "
             "Well-formed samples: the generation's own samples that are legal attempts, a fixed-size "
             "sample per level. Accepted Vendi at equal size: a fixed-size sample per level of the accepted "
             "answers, over the levels generation 1 had that many of (the plain accepted Vendi grows "
             "with their number, which moves with accuracy and the plan). Probe: the well-formed "
             "held-out pass@k samples (same problems every generation and arm, a fixed-size sample "
             "per level). Correct answers per solved problem: "
             "distinct correct answers among the k held-out samples of each problem solved at least "
             "once, pooled over levels.", "",
             "Checks (computed, not asserted):", ""]
    if "collapse" in c:
        x = c["collapse"]
        notes.append(f"- collapse arm: onset at generation {x['onset']}, first monitor flag "
                     f"{x['first_flag']['generation'] if x['first_flag'] else None}, "
                     f"flag within 2 generations of onset: {x['flag_within_2_of_onset']}")
    if "default" in c:
        x = c["default"]
        fell = ", ".join(f"{label} {x[key]['fell_below_gen1']} ({_num(x[key]['min_ratio_to_gen1'], 3)})"
                         for key, label in VENDI_KEYS.items())
        notes.append(f"- default arm ever flagged: {x['ever_flagged']}; fell below generation 1's "
                     f"(lowest / generation 1's): {fell}")
        ent = ", ".join(f"{label} {x[key]['fell_below_gen1']} ({_num(x[key]['min_ratio_to_gen1'], 3)})"
                        for key, label in ENTROPY_KEYS.items())
        notes.append("- default arm's answer-template entropy (digits masked; the same fixed-size sets, "
                     f"mean over their draws) fell below generation 1's (lowest / generation 1's): {ent}")
    if "collapse_monitor" in c:
        x = c["collapse_monitor"]
        notes.append(f"- collapse_monitor final accuracy / default's: {_num(x['ratio'])} "
                     f"(within 10% either way: {x['within_10pct']}; at least 90%: {x['at_least_90pct']}); "
                     f"mean over the last {x['last_generations']} generations / default's: "
                     f"{_num(x['last_mean_ratio'])}")
    if notes[-1] == "":
        notes.append("- (none: they need the default, collapse or collapse_monitor arms)")
    notes += floors_table(c.get("floors", {}))
    notes += ["", f"Onset: {c['definitions']['onset']}.", "", *produced_by(results), ""]
    if results.get("report_command"):
        notes += [f"Report written from those runs' files by: `{results['report_command']}`", ""]
    return "\n".join(lines + notes)


def floors_table(floors: dict) -> list[str]:
    """Every arm's diversity floors beside its accuracy over its last generations: what a
    policy keeps and what it costs, one row an arm."""
    if not floors:
        return []
    head = ["arm", "mean accuracy, last generations", "vs default, same generations",
            *FLOOR_KEYS.values()]
    lines = ["", "Diversity per arm: the lowest of generations 2.. / generation 1's (below 1.000: "
             "it fell below its first generation's):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, f in floors.items():
        vs, acc, gens = f["last_mean_vs_default"], f["last_mean_accuracy"], f["last_generations"]
        span = f" (gens {gens[0]}-{gens[-1]})" if gens else ""
        lines.append(f"| {name} | {'-' if acc is None else f'{acc:.2%}'}{span} | "
                     f"{'-' if vs is None or name == 'default' else f'{vs:.2f}x'} | "
                     + " | ".join(_num(f[key], 3) for key in FLOOR_KEYS) + " |")
    return lines


def plots(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    arms = results["arms"]
    color = {name: f"C{i}" for i, name in enumerate(arms)}  # one colour per arm in every panel
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, arm in arms.items():
        rows = arm["generations"]
        ax.plot([r["generation"] for r in rows], [r["mean_accuracy"] * 100 for r in rows], marker="o",
                label=name, color=color[name], linestyle="--" if name == CONTROL else "-")
    ax.set(xlabel="generation (0: shared base model)", ylabel="mean held-out greedy accuracy (%)",
           title="Held-out accuracy per generation")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    acc = out / "accuracy.png"
    fig.savefig(acc, dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 5, figsize=(26, 4.5), sharex=True)
    vendi = "n-gram Vendi (mean over levels)"
    for ax, key, title, ylabel in (
            (axes[0], "vendi_samples", "model's samples (plan's problems)", vendi),
            (axes[1], "vendi_accepted_equal_n", "accepted answers, equal size per level",
             "n-gram Vendi (mean over generation 1's levels)"),
            (axes[2], "vendi_probe", "well-formed held-out probe samples", vendi),
            (axes[3], "distinct_per_solved", "held-out: ways to a correct answer",
             "distinct correct answers per solved problem"),
            (axes[4], "entropy_probe", "well-formed probe samples: answer shapes",
             "template entropy, bits (mean over levels)")):
        held_out = key in ("vendi_probe", "distinct_per_solved")  # measured for the base and control too
        for name, arm in arms.items():
            rows = [r for r in arm["generations"][0 if held_out else 1:] if r.get(key) is not None]
            if (name != CONTROL or held_out) and rows:
                ax.plot([r["generation"] for r in rows], [r[key] for r in rows], marker="o", label=name,
                        color=color[name], linestyle="--" if name == CONTROL else "-")
        ax.set(xlabel="generation", ylabel=ylabel, title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    div = out / "diversity.png"
    fig.savefig(div, dpi=120)
    plt.close(fig)
    return [acc, div]


def produced_by(results: dict) -> list[str]:
    """The command that made the arms, or each command with the arms it made."""
    by: dict[str, list[str]] = {}
    for name, arm in results["arms"].items():
        if name != CONTROL:
            by.setdefault(arm.get("made_by") or results["command"] or "selfloop ablate", []).append(name)
    if len(by) <= 1:
        return [f"Produced by: `{next(iter(by), results['command'] or 'selfloop ablate')}`"]
    return ["Produced by:", *(f"- `{cmd}`: {', '.join(names)}" for cmd, names in by.items())]
