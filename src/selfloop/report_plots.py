"""The report's plots: matplotlib figures (``Figure`` objects, no pyplot: no global backend or
figure state, safe in a worker thread) embedded as base64 PNG data URIs. Each
function takes ``report.collect``'s dict and returns a ``Plot`` (None when there is
nothing to draw); every plot has a stable id the page and the tests use."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

DPI = 90
SETS = (("samples", "model's samples", "-"),
        ("samples_well_formed", "model's samples, well-formed", (0, (1, 1))),  # densely dotted
        ("accepted", "accepted answers", "--"),
        ("accepted_equal_n", "accepted answers, fixed size", (0, (5, 1, 1, 1))),  # dash-dot, dense
        ("probe_well_formed", "held-out probe, well-formed", "-."))


@dataclass(frozen=True)
class Plot:
    id: str
    alt: str
    uri: str


def _finish(fig, ident: str, alt: str) -> Plot:
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return Plot(ident, alt, "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())


def _panels(n: int, width: float = 3.6, height: float = 3.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(width * n, 5.5), height))
    return fig, list(fig.subplots(1, n, squeeze=False)[0])


def accuracy(data: dict) -> Plot | None:
    """Held-out greedy accuracy per level: loop arm (from the base at generation 0) and control arm."""
    if data["base"] is None and not data["loop"]:
        return None
    fig, axes = _panels(len(data["levels"]))
    base = [(0, data["base"])] if data["base"] else []
    for ax, lv in zip(axes, data["levels"], strict=True):
        for arm, rows, style in (("loop", data["loop"], "-"), ("control", data["control"], "--")):
            pts = [(g, ev[lv]["greedy_acc"]) for g, ev in base + [(r["generation"], r["eval"]) for r in rows]
                   if lv in ev]
            if arm == "loop" or rows:
                ax.plot([g for g, _ in pts], [a * 100 for _, a in pts], style, marker="o", label=arm)
        ax.set(title=f"level {lv}", xlabel="generation (0: base)", ylabel="greedy accuracy (%)")
        ax.set_ylim(0, max(10.0, ax.get_ylim()[1]))
    return _finish(fig, "plot-accuracy", "Held-out greedy accuracy per level and generation, loop arm "
                   "(solid) and control arm (dashed); generation 0 is the base model")


def acceptance(data: dict) -> Plot | None:
    rows = [r for r in data["loop"] if "verify" in r or "curate" in r]
    if not rows:
        return None
    gens = [r["generation"] for r in rows]
    fig, (a, b) = _panels(2, width=4.6)
    a.plot(gens, [r.get("verify", {}).get("acceptance_rate", 0) * 100 for r in rows], marker="o")
    a.set(title="verifier acceptance", xlabel="generation", ylabel="accepted candidates (%)")
    a.set_ylim(0, max(10.0, a.get_ylim()[1]))
    for key, label in (("accepted", "accepted this generation"), ("pool", "pool size")):
        b.plot(gens, [r.get("curate", {}).get(key, 0) for r in rows], marker="o", label=label)
    b.set(title="synthetic answers", xlabel="generation", ylabel="answers")
    b.set_ylim(0, max(10.0, b.get_ylim()[1]))
    return _finish(fig, "plot-acceptance", "Acceptance rate, accepted answers and pool size per generation")


def diversity(data: dict) -> Plot | None:
    rows = [r for r in data["loop"] if r.get("diversity")]
    levels = [lv for lv in data["levels"] if any("vendi_ngram" in r["diversity"].get(lv, {}).get(key, {})
                                                 for r in rows for key, _, _ in SETS)]
    if not levels:
        return None
    fig, axes = _panels(len(levels))
    for ax, lv in zip(axes, levels, strict=True):
        for key, label, style in SETS:
            pts = [(r["generation"], d["vendi_ngram"]) for r in rows
                   if "vendi_ngram" in (d := r["diversity"].get(lv, {}).get(key, {}))]
            if pts:
                ax.plot([g for g, _ in pts], [v for _, v in pts], linestyle=style, marker="o", label=label)
        ref = [d["vendi_ngram"] for r in rows if "vendi_ngram" in (d := r["diversity"].get(lv, {})
                                                                      .get("reference", {}))]
        if ref:
            ax.axhline(ref[-1], color="grey", linestyle=":", label="reference data")
        ax.set(title=f"level {lv}", xlabel="generation", ylabel="n-gram Vendi score")
    return _finish(fig, "plot-diversity", "n-gram Vendi score per level and generation of the model's "
                   "samples and their well-formed ones, of the accepted answers (all, and a fixed-size "
                   "sample) and of the well-formed "
                   "held-out probe samples, with the reference data's as a grey dotted line")


def mix(data: dict) -> Plot | None:
    rows = [r for r in data["loop"] if "reference_share" in r.get("curate", {})]
    if not rows:
        return None
    gens = [r["generation"] for r in rows]
    sources = sorted({s for r in rows for s in r["curate"].get("synthetic_by_generation", {})}, key=int)
    fig, (ax,) = _panels(1, width=6)
    bottom = [r["curate"]["reference_share"] * 100 for r in rows]
    ax.bar(gens, bottom, label="reference", color="grey")
    for s in sources:
        part = [r["curate"].get("synthetic_by_generation", {}).get(s, 0) * 100 for r in rows]
        ax.bar(gens, part, bottom=bottom, label=f"synthetic from gen {s}")
        bottom = [b + p for b, p in zip(bottom, part, strict=True)]
    ax.set(title="training mix", xlabel="generation", ylabel="share of the training mix (%)", ylim=(0, 105))
    return _finish(fig, "plot-mix", "Share of the training mix per generation: reference data and "
                   "synthetic answers by the generation that produced them")


def _stacked(ax, rows: list[dict], key: str) -> None:
    steps = sorted({s for r in rows for s in r.get(key, {})})
    gens = [r["generation"] for r in rows]
    bottom = [0.0] * len(rows)
    for s in steps:
        part = [float(r.get(key, {}).get(s, 0)) for r in rows]
        ax.bar(gens, part, bottom=bottom, label=s)
        bottom = [b + p for b, p in zip(bottom, part, strict=True)]


def seconds(data: dict) -> Plot | None:
    arms = [(name, rows) for name, rows in (("loop", data["loop"]), ("control", data["control"]))
            if any(r.get("seconds") for r in rows)]
    if not arms:
        return None
    fig, axes = _panels(len(arms), width=5)
    for ax, (name, rows) in zip(axes, arms, strict=True):
        _stacked(ax, rows, "seconds")
        ax.set(title=f"{name} arm", xlabel="generation", ylabel="seconds")
    return _finish(fig, "plot-seconds", "Seconds per step and generation, stacked, per arm")


def memory(data: dict) -> Plot | None:
    arms = [(name, rows) for name, rows in (("loop", data["loop"]), ("control", data["control"]))
            if any(r.get("memory") for r in rows)]
    if not arms:
        return None
    fig, axes = _panels(len(arms), width=5)
    for ax, (name, rows) in zip(axes, arms, strict=True):
        for step in sorted({s for r in rows for s in r.get("memory", {})}):
            pts = [(r["generation"], r["memory"][step]) for r in rows if step in r.get("memory", {})]
            ax.plot([g for g, _ in pts], [m for _, m in pts], marker="o", label=step)
        ax.set(title=f"{name} arm", xlabel="generation", ylabel="peak RSS (MiB)")
    return _finish(fig, "plot-memory", "Peak resident memory per step and generation, per arm")
