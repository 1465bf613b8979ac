"""``report.collect``'s dict -> one self-contained HTML page (inline CSS, plots as data URIs,
no external references). Every table and plot has a stable id."""

from __future__ import annotations

import html
import re

from selfloop import report_plots
from selfloop.report_plots import Plot

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
nav a { margin-right: 1em; } code { background: #f4f4f4; padding: 0 .3em; border-radius: 3px; }
table { border-collapse: collapse; margin: .8em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
table.kv th { text-align: left; } table.kv td { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
figcaption, .note { color: #666; font-size: .9em; } .headline { font-size: 1.05em; }
"""
SECTIONS = (("accuracy", "Held-out accuracy"), ("acceptance", "Acceptance and pool"),
            ("diversity", "Diversity"), ("mix", "Training mix"), ("monitor", "Monitor"),
            ("timings", "Timings and memory"), ("benchmarks", "Benchmarks"))
DIVERSITY = (("n", "n"), ("vendi_ngram", "n-gram Vendi"), ("vendi_embedding", "embedding Vendi"),
             ("well_formed_share", "well-formed share"), ("audit_pass_share", "audit pass share"),
             ("template_entropy", "template entropy"),
             ("template_kl_vs_reference", "template KL vs reference"),
             ("distinct_2", "distinct-2"), ("mmd_vs_reference", "MMD vs reference"),
             ("mean_logprob", "mean log-prob"))
HEADLINE = re.compile(r"best_|per_second|overhead_percent|ratio|speedup")
TEXT_COLUMNS = {"arm", "set", "action", "signal", "reason", "step", "problems per level", "file", "key"}


def esc(x: object) -> str:
    return html.escape(str(x), quote=True)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def value(v: object) -> str:
    """A benchmark field as text: numbers as they are (6 significant digits), lists joined."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return ", ".join(value(x) for x in v)
    return str(v)


def table(ident: str, header: list[str], rows: list[list[str]], cls: str = "") -> str:
    def cell(tag: str, col: str, text: str) -> str:
        klass = ' class="text"' if col in TEXT_COLUMNS else ""
        return f"<{tag}{klass}>{esc(text)}</{tag}>"

    head = "".join(cell("th", h, h) for h in header)
    body = "".join("<tr>" + "".join(cell("td", h, c) for h, c in zip(header, r, strict=True)) + "</tr>"
                   for r in rows)
    klass = f' class="{cls}"' if cls else ""
    return f'<table id="{esc(ident)}"{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def kv_table(ident: str, pairs: list[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f'<table id="{esc(ident)}" class="kv"><tbody>{rows}</tbody></table>'


def figure(plot: Plot | None) -> str:
    if plot is None:
        return ""
    return (f'<figure><img id="{esc(plot.id)}" alt="{esc(plot.alt)}" src="{plot.uri}">'
            f"<figcaption>{esc(plot.alt)}</figcaption></figure>")


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


# ------------------------------------------------------------------ sections


def header(d: dict) -> str:
    it = d["iterations"]
    done = f"{it['done']}" + (f" of {it['planned']}" if it["planned"] is not None else "")
    secs = (d["results"] or {}).get("seconds", {})
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in secs.items() if isinstance(v, int | float))
    mlflow = d["mlflow_run_id"] or ("tracked, no run id yet" if d["tracked"] else "not tracked")
    pairs = [("run directory", d["workdir"]), ("domain", d["domain"]), ("model", d["model"]),
             ("levels", ", ".join(d["levels"])), ("iterations done", done), ("status", d["status"]),
             ("git commit", f"{d['git_commit']} ({d['git_commit_source']})" if d["git_commit"]
              else "unknown"),
             ("MLflow run", mlflow), ("run time (results.json)", parts or "-"),
             ("report written", d["written"])]
    return f"<h1>selfloop report: {esc(d['name'])}</h1>" + kv_table("run-info", pairs)


def _k(d: dict) -> str:
    for ev in [d["base"] or {}, *[r["eval"] for r in d["loop"]]]:
        for m in ev.values():
            if "k" in m:
                return str(m["k"])
    return "k"


def accuracy(d: dict) -> str:
    k = _k(d)
    head = ["generation", "arm"] + [h for lv in d["levels"] for h in (f"L{lv} greedy", f"L{lv} pass@{k}")]

    def row(g: int, arm: str, ev: dict) -> list[str]:
        cells = [c for lv in d["levels"] for c in (pct(ev.get(lv, {}).get("greedy_acc")),
                                                   pct(ev.get(lv, {}).get("pass_at_k")))]
        return [str(g), arm, *cells]

    rows = [row(0, "base", d["base"])] if d["base"] else []
    control = {r["generation"]: r for r in d["control"]}
    for r in d["loop"]:
        rows.append(row(r["generation"], "loop", r["eval"]))
        if r["generation"] in control:
            rows.append(row(r["generation"], "control", control.pop(r["generation"])["eval"]))
    rows += [row(g, "control", r["eval"]) for g, r in sorted(control.items())]
    if not rows:
        return note("Nothing evaluated yet (the base model is still being trained).")
    return (figure(report_plots.accuracy(d)) + table("table-accuracy", head, rows)
            + note("Held-out greedy accuracy per level; pass@k: at least one of k samples correct. "
                   "Generation 0 is the base model; the control arm trains on reference data only."))


def acceptance(d: dict) -> str:
    if not d["loop"]:
        return note("No generation finished yet.")
    head = ["generation", "acceptance", "accepted", "pool", "problems per level", "temperature", "top-p"]
    rows = [[str(r["generation"]), pct(r.get("verify", {}).get("acceptance_rate")),
             str(r.get("curate", {}).get("accepted", "-")), str(r.get("curate", {}).get("pool", "-")),
             ", ".join(f"L{lv}: {n}" for lv, n in r.get("plan", {}).items()) or "-",
             num(r["sampling"].get("temperature")), num(r["sampling"].get("top_p"))] for r in d["loop"]]
    return figure(report_plots.acceptance(d)) + table("table-acceptance", head, rows)


def single_draw(m: dict) -> bool:
    """A fixed-size set measured before the template entropy was averaged over draws: its
    n-gram Vendi is a mean (it has an sd), its template entropy one draw's (none)."""
    return "vendi_ngram_sd" in m and "template_entropy" in m and "template_entropy_sd" not in m


def diversity(d: dict) -> str:
    found = [(r["generation"], lv, s, r["diversity"][lv][s]) for r in d["loop"] if r.get("diversity")
             for lv in d["levels"] if lv in r["diversity"]
             for s in ("samples", "samples_well_formed", "accepted", "accepted_equal_n", "probe",
                       "probe_well_formed", "reference")
             if s in r["diversity"][lv]]
    if not found:
        return note("No diversity measured (the measure step was off, or no generation finished yet).")
    cols = [(k, t) for k, t in DIVERSITY if any(k in m for *_, m in found)]
    head = ["generation", "level", "set", *[t for _, t in cols]]

    def cell(m: dict, k: str) -> str:
        text = num(m.get(k), 0 if k == "n" else 3)
        return f"{text} *" if k == "template_entropy" and single_draw(m) else text

    rows = [[str(g), lv, s, *[cell(m, k) for k, _ in cols]] for g, lv, s, m in found]
    older = any(single_draw(m) for *_, m in found)
    return (figure(report_plots.diversity(d)) + table("table-diversity", head, rows)
            + (note("* One draw's template entropy: recorded by a version that averaged only the "
                    "n-gram Vendi over the fixed-size draws (this run was resumed across that change), "
                    "so it is not comparable with the means in the other rows of its set; "
                    "`selfloop ablate --report-only` recomputes it as a mean.") if older else "")
            + note("Per level: the model's samples, a fixed-size sample of their well-formed ones (legal "
                   "attempts), the answers accepted into the pool and a fixed-size sample of them "
                   "(accepted_equal_n: a Vendi score grows with the number of answers, which moves "
                   "with accuracy), the held-out probe "
                   "(the evaluation's pass@k samples: the same problems every generation), a fixed-size "
                   "sample of its well-formed answers, and the reference data (the baseline). Vendi scores "
                   "are effective numbers of distinct answers."))


def mix(d: dict) -> str:
    rows = [r for r in d["loop"] if "reference_share" in r.get("curate", {})]
    if not rows:
        return note("No training mix recorded yet.")
    sources = sorted({s for r in rows for s in r["curate"].get("synthetic_by_generation", {})}, key=int)
    # the reference share within each level's draws (recorded since reference_by_level existed)
    levels = sorted({lv for r in rows for lv in r["curate"].get("reference_share_by_level", {})}, key=int)
    head = ["generation", "reference share", *[f"reference share at level {lv}" for lv in levels],
            *[f"synthetic from gen {s}" for s in sources]]
    body = [[str(r["generation"]), pct(r["curate"]["reference_share"]),
             *[pct(r["curate"].get("reference_share_by_level", {}).get(lv)) for lv in levels],
             *[pct(r["curate"].get("synthetic_by_generation", {}).get(s, 0.0)) for s in sources]]
            for r in rows]
    return figure(report_plots.mix(d)) + table("table-mix", head, body)


def monitor(d: dict) -> str:
    if not d["loop"]:
        return note("No generation finished yet.")
    head = ["generation", "action", "signal", "value", "threshold", "reason"]
    rows = []
    for r in d["loop"]:
        for x in r.get("monitor") or []:
            rows.append([str(r["generation"]), x.get("action", "-"), x.get("signal", "-"),
                         num(x.get("value"), 3), num(x.get("threshold"), 3), x.get("reason", "-")])
        if not r.get("monitor"):
            rows.append([str(r["generation"]), "none", "-", "-", "-", "-"])
    out = table("table-monitor", head, rows)
    signals = sorted({s for r in d["loop"] for s in r["signals"]})
    if signals:
        out += "<h3>Signals the monitor watched</h3>" + table(
            "table-signals", ["generation", *signals],
            [[str(r["generation"]), *[num(r["signals"].get(s), 3) for s in signals]] for r in d["loop"]])
    return out + note("Decisions are applied by the next generation's plan; signals are means over levels.")


def _per_step(ident: str, d: dict, key: str, digits: int) -> str:
    rows = [(arm, r) for arm in ("loop", "control") for r in d[arm] if r.get(key)]
    steps = sorted({s for _, r in rows for s in r.get(key, {})})
    if not steps:
        return ""
    body = [[arm, str(r["generation"]), *[num(r.get(key, {}).get(s), digits) for s in steps],
             num(sum(r.get(key, {}).values()), digits) if key == "seconds" else
             num(max(r.get(key, {}).values(), default=None), digits)]
            for arm, r in sorted(rows, key=lambda x: (x[1]["generation"], x[0] != "loop"))]
    last = "total" if key == "seconds" else "max"
    return table(ident, ["arm", "generation", *steps, last], body)


def timings(d: dict) -> str:
    seconds = _per_step("table-seconds", d, "seconds", 1)
    if not seconds:
        return note("No step timings recorded yet.")
    out = figure(report_plots.seconds(d)) + seconds
    memory = _per_step("table-memory", d, "memory", 0)
    if memory:
        out += "<h3>Peak memory (MiB)</h3>" + figure(report_plots.memory(d)) + memory
    else:
        out += note("No per-step peak memory recorded (metrics.json has no \"memory\").")
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _bench(b: dict) -> str:
    data, slug = b["data"], _slug(b["file"].removesuffix(".json"))
    scalar = [(k, v) for k, v in data.items() if k != "command" and not isinstance(v, dict)]
    out = f'<h3 id="bench-{esc(slug)}">{esc(b["file"])}</h3>'
    if data.get("command"):
        out += f'<p>Produced by <code>{esc(data["command"])}</code></p>'
    heads = [f"{k} = {value(v)}" for k, v in scalar if HEADLINE.search(k)]
    if heads:
        out += f'<p class="headline"><strong>{esc("; ".join(heads))}</strong></p>'
    if scalar:
        out += kv_table(f"table-bench-{slug}", [(k, value(v)) for k, v in scalar])
    for k, v in data.items():
        if not isinstance(v, dict) or not v or len(v) > 40:
            continue
        ident = f"table-bench-{slug}-{_slug(k)}"
        if all(isinstance(x, dict) for x in v.values()):
            cols = sorted({c for x in v.values() for c in x})
            out += f"<h4>{esc(k)}</h4>" + table(ident, ["key", *cols],
                                                 [[str(r), *[value(x.get(c, "-")) for c in cols]]
                                                  for r, x in v.items()])
        else:
            out += f"<h4>{esc(k)}</h4>" + table(ident, ["key", "value"],
                                                 [[str(r), value(x)] for r, x in v.items()])
    return out


def benchmarks(d: dict) -> str:
    if not d["benchmarks"]:
        return ""
    return note("Measured performance of this project (benchmarks/results/*.json), each with the command "
                "that produced it.") + "".join(_bench(b) for b in d["benchmarks"])


def render(d: dict) -> str:
    parts = {"accuracy": accuracy, "acceptance": acceptance, "diversity": diversity, "mix": mix,
             "monitor": monitor, "timings": timings, "benchmarks": benchmarks}
    sections = [(key, title, content) for key, title in SECTIONS if (content := parts[key](d))]
    nav = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title, _ in sections)
    body = header(d) + f"<nav>{nav}</nav>" + "".join(
        f'<section id="{key}"><h2>{esc(title)}</h2>{content}</section>' for key, title, content in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>selfloop report: {esc(d['name'])}</title><style>{CSS}</style></head>"
            f"<body>{body}<footer class=\"note\">Written by <code>selfloop report</code> from the files in "
            f"{esc(d['workdir'])}.</footer></body></html>\n")
