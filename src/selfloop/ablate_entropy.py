"""Template entropy of a generation's fixed-size sets, recomputed from its files.

The answer-template entropy (digits masked) is the most direct reading of what narrows on
Countdown: which shapes of answer the model writes. The measure step records it for three
fixed-size sets per level (the well-formed samples, the accepted answers, the well-formed
probe samples), but runs measured before it averaged the entropy over its draws hold one
draw's value, which moves by about 0.1 bit from draw to draw. The ablation report therefore
recomputes the mean over the draws from the generation's files, with the measure step's
sizes, draws and seed (``steps.measure.mean_template_entropy``), so that every run, old or
new, is read the same way. A run that did not measure the accepted answers at a fixed size
(``measure.accepted_n`` 0, as runs made before the key read) is read at the default size, as
the report's Vendi of them is. It costs 1.1-1.9 s a generation on the 2-core machine
(seed 0's default arm at 16 samples), about half of it reading verified.jsonl; the rest is
mostly the exact checker deciding which samples are well-formed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from selfloop.config import Params
from selfloop.records import read_json, read_jsonl
from selfloop.workspace import Workspace

# A run's saved parameters and its well-formed check.
RunCheck = tuple[Params, Callable[[dict], bool]]


def legal_for(root: Path) -> RunCheck:
    """A run's saved parameters and its well-formed check (``loop.legal_attempt``). It loads
    the run's tokenizer: the report makes it once per arm and passes it on."""
    from selfloop import loop
    from selfloop import model as mdl
    from selfloop.config import saved_params

    params = saved_params(read_json(root / "params.json"))
    tokenizer = mdl.load_tokenizer(Workspace(root).init_model)
    return params, loop.legal_attempt(params, loop.domain_for(params, tokenizer))


def entropy_levels(ws: Workspace, g: int, params: Params,
                   legal: Callable[[dict], bool]) -> dict[str, dict[str, dict]]:
    """Per level and set (``samples_well_formed``, ``accepted_equal_n``,
    ``probe_well_formed``): ``n`` (the size measured: the fixed size, or all when fewer),
    ``available`` and ``template_entropy`` (the mean over the draws), and for the accepted
    answers ``full_size`` (at least the fixed size of them), as ``monitor.equal_n_series``
    reads it. A level without texts of a set has no entry for it; a generation evaluated
    without keeping its samples (no eval_samples.jsonl) has no probe. ``params``, ``legal``:
    from ``legal_for``."""
    from selfloop.steps.measure import (
        accepted_size,
        legal_texts,
        mean_template_entropy,
        probe_texts,
        texts_by_level,
    )
    from selfloop.steps.plan import generation_seed

    m, seed, d = params.measure, generation_seed(params, g), ws.gen(g)
    samples = read_jsonl(d / "verified.jsonl")
    probe = read_jsonl(d / "eval_samples.jsonl") if (d / "eval_samples.jsonl").exists() else []
    accepted = texts_by_level(read_jsonl(d / "accepted.jsonl"), weighted=False)
    size = accepted_size(m)
    out: dict[str, dict[str, dict]] = {}
    for lv in sorted({r["level"] for r in samples} | {p["level"] for p in probe} | set(accepted)):
        sets = {"samples_well_formed": (legal_texts(samples, lv, legal), m.probe_n),
                "accepted_equal_n": (accepted.get(lv, []), size),
                "probe_well_formed": (probe_texts(probe, lv), m.probe_n)}
        level = out.setdefault(str(lv), {})
        for kind, (texts, n) in sets.items():
            if texts:
                level[kind] = {"n": min(n, len(texts)), "available": len(texts),
                               "template_entropy": mean_template_entropy(texts, n, seed, m.probe_draws)}
        if "accepted_equal_n" in level:
            level["accepted_equal_n"]["full_size"] = len(accepted[lv]) >= size
    return out
