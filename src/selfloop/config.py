"""Typed, frozen configuration loaded from params.yaml (one section per step).

Every field has help text. Unknown keys and wrong types are errors that name the key,
so a typo in params.yaml never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import shlex
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def _f(default: Any, help: str) -> Any:
    if isinstance(default, list | dict):
        return field(default_factory=lambda: default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RunConfig:
    workdir: str = _f("runs/default", "Directory holding every file the loop writes.")
    iterations: int = _f(5, "Self-improvement iterations after the base model.")
    seed: int = _f(0, "Root seed; every step derives its own seed from it.")
    replicate: int = _f(
        0, "Replicate number: shifts the seeds of generations 1 and on (sampling, training mixes, "
        "evaluation), not the base model's, so runs from one base differ by chance alone (0: the run's own)."
    )
    threads: int = _f(
        1, "Threads per process, for torch and for numpy's BLAS; the loop and the control arm run "
        "side by side, one core each."
    )
    control: bool = _f(True, "Also run the control arm (same training budget, reference data only).")
    gates: bool = _f(
        True, "Gate each batch with its great-expectations suite before training (off: to measure its cost)."
    )
    patience: int = _f(
        0, "Stop early when mean held-out accuracy has not improved for this many generations (0: never)."
    )
    device: str = _f(
        "cpu",
        "Where models sample, train and are scored: 'cpu' (results are bit-exact from run to run), 'cuda' "
        "(the first visible GPU; choose one with CUDA_VISIBLE_DEVICES) or 'auto' (cuda when one is "
        "visible, else cpu; params.json records which).",
    )


@dataclass(frozen=True)
class DomainConfig:
    name: str = _f("countdown", "Task domain. Only 'countdown' exists so far.")
    num_min: int = _f(1, "Smallest number given in a problem.")
    num_max: int = _f(9, "Largest number given in a problem.")
    target_min: int = _f(1, "Smallest target.")
    target_max: int = _f(99, "Largest target.")
    levels: list[int] = _f([3, 4, 5], "Levels (how many numbers) the loop may train and is evaluated on.")
    answer_format: str = _f(
        "infix", "How the default model writes answers: 'infix' ((9-3)*4) or 'steps' (9-3=6,6*4=24)."
    )


@dataclass(frozen=True)
class ReferenceConfig:
    train_per_level: dict[int, int] = _f(
        {3: 1000, 4: 100, 5: 30},
        "Solved reference examples per level (the real data, made by the exact solver).",
    )
    heldout_per_level: int = _f(500, "Held-out evaluation problems per level (never trained on).")


@dataclass(frozen=True)
class ModelConfig:
    path: str | None = _f(
        None, "A local Hugging Face causal-LM directory to use instead of the default GPT-2."
    )
    n_layer: int = _f(3, "Default GPT-2: transformer layers.")
    n_embd: int = _f(64, "Default GPT-2: width.")
    n_head: int = _f(4, "Default GPT-2: attention heads.")
    n_positions: int = _f(96, "Default GPT-2: context length in characters.")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = _f(800, "Optimizer steps per training call.")
    max_epochs: float = _f(
        8.0, "Most passes over the synthetic pool in one training call: while the pool is small, "
        "a call takes ceil(this x pool size / synthetic examples per batch) steps instead of "
        "train.steps (0: always train.steps; 8, with the default pool sizes, cuts generations 1-3 "
        "and keeps the answers from narrowing below generation 1's; reports/EXPERIMENTS.md). "
        "The control arm keeps train.steps.")
    batch_size: int = _f(64, "Examples per optimizer step.")
    lr: float = _f(1e-3, "Peak learning rate.")
    warmup_ratio: float = _f(0.0, "Fraction of steps spent warming up the learning rate.")
    schedule: str = _f(
        "constant", "Learning rate over each training call's steps, after warm-up: 'constant' "
        "(the peak throughout), 'cosine' or 'linear' (decay to 0 by its last step; the next call "
        "starts at the peak again).")
    reference_fraction: float = _f(
        0.2, "Share of every training batch drawn from the reference data (fixed, not proportional)."
    )
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    ema: float = _f(
        0.99, "Save an exponential moving average of the weights over each training call's steps, "
        "with this decay per step (0: the last step's weights). 0.99 averages about the last 100 "
        "steps; the first step keeps decay^(steps-1) of the weight (2% at 400 steps, 61% at 50). "
        "Costs a float32 copy of the parameters.")
    start: str = _f(
        "base", "Checkpoint each generation's training starts from: 'base' (generation 0's, as "
        "ReST-EM does: every generation is the base model fine-tuned on its mix, so drift does "
        "not compound; samples still come from the last generation, or the champion after a "
        "rollback) or 'previous' (the one it sampled from). The control arm follows the same rule.")
    template_balance: float = _f(
        0.25, "Each pass over the synthetic pool repeats an example about (count of its answer "
        "template in its level)^-this times, rescaled so level shares are kept (digits masked; 0: "
        "each once, 1: every template equally often; 0.25, with plan.samples 32: a level's rarer "
        "shapes are drawn somewhat more often, and the answers widen over generations).")
    difficulty_balance: float = _f(
        0.0, "Each pass over the synthetic pool repeats an example about (share of its problem's "
        "samples that passed)^-this times, rescaled so level shares are kept (0: each once, 1: "
        "an answer to a problem solved 1 time in 8 is drawn 8 times as often as one solved 8 "
        "times in 8). Combines with template_balance by multiplying.")
    pass_rate_balance: float = _f(
        0.0, "Each pass over the synthetic pool repeats an example about (pass rate of its answer "
        "template, relative to its level's, in the generation that sampled it)^-this times, "
        "rescaled so level shares are kept (0: each once; 1: divides out the verifier's preference "
        "for the shapes that pass most often). Rates are shrunk towards the level's by 16 "
        "pseudo-samples and read as at least 0.1 of it. Combines with the other balances by "
        "multiplying.")
    reference_by_level: bool = _f(
        False, "Draw each batch's reference examples level by level, in the proportions of the "
        "synthetic pool's levels that have reference data, so reference_fraction holds within each "
        "level when all have some (a pool level without any gives its share to the others; off: "
        "drawn from all reference data alike, so levels come in the reference data's own "
        "proportions, 88% level 3 with the default reference.train_per_level).")


@dataclass(frozen=True)
class BootstrapConfig:
    steps: int = _f(2000, "Optimizer steps to train the base model on reference data.")
    batch_size: int = _f(64, "Examples per optimizer step.")
    lr: float = _f(3e-3, "Peak learning rate (cosine decay).")


@dataclass(frozen=True)
class PlanConfig:
    problems: int = _f(6000, "New problems generated per iteration.")
    samples: int = _f(32, "Samples per problem (32, with train.template_balance 0.25: answers that "
                          "widen over generations instead of narrowing, on three seeds, for about "
                          "twice the generation time of 16; reports/EXPERIMENTS.md).")
    temperature: float = _f(1.0, "Sampling temperature.")
    top_p: float = _f(1.0, "Nucleus sampling threshold.")
    band_low: float = _f(0.02, "A level is at the frontier when its pass@k is at least this ...")
    band_high: float = _f(0.9, "... and its greedy accuracy is below this (else it is mastered).")
    mastered_share: float = _f(0.1, "Share of problems still drawn from mastered levels.")
    explore_share: float = _f(0.1, "Share of problems from the first level beyond the frontier.")


@dataclass(frozen=True)
class GenerateConfig:
    batch_size: int = _f(512, "Sequences sampled together (KV cache, left padding).")
    max_new_tokens: int = _f(48, "Longest response sampled, in tokens.")


@dataclass(frozen=True)
class VerifyConfig:
    max_chars: int = _f(200, "Answers longer than this are rejected unread.")
    verifier: str = _f(
        "countdown",
        "Which verifier decides: 'countdown' (the domain's exact checker) or 'none' (ablation: every "
        "answer within max_chars passes, its trace says verifier 'none', reason 'not_verified').",
    )


@dataclass(frozen=True)
class CurateConfig:
    selection: str = _f(
        "distinct",
        "Which verified answers to keep: 'distinct' (every distinct one), 'one' (one per problem) or "
        "'greedy' (ablation: generate samples each problem once greedily, one answer per problem; "
        "a monitor temperature raise switches back to sampling plan.samples).",
    )
    cap_per_problem: int = _f(2, "Most accepted answers kept per problem per generation.")
    accumulate: bool = _f(True, "Keep earlier generations' accepted data in the pool (else replace it).")


@dataclass(frozen=True)
class EvaluateConfig:
    pass_k: int = _f(8, "Samples per held-out problem for pass@k.")
    temperature: float = _f(1.0, "Temperature of the pass@k samples.")


@dataclass(frozen=True)
class MeasureConfig:
    embeddings: bool = _f(
        True, "Also measure diversity on all-MiniLM-L6-v2 sentence embeddings (Vendi, MMD to reference)."
    )
    embed_sample: int = _f(300, "Answers per level and set embedded (seeded sample; n-gram metrics use all).")
    confidence_sample: int = _f(512, "Samples per level scored for mean log-probability under their model.")
    probe_n: int = _f(256, "Well-formed held-out samples per level the probe diversity is measured on (a "
                      "seeded sample of this fixed size, so generations compare at equal n).")
    probe_draws: int = _f(32, "Seeded samples of probe_n the probe's n-gram Vendi and template entropy are "
                          "averaged over (one draw's Vendi standard deviation was about 0.5 over levels: 32 "
                          "draws give a standard error near 0.1).")
    accepted_n: int = _f(128, "Accepted answers per level whose n-gram Vendi and template entropy compare "
                         "across generations (a seeded sample of this fixed size, averaged over "
                         "probe_draws; a level with fewer is left out of the comparison; 0: not measured).")


@dataclass(frozen=True)
class MonitorConfig:
    vendi_floor: float = _f(0.7, "Flag when the samples' n-gram Vendi drops below this share of gen 1's.")
    entropy_floor: float = _f(0.7, "Flag when accepted answers' template entropy drops below this x gen 1's.")
    kl_ceiling: float = _f(3.0, "Flag when accepted answers' template KL to reference exceeds this x gen 1's")
    kl_min: float = _f(0.05, "A template KL below this (bits) is never flagged as drift.")
    kl_noise_quantile: float = _f(0.95, "Nor one that as many answers drawn from the reference data "
                                  "itself would show at this quantile (seeded draws at each level's "
                                  "size: the drift threshold calibrated from the reference data; 0: off).")
    kl_wait: bool = _f(True, "In a generation whose plan raised the reference fraction, record template "
                       "drift as 'wait' instead of raising again: its accepted answers were sampled "
                       "before the raise trained a model (off: raise every generation it persists).")
    headroom_floor: float = _f(0.85, "Flag when held-out pass@k / greedy accuracy falls below this x the "
                               "base model's (the model's own distribution narrowing).")
    probe_floor: float = _f(0.92, "Flag when the n-gram Vendi of the well-formed held-out probe samples "
                            "falls below this x the base model's (the model's own answers narrowing; "
                            "0: off).")
    audit_floor: float = _f(0.95, "Stop when fewer than this share of the accepted answers pass the "
                            "domain's exact checker (an audit of the configured verifier; 1.0 when it "
                            "is that checker).")
    accuracy_drop: float = _f(0.03, "Flag a rollback when held-out accuracy drops this far below the best.")
    max_rollbacks: int = _f(2, "Consecutive rollback flags after which the monitor stops the loop.")
    per_level: bool = _f(False, "Also check each level on its own against its generation-1 numbers (sample "
                         "Vendi, accepted template entropy and KL; signal NAME@L<level>), not only the "
                         "mean over levels, so a narrowing confined to one level is not diluted.")
    act: bool = _f(True, "Apply the decisions to the next generation's plan (off: only record them).")
    temperature_step: float = _f(0.2, "How much one 'raise_temperature' decision raises the temperature.")
    temperature_max: float = _f(1.5, "Highest sampling temperature the monitor sets.")
    top_p_step: float = _f(0.05, "How much one 'raise_temperature' decision raises top-p while below 1.")
    reference_step: float = _f(0.1, "How much one 'raise_reference_fraction' decision adds.")
    reference_max: float = _f(0.8, "Highest reference fraction the monitor sets.")


@dataclass(frozen=True)
class TrackConfig:
    dvc: bool = _f(
        True,
        "Version every generation with DVC when the run directory is inside a DVC repository "
        "(stages in <workdir>/dvc.yaml, hashes in its dvc.lock).",
    )
    dvc_push: bool = _f(
        True, "Push the run's files to the DVC default remote at the end, when one is configured."
    )
    mlflow: bool = _f(
        True, "Track the loop in MLflow (MLFLOW_TRACKING_URI, else sqlite mlflow.db in the project root)."
    )
    experiment: str = _f("selfloop", "MLflow experiment name.")
    model_name: str = _f("", "MLflow registered model name for the checkpoints (default: selfloop-<domain>).")


@dataclass(frozen=True)
class Params:
    run: RunConfig = field(default_factory=RunConfig)
    domain: DomainConfig = field(default_factory=DomainConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    track: TrackConfig = field(default_factory=TrackConfig)


SELECTIONS = ("distinct", "one", "greedy")
SCHEDULES = ("constant", "cosine", "linear")
STARTS = ("base", "previous")
DEVICES = ("cpu", "cuda", "auto")


class ConfigError(ValueError):
    """params.yaml or an override names an unknown key or holds a wrong value."""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in typing.get_args(tp):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp)
        return [_coerce(v, arg, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_coerce(k, kt, where): _coerce(v, vt, where) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if tp in (int, str) and isinstance(value, tp) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{name}: expected a mapping")
            kwargs[name] = _build(tp, value, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, tp, f"{where}.{name}")
    return cls(**kwargs)


def override_arg(key: str, value: Any) -> str:
    """The ``section.key=value`` that ``parse_override`` reads back as ``value``, quoted for a
    shell where it must be (a None is ``null``, not Python's ``None``, which reads as a
    string)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    text = text.removesuffix("...").strip()  # the document end marker after a bare scalar
    return shlex.quote(f"{key}={text}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` with a YAML value, e.g. ``train.steps=100``."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> None:
    """Set each ``section.key=value`` of ``overrides`` in ``data`` (parameters as plain dicts)."""
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {k} is not a section")
        node[keys[-1]] = value


def load_params(path: str | Path | None = "params.yaml", overrides: list[str] = ()) -> Params:
    """Params from a YAML file (missing keys take defaults) plus ``section.key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"{p}: no such parameters file")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
    apply_overrides(data, overrides)
    params = _build(Params, data, "params")
    validate(params)
    if params.model.path:  # absolute: DVC stages run in the run directory, not here
        path = Path(params.model.path).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"model.path: {params.model.path} is not a directory")
        params = dataclasses.replace(params, model=dataclasses.replace(params.model, path=str(path)))
    from selfloop.device import resolve_device  # imports torch, and only for 'cuda' or 'auto'

    run = dataclasses.replace(params.run, device=resolve_device(params.run.device))
    return dataclasses.replace(params, run=run)


def params_from_dict(data: dict[str, Any]) -> Params:
    """Params from a plain dict (e.g. ``to_dict`` output sent through JSON), validated."""
    params = _build(Params, data, "params")
    validate(params)
    return params


# Keys added after runs were recorded, each with the value that does what selfloop did before
# the key existed. A saved run without one is read (and resumed) as having that value, not
# today's default. A key whose absence means the run computed something else (the probe's
# probe_n and the gates' audit_floor came with the probe itself) has no entry here.
ADDED_KEYS: dict[str, Any] = {"train.schedule": "constant", "train.ema": 0.0, "measure.probe_draws": 5,
                              "train.start": "previous", "run.device": "cpu", "monitor.probe_floor": 0.0,
                              "measure.accepted_n": 0, "train.difficulty_balance": 0.0,
                              "train.reference_by_level": False, "monitor.kl_wait": False,
                              "train.pass_rate_balance": 0.0, "train.template_balance": 0.0,
                              "train.max_epochs": 0.0, "run.replicate": 0, "monitor.per_level": False,
                              "monitor.kl_noise_quantile": 0.0}


def with_added_keys(saved: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A saved run's parameters (``params.json``) with the ``ADDED_KEYS`` it lacks filled in,
    and those filled (name -> value)."""
    out = {s: dict(v) if isinstance(v, dict) else v for s, v in saved.items()}
    filled = {}
    for name, value in ADDED_KEYS.items():
        section, key = name.split(".")
        if key not in out.setdefault(section, {}):
            out[section][key] = filled[name] = value
    return out, filled


def saved_params(data: dict[str, Any]) -> Params:
    """A saved run's Params: ``params_from_dict`` after ``with_added_keys``."""
    return params_from_dict(with_added_keys(data)[0])


def validate(p: Params) -> None:
    """Cross-field checks with messages a user can act on."""
    checks = [
        (0.0 <= p.train.reference_fraction <= 1.0, "train.reference_fraction must be in [0, 1]"),
        (p.train.max_epochs >= 0, "train.max_epochs must be >= 0 (0: no cap)"),
        (p.run.replicate >= 0, "run.replicate must be >= 0"),
        (p.domain.num_min >= 1, "domain.num_min must be >= 1"),
        (p.domain.num_min <= p.domain.num_max, "domain.num_min must be <= domain.num_max"),
        (1 <= p.domain.target_min <= p.domain.target_max,
         "domain.target_min..target_max must be a range >= 1"),
        (all(lv >= 2 for lv in p.domain.levels), "domain.levels must all be >= 2"),
        (p.plan.samples >= 1 and p.plan.problems >= 1, "plan.samples and plan.problems must be >= 1"),
        (p.plan.temperature > 0, "plan.temperature must be > 0"),
        (0 < p.plan.top_p <= 1, "plan.top_p must be in (0, 1]"),
        (p.curate.selection in SELECTIONS,
         f"curate.selection must be one of {', '.join(map(repr, SELECTIONS))}"),
        (p.verify.verifier in (p.domain.name, "none"),
         f"verify.verifier must be {p.domain.name!r} (the domain's exact checker) or 'none' (no verifier)"),
        (p.train.steps >= 0 and p.train.batch_size >= 1, "train.steps >= 0 and train.batch_size >= 1"),
        (p.run.iterations >= 0, "run.iterations must be >= 0"),
        (p.run.threads >= 1, "run.threads must be >= 1"),
        (p.run.patience >= 0, "run.patience must be >= 0"),
        (p.run.device in DEVICES, f"run.device must be one of {', '.join(map(repr, DEVICES))}"),
        (p.train.template_balance >= 0, "train.template_balance must be >= 0"),
        (p.train.difficulty_balance >= 0, "train.difficulty_balance must be >= 0"),
        (p.train.pass_rate_balance >= 0, "train.pass_rate_balance must be >= 0"),
        (0 <= p.train.ema < 1, "train.ema must be in [0, 1)"),
        (p.train.schedule in SCHEDULES, f"train.schedule must be one of {', '.join(map(repr, SCHEDULES))}"),
        (p.train.start in STARTS, f"train.start must be one of {', '.join(map(repr, STARTS))}"),
        (0 <= p.monitor.audit_floor <= 1, "monitor.audit_floor must be in [0, 1]"),
        (0 <= p.monitor.probe_floor <= 1, "monitor.probe_floor must be in [0, 1]"),
        (0 <= p.monitor.kl_noise_quantile < 1, "monitor.kl_noise_quantile must be in [0, 1)"),
        (p.measure.probe_n >= 2, "measure.probe_n must be >= 2"),
        (p.measure.probe_draws >= 1, "measure.probe_draws must be >= 1"),
        (p.measure.accepted_n == 0 or p.measure.accepted_n >= 2,
         "measure.accepted_n must be 0 (off) or >= 2"),
        (p.model.n_embd % p.model.n_head == 0, "model.n_embd must be divisible by model.n_head"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)


def to_dict(p: Params) -> dict[str, Any]:
    return dataclasses.asdict(p)
