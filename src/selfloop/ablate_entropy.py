"""Template entropy of a generation's fixed-size sets, recomputed from its files.

The answer-template entropy (digits masked) is the most direct reading of what narrows on
Countdown: which shapes of answer the model writes. The measure step records it for three
fixed-size sets per level (the well-formed samples, the accepted answers, the well-formed
probe samples), but runs measured before it averaged the entropy over its draws hold one
draw's value, which moves by about 0.1 bit from draw to draw. The ablation report therefore
recomputes the mean over the draws from the generation's files, with the measure step's
sizes, draws and seed (``steps.measure.mean_template_entropy``), so that every run, old or
new, is read the same way. It is cheap: no Vendi, only counting."""

from __future__ import annotations

from collections.abc import Callable

from selfloop.config import Params
from selfloop.records import read_json, read_jsonl
from selfloop.workspace import Workspace

KINDS = ("samples_well_formed", "accepted_equal_n", "probe_well_formed")


def legal_for(ws: Workspace) -> tuple[Params, Callable[[dict], bool]]:
    """A run's saved parameters and its well-formed check (``loop.legal_attempt``), made once
    per run: loading the tokenizer is most of the cost."""
    from selfloop import loop
    from selfloop import model as mdl
    from selfloop.config import saved_params

    params = saved_params(read_json(ws.root / "params.json"))
    return params, loop.legal_attempt(params, loop.domain_for(params, mdl.load_tokenizer(ws.init_model)))


def entropy_levels(ws: Workspace, g: int, params: Params,
                   legal: Callable[[dict], bool]) -> dict[str, dict[str, dict]]:
    """Per level and set (``KINDS``), ``{"n": texts available, "template_entropy": mean over
    the draws}``, and for the accepted answers ``full_size`` (at least ``measure.accepted_n``
    of them), as ``monitor.equal_n_series`` reads it. A level without texts of a set has no
    entry for it. ``params``, ``legal``: from ``legal_for``."""
    from selfloop.config import MeasureConfig
    from selfloop.steps.measure import legal_texts, mean_template_entropy, probe_texts, texts_by_level
    from selfloop.steps.plan import generation_seed

    m, seed, d = params.measure, generation_seed(params, g), ws.gen(g)
    samples, probe = read_jsonl(d / "verified.jsonl"), read_jsonl(d / "eval_samples.jsonl")
    accepted = texts_by_level(read_jsonl(d / "accepted.jsonl"), weighted=False)
    accepted_n = m.accepted_n or MeasureConfig.accepted_n
    out: dict[str, dict[str, dict]] = {}
    for lv in sorted({r["level"] for r in samples} | {p["level"] for p in probe} | set(accepted)):
        sets = {"samples_well_formed": (legal_texts(samples, lv, legal), m.probe_n),
                "accepted_equal_n": (accepted.get(lv, []), accepted_n),
                "probe_well_formed": (probe_texts(probe, lv), m.probe_n)}
        level = out.setdefault(str(lv), {})
        for kind, (texts, n) in sets.items():
            if texts:
                level[kind] = {"n": len(texts),
                               "template_entropy": mean_template_entropy(texts, n, seed, m.probe_draws)}
        if "accepted_equal_n" in level:
            level["accepted_equal_n"]["full_size"] = len(accepted[lv]) >= accepted_n
    return out
