"""The collapse monitor: reads a generation's measurements and decides, with reasons, what
the next generation should do differently. Pure: metrics in, decisions out (data), so a
replay reproduces the decisions instead of re-deciding them.

Signals, each the mean over the levels that have it (a level is a capability slice; the
per-level numbers are in diversity.json, MLflow and the report, but a narrowing confined to one
level is diluted by the others before a threshold sees it; ``per_level`` also applies the three
checks calibrated on the first generation to each level on its own, signal ``NAME@L<level>``),
against thresholds calibrated from the first generation's own numbers, the base model's
(trained on the reference data only) or the reference data's (configurable fractions):

- diversity of the model's samples (n-gram Vendi) fell below ``vendi_floor`` x its first value
  -> raise the sampling temperature (then top-p) to widen what the model proposes;
- template entropy of the accepted answers fell below ``entropy_floor`` x its first value
  -> cap answers per problem harder (fewer near-copies of one shape per problem);
- drift from the reference data (template KL) rose above ``kl_ceiling`` x its first value,
  above ``kl_min``, and above the KL that as many answers drawn from the reference data
  itself show by chance (``kl_noise_quantile`` of seeded draws at each level's size: a few
  accepted answers at a level read as drift otherwise; seed 0's default run at generation 1
  had 11 at level 5, where that noise is 0.38 bits and their KL 0.49)
  -> raise the reference fraction of the training mix; but not in a generation whose own plan
  raised it (``kl_wait``): generation g's accepted answers were sampled by generation g-1's
  model, trained before a raise decided after g-1 took effect, so a raise shows in this
  signal two generations later. That generation records ``wait`` (applied to nothing)
  instead of raising again, so the fraction does not ratchet up on a signal that cannot have
  moved. What counts is the raise the plan applied (a history entry's ``applied``, from its
  plan.json), so with ``monitor.act`` off nothing ever waits;
- the held-out headroom, pass@k over greedy accuracy summed over levels (how much more the
  model solves with k temperature samples than with its one greedy answer), fell below
  ``headroom_floor`` x the base model's (generation 0, trained on reference data only): the
  model's own distribution is narrowing onto its greedy answer, whatever the selection
  policy samples -> raise the temperature and the reference fraction. Measured on the fixed
  held-out set with fixed k, so it compares across generations and arms;
- the diversity of the model's own held-out samples (the probe: n-gram Vendi of a fixed-size
  sample of the well-formed pass@k answers, the same problems every generation) fell below
  ``probe_floor`` x the base model's: the clearest sign that the model itself narrows, at
  equal n and with malformed output left out -> raise the temperature and the reference
  fraction, as for the headroom;
- the audit: the share of the accepted answers that the domain's exact checker confirms fell
  below ``audit_floor`` -> stop the loop: the configured verifier lets wrong answers into
  training, and nothing the sampler or the mix can change fixes that (1.0 by construction when
  the verifier is the exact checker; it matters for any other verifier, e.g. none);
- mean held-out greedy accuracy fell more than ``accuracy_drop`` below the best so far
  -> roll back to the champion checkpoint; twice in a row -> stop the loop."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    vendi_floor: float = 0.7
    entropy_floor: float = 0.7
    kl_ceiling: float = 3.0
    kl_min: float = 0.05  # a KL this small is never drift, whatever the first generation's was
    kl_noise_quantile: float = 0.95  # read by the caller, which passes decide() its kl_noise
    kl_wait: bool = True
    headroom_floor: float = 0.85
    probe_floor: float = 0.92
    audit_floor: float = 0.95
    accuracy_drop: float = 0.03
    max_rollbacks: int = 2
    per_level: bool = False  # also apply the first-generation-calibrated checks to each level


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def headroom(eval_levels: dict) -> float:
    """Held-out pass@k / greedy accuracy, each summed over levels (0 when nothing is solved
    greedily)."""
    greedy = sum(e["greedy_acc"] for e in eval_levels.values())
    return sum(e.get("pass_at_k", 0.0) for e in eval_levels.values()) / greedy if greedy else 0.0


def mean_over_levels(diversity: dict, kind: str, metric: str) -> float | None:
    """Mean over levels of one ``metric`` of one set (``samples``, ``accepted``,
    ``probe_well_formed``, ...) in per-level numbers shaped like diversity.json's, over the
    levels that have the set and the metric (a run measured before a metric existed lacks
    it); None when none has."""
    vs = [d[kind][metric] for d in diversity.values()
          if d.get(kind, {}).get("n") and d[kind].get(metric) is not None]
    return _mean(vs) if vs else None


def mean_vendi(diversity: dict, kind: str) -> float | None:
    """Mean over levels of the n-gram Vendi of one set (``mean_over_levels``)."""
    return mean_over_levels(diversity, kind, "vendi_ngram")


def equal_n_series(diversities: list[dict | None], kind: str = "accepted_equal_n",
                   metric: str = "vendi_ngram") -> list[float | None]:
    """Per generation (per-level numbers shaped like diversity.json's, from generation 1 on,
    None where missing), the mean n-gram Vendi (or another ``metric``) of a fixed-size set
    ``kind`` over the levels the first generation had at full size, so that every value
    averages the same levels at the same size. A generation lacking one of those levels at
    full size gets None; so do all when the first has no level at full size."""
    def full(div: dict | None) -> dict[str, float]:
        return {lv: d[kind][metric] for lv, d in (div or {}).items()
                if d.get(kind, {}).get("full_size")}

    levels = sorted(full(diversities[0])) if diversities else []
    out: list[float | None] = []
    for div in diversities:
        got = full(div)
        out.append(_mean([got[lv] for lv in levels]) if levels and all(lv in got for lv in levels) else None)
    return out


def signals(metrics: dict) -> dict[str, float]:
    """The numbers the monitor watches, averaged over levels that have them."""
    div = metrics.get("diversity", {})
    acc = [d["accepted"] for d in div.values() if d.get("accepted", {}).get("n")]
    audited = [a for a in acc if "audit_pass_share" in a]
    n_audited = sum(a["n"] for a in audited)
    return {
        "vendi_samples": mean_vendi(div, "samples") or 0.0,
        "vendi_probe": mean_vendi(div, "probe_well_formed") or 0.0,
        "entropy_accepted": _mean([a["template_entropy"] for a in acc]),
        "kl_accepted": _mean([a["template_kl_vs_reference"] for a in acc]),
        "accuracy": _mean([e["greedy_acc"] for e in metrics.get("eval", {}).values()]),
        "headroom": headroom(metrics.get("eval", {})),
        # pooled over levels (answers, not levels, are what training sees); 1.0 when not audited
        "audit_accepted": (sum(a["audit_pass_share"] * a["n"] for a in audited) / n_audited
                           if n_audited else 1.0),
    }


def level_signals(metrics: dict, level: str) -> dict[str, float]:
    """``signals`` of one level's diversity numbers only (the first-generation-calibrated
    ones are what ``Thresholds.per_level`` reads)."""
    return signals({"diversity": {level: metrics.get("diversity", {}).get(level, {})}})


def flags(decisions: list[dict]) -> list[dict]:
    """The decisions that flag something: all but the ``wait`` records."""
    return [d for d in decisions if d["action"] != "wait"]


def decide(history: list[dict], base_accuracy: float, th: Thresholds = Thresholds(),
           base_headroom: float = 0.0, base_probe: float = 0.0,
           kl_noise: dict[str, float] | None = None) -> list[dict]:
    """Decisions after the last generation of ``history`` (each a generation's metrics.json,
    oldest first, with its ``monitor`` decisions where it had them; the last one also with
    the decisions its plan applied, as ``applied``), given the base model's
    mean accuracy, headroom and probe Vendi (0: not known, that signal is off), and
    ``kl_noise``: per level, the template KL that as many answers as the last generation
    accepted there would show if drawn from the reference data itself
    (``diversity.reference_kl_noise``; none: no such floor). Each
    decision: {"action", "reason", "signal", "value", "threshold"}; a ``wait`` records a
    signal past its threshold that is not acted on (see the module docstring) and is not a
    flag (``flags``)."""
    if not history:
        return []
    first, now = signals(history[0]), signals(history[-1])
    out = []

    def flag(action: str, signal: str, threshold: float, why: str, value: float | None = None) -> None:
        out.append({"action": action, "signal": signal,
                    "value": round(now[signal] if value is None else value, 6),
                    "threshold": round(threshold, 6), "reason": why})

    noise_at = kl_noise or {}
    accepted_levels = [lv for lv, d in history[-1].get("diversity", {}).items()
                       if d.get("accepted", {}).get("n")]

    def against_first(first: dict, now: dict, suffix: str = "", where: str = "", kl: bool = True,
                      levels: list[str] = accepted_levels) -> None:
        """The signals calibrated on the first generation: of the mean over levels, or (with
        ``per_level``) of one level, whose signal names end in ``suffix`` (``@L5``); ``kl``
        off skips the drift check (a level that had no accepted answers to calibrate it on).
        The drift limit is also at least the reference data's own KL at the same size, the
        mean of ``kl_noise`` over ``levels`` (those whose accepted answers the signal averages)."""
        g1 = history[0]["generation"]
        if first["vendi_samples"] and now["vendi_samples"] < th.vendi_floor * first["vendi_samples"]:
            flag("raise_temperature", "vendi_samples" + suffix, th.vendi_floor * first["vendi_samples"],
                 f"sample diversity{where} fell below {th.vendi_floor:.0%} of generation {g1}'s",
                 now["vendi_samples"])
        entropy_limit = th.entropy_floor * first["entropy_accepted"]
        if first["entropy_accepted"] and now["entropy_accepted"] < entropy_limit:
            flag("cap_harder", "entropy_accepted" + suffix, entropy_limit,
                 f"accepted answers{where} narrowed to fewer shapes", now["entropy_accepted"])
        noise = _mean([noise_at.get(lv, 0.0) for lv in levels])
        kl_limit = max(th.kl_ceiling * first["kl_accepted"], th.kl_min, noise)
        if kl and now["kl_accepted"] > kl_limit:
            applied = history[-1].get("applied", [])
            if th.kl_wait and any(d["action"] == "raise_reference_fraction" for d in applied):
                flag("wait", "kl_accepted" + suffix, kl_limit,
                     f"accepted answers{where} drift from the reference data, but this generation's plan "
                     f"raised the reference fraction: these answers were sampled before that raise "
                     f"trained a model, so it shows in generation {history[-1]['generation'] + 1}'s",
                     now["kl_accepted"])
            else:
                flag("raise_reference_fraction", "kl_accepted" + suffix, kl_limit,
                     f"accepted answers{where} drift from the reference data", now["kl_accepted"])

    against_first(first, now)
    if th.per_level:
        div1, div_now = history[0].get("diversity", {}), history[-1].get("diversity", {})
        for level in sorted(set(div1) & set(div_now), key=int):
            against_first(level_signals(history[0], level), level_signals(history[-1], level),
                          f"@L{level}", f" at level {level}", bool(div1[level].get("accepted", {}).get("n")),
                          [level])
    if base_headroom and now["headroom"] < th.headroom_floor * base_headroom:
        why = (f"held-out pass@k / greedy fell below {th.headroom_floor:.0%} of the base model's "
               f"({base_headroom:.2f}): the model's distribution is narrowing")
        flag("raise_temperature", "headroom", th.headroom_floor * base_headroom, why)
        flag("raise_reference_fraction", "headroom", th.headroom_floor * base_headroom, why)
    probe_limit = th.probe_floor * base_probe
    if probe_limit and now["vendi_probe"] and now["vendi_probe"] < probe_limit:
        why = (f"the model's well-formed held-out samples fell below {th.probe_floor:.0%} of the base "
               f"model's diversity ({base_probe:.2f}): its own answers are narrowing")
        flag("raise_temperature", "vendi_probe", probe_limit, why)
        flag("raise_reference_fraction", "vendi_probe", probe_limit, why)
    if now["audit_accepted"] < th.audit_floor:
        flag("stop", "audit_accepted", th.audit_floor,
             f"only {now['audit_accepted']:.1%} of the accepted answers pass the domain's exact checker: "
             "the verifier lets wrong answers into training")
    best = max([base_accuracy, *[signals(h)["accuracy"] for h in history[:-1]]])
    if now["accuracy"] < best - th.accuracy_drop:
        rollbacks = 0
        for h in reversed(history[:-1]):
            if not any(d["action"] == "rollback" for d in h.get("monitor", [])):
                break
            rollbacks += 1
        action = "stop" if rollbacks + 1 >= th.max_rollbacks else "rollback"
        flag(action, "accuracy", best - th.accuracy_drop,
             f"held-out accuracy fell more than {th.accuracy_drop:.0%} below the best ({best:.3f})"
             + (f" after {rollbacks} rollback(s)" if action == "stop" else ""))
    return out
