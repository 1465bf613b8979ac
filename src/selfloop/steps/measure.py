"""Measure a generation for collapse, per level: diversity of the model's own samples and of
the answers accepted from them, their drift from the reference data, and the model's
confidence (mean sequence log-probability of its samples).

The generation's samples answer the plan's problems, which move with the curriculum and the
selection policy, so they do not compare across generations or arms at equal footing. The
**probe** does: the held-out evaluation's pass@k samples (the same problems, k answers each,
every generation, every arm). ``probe`` measures all of them; ``probe_well_formed`` measures a
seeded sample of fixed size of the well-formed ones (legal attempts, right or wrong), so its
Vendi is not inflated by malformed output that disappears as the model learns the format.
``samples_well_formed`` does the same for the generation's own samples: at a level, the plan's
problems are drawn alike every generation, so at a fixed size the legal attempts compare too.
``accepted_equal_n`` measures the accepted answers at a fixed size: their count moves with
accuracy and the plan (a level's can double or halve from one generation to the next), and a
Vendi score grows with the number of items it sees, so the plain ``accepted`` numbers of two
generations differ by their sizes as well as by their variety."""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence

from selfloop import diversity as dv
from selfloop.config import MeasureConfig
from selfloop.steps.curate import passed

Embed = Callable[[Sequence[str]], object]


def texts_by_level(records: list[dict], weighted: bool = True) -> dict[int, list[str]]:
    """Responses per level; a record standing for ``count`` identical samples counts that
    often when ``weighted`` (repeats are what collapse looks like)."""
    out: dict[int, list[str]] = defaultdict(list)
    for r in records:
        out[r["level"]].extend([r["response"]] * (r.get("count", 1) if weighted else 1))
    return dict(out)


def _sample(items: list, n: int, seed: int) -> list:
    return items if len(items) <= n else random.Random(seed).sample(items, n)


def measure_set(texts: list[str], reference: list[str], embed: Embed | None, embed_sample: int,
                seed: int, reference_vectors=None) -> dict:
    """The diversity numbers of one set of answers (one level), against its reference."""
    if not texts:
        return {"n": 0}
    out = {
        "n": len(texts),
        "distinct": len(set(texts)),
        "vendi_ngram": dv.vendi(dv.ngram_features(texts)),
        "distinct_2": dv.distinct_n(texts, 2),
        "distinct_3": dv.distinct_n(texts, 3),
        "template_entropy": dv.template_entropy(texts),
        "template_kl_vs_reference": dv.template_kl(texts, reference) if reference else 0.0,
    }
    if embed is not None:
        vecs = embed(_sample(texts, embed_sample, seed))
        out["vendi_embedding"] = dv.vendi(vecs)
        if reference_vectors is not None:
            out["mmd_vs_reference"] = dv.mmd(vecs, reference_vectors, seed=seed)
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in out.items()}


def mean_logprob(model, tok, prompts: list[str], responses: list[str], max_length: int = 1024,
                 batch_size: int = 128) -> float:
    """Mean over samples of the summed log-probability of the response tokens (and end of
    sequence) given the prompt under ``model``, tokenized exactly as training tokenizes them:
    how sure the model is of what it wrote."""
    import torch

    from selfloop.steps.train import tokenize_example

    if not prompts:
        return 0.0
    total = 0.0
    for start in range(0, len(prompts), batch_size):
        rows = [tokenize_example(tok, p, r, max_length)
                for p, r in zip(prompts[start:start + batch_size], responses[start:start + batch_size],
                                strict=True)]
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
            labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
        ids, labels = ids.to(model.device), labels.to(model.device)
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=(labels != -100) | (ids != tok.pad_token_id)).logits
        target = labels[:, 1:]
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        picked = logp.gather(-1, target.clamp(min=0)[..., None])[..., 0]
        total += float((picked * (target != -100)).sum())
    return total / len(prompts)


def fixed_n_draws(texts: list[str], n: int, seed: int, draws: int) -> list[list[str]]:
    """The seeded samples of ``n`` of ``texts`` that a fixed-size number averages over: draw i
    uses ``seed`` + i. One draw when ``draws`` <= 1, and one draw of all of them when there
    are at most ``n``."""
    if len(texts) <= n or draws <= 1:
        return [_sample(texts, n, seed)]
    return [_sample(texts, n, seed + i) for i in range(draws)]


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 6)


def mean_template_entropy(texts: list[str], n: int, seed: int, draws: int) -> float:
    """The template entropy (bits, digits masked) of ``texts`` at a fixed size ``n``, averaged
    over ``fixed_n_draws``: what ``measure_fixed_n`` records."""
    return _mean([dv.template_entropy(d) for d in fixed_n_draws(texts, n, seed, draws)])


def accepted_size(m: MeasureConfig) -> int:
    """The fixed size the accepted answers are compared at: ``measure.accepted_n``, or its
    default for a run that did not measure them (0: what a run made before the key reads as)."""
    return m.accepted_n or MeasureConfig.accepted_n


def measure_fixed_n(texts: list[str], reference: list[str], embed_sample: int, n: int, seed: int,
                    draws: int) -> dict:
    """``measure_set`` of a seeded sample of ``n`` of ``texts`` (all of them when fewer), so
    generations compare at equal n. Its n-gram Vendi and its template entropy are means over
    ``draws`` seeded samples of ``n`` (``fixed_n_draws``), with the draws' standard deviations
    (``vendi_ngram_sd``, ``template_entropy_sd``; why several draws: see
    ``measure.probe_draws`` in params.yaml); the other numbers are the first draw's.
    A single draw of 256 answers moves the template entropy by about 0.1 bit, as much as
    some generation-to-generation changes. ``available``: how many texts there were."""
    picks = fixed_n_draws(texts, n, seed, draws)
    first = measure_set(picks[0], reference, None, embed_sample, seed)
    if len(picks) > 1:
        for key, values in (
                ("vendi_ngram", [first["vendi_ngram"]] + [dv.vendi(dv.ngram_features(p)) for p in picks[1:]]),
                ("template_entropy", [dv.template_entropy(p) for p in picks])):
            first[key], first[f"{key}_sd"] = _mean(values), round(statistics.stdev(values), 6)
    return {**first, "available": len(texts)}


def measure_probe(probe: list[dict], level: int, reference: list[str], embed: Embed | None,
                  embed_sample: int, probe_n: int, seed: int, reference_vectors=None,
                  draws: int = MeasureConfig.probe_draws) -> dict:
    """The probe's numbers at one level (see the module's docstring): every sample, and a
    fixed-size sample of the well-formed ones (``measure_fixed_n``)."""
    rows = [p for p in probe if p["level"] == level]
    well = probe_texts(probe, level)
    return {
        "probe": {**measure_set([p["response"] for p in rows], reference, embed, embed_sample, seed,
                                reference_vectors),
                  "well_formed_share": round(len(well) / len(rows), 6) if rows else 0.0},
        "probe_well_formed": measure_fixed_n(well, reference, embed_sample, probe_n, seed, draws),
    }


def probe_levels(probe: list[dict], probe_n: int, seed: int, draws: int) -> dict:
    """Per level, ``measure_probe``'s numbers for evaluation samples ``probe`` (no reference:
    no KL or MMD): for a generation without a measure step, the base model's above all."""
    return {str(lv): measure_probe(probe, lv, [], None, 0, probe_n, seed, None, draws)
            for lv in sorted({p["level"] for p in probe})}


def legal_texts(samples: list[dict], level: int, well_formed: Callable[[dict], bool]) -> list[str]:
    """The well-formed samples' responses at one level, a record standing for ``count``
    identical samples counted that often."""
    return [s["response"] for s in samples if s["level"] == level and well_formed(s)
            for _ in range(s.get("count", 1))]


def probe_texts(probe: list[dict], level: int) -> list[str]:
    """The well-formed probe samples' responses at one level (what ``probe_well_formed`` measures)."""
    return [p["response"] for p in probe if p["level"] == level and p["well_formed"]]


def samples_well_formed(samples: list[dict], level: int, well_formed: Callable[[dict], bool],
                        reference: list[str], embed_sample: int, n: int, seed: int, draws: int) -> dict:
    """The generation's own samples at one level, well-formed ones only (repeats counted, as
    in ``samples``), measured at a fixed size like the probe's: legal attempts on the plan's
    problems, so that malformed output going away as the model learns the format is not
    counted as lost diversity. ``share``: the well-formed share of the samples."""
    legal = legal_texts(samples, level, well_formed)
    total = sum(s.get("count", 1) for s in samples if s["level"] == level)
    return {**measure_fixed_n(legal, reference, embed_sample, n, seed, draws),
            "share": round(len(legal) / total, 6) if total else 0.0}


def accepted_equal_n(texts: list[str], reference: list[str], n: int, seed: int, draws: int) -> dict:
    """The accepted answers of one level at a fixed size ``n`` (``measure_fixed_n``).
    ``full_size``: whether there were at least ``n``; a level with fewer is measured on all it
    has, and comparisons across generations leave it out (``monitor.equal_n_series``)."""
    return {**measure_fixed_n(texts, reference, 0, n, seed, draws), "full_size": len(texts) >= n}


def answers_per_solved(records: list[dict], level: int, ok: Callable[[dict], bool] | None = None) -> dict:
    """Distinct answers per solved problem at one level: over the problems with at least one
    record that passes ``ok`` (every record when None), the mean count of distinct responses
    that pass. Of the generation's verified samples, how many ways the model found to each
    problem it solved; of the accepted answers, how many of those curation kept. Records
    without a ``problem_id`` (hand-made ones) count towards nothing; when no record of the
    level has one, there is nothing to report ({})."""
    ways: dict[str, set[str]] = defaultdict(set)
    identified = False
    for r in records:
        if r["level"] == level and "problem_id" in r:
            identified = True
            if ok is None or ok(r):
                ways[r["problem_id"]].add(r["response"])
    if not identified:
        return {}
    return {"solved": len(ways),
            "distinct_per_solved": round(sum(map(len, ways.values())) / len(ways), 6) if ways else 0.0}


def measure(samples: list[dict], accepted: list[dict], reference: list[dict], embed: Embed | None,
            embed_sample: int, seed: int, confidence: Callable[[list[dict]], float] | None = None,
            confidence_sample: int = 512, probe: list[dict] | None = None, probe_n: int = 256,
            audit: Callable[[dict], bool] | None = None,
            probe_draws: int = MeasureConfig.probe_draws,
            well_formed: Callable[[dict], bool] | None = None, accepted_n: int = 0) -> dict:
    """Per level: the model's samples, the accepted answers, the held-out probe (when given),
    and the reference data's own numbers (a baseline to read the others by; no monitor rule
    reads them yet). ``audit`` (a trusted check of one record) gives the share of accepted
    answers that pass it; the samples (verified records) and accepted answers also get
    ``answers_per_solved``;
    ``well_formed`` (whether a sample is a legal attempt) adds ``samples_well_formed``;
    ``accepted_n`` > 0 adds ``accepted_equal_n`` at levels with accepted answers."""
    ref = texts_by_level(reference, weighted=False)
    got, acc = texts_by_level(samples), texts_by_level(accepted, weighted=False)
    out: dict = {}
    for level in sorted(set(ref) | set(got) | set(acc) | {p["level"] for p in probe or []}):
        r = ref.get(level, [])
        r_vecs = embed(_sample(r, embed_sample, seed)) if embed is not None and r else None
        key = str(level)
        out[key] = {
            "samples": measure_set(got.get(level, []), r, embed, embed_sample, seed, r_vecs),
            "accepted": measure_set(acc.get(level, []), r, embed, embed_sample, seed, r_vecs),
            "reference": measure_set(r, r, embed, embed_sample, seed, None),
        }
        if level in got:
            out[key]["samples"].update(answers_per_solved(samples, level, passed))
        if level in acc:
            out[key]["accepted"].update(answers_per_solved(accepted, level))
        level_acc = [a for a in accepted if a["level"] == level]
        if audit is not None and level_acc:
            out[key]["accepted"]["audit_pass_share"] = round(sum(map(audit, level_acc)) / len(level_acc), 6)
        if accepted_n > 0 and level in acc:
            out[key]["accepted_equal_n"] = accepted_equal_n(acc[level], r, accepted_n, seed, probe_draws)
        if well_formed is not None and level in got:
            out[key]["samples_well_formed"] = samples_well_formed(
                samples, level, well_formed, r, embed_sample, probe_n, seed, probe_draws)
        if probe is not None:
            out[key].update(measure_probe(probe, level, r, embed, embed_sample, probe_n, seed, r_vecs,
                                              probe_draws))
        if confidence is not None:
            pool = [s for s in samples if s["level"] == level]
            picked = _sample(pool, confidence_sample, seed)
            out[key]["samples"]["mean_logprob"] = round(confidence(picked), 6) if picked else 0.0
    return out
