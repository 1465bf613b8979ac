"""The self-improvement loop as a plain Python program over files (no orchestrator).

bootstrap -> [plan -> generate -> verify -> curate -> train -> evaluate] x N, plus a control
arm that spends the same training budget on reference data only."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from selfloop import model as mdl
from selfloop import validate as gate
from selfloop.config import ConfigError, Params, override_arg, to_dict, with_added_keys
from selfloop.domains import Domain, get_domain
from selfloop.generation import HFGenerator
from selfloop.lock import exclusive
from selfloop.meter import Meter
from selfloop.records import read_json, read_jsonl, write_json, write_jsonl
from selfloop.steps import curate as cur
from selfloop.steps import evaluate as ev
from selfloop.steps import generate as gen
from selfloop.steps import plan as pl
from selfloop.steps import reference as ref
from selfloop.steps import train as tr
from selfloop.terminate import sigterm_raises
from selfloop.workspace import Workspace


class Reporter(Protocol):
    def step(self, name: str, total: int | None = None) -> contextlib.AbstractContextManager: ...
    def advance(self, n: int = 1) -> None: ...
    def iteration(self, row: dict) -> None: ...


class NullReporter:
    @contextlib.contextmanager
    def step(self, name: str, total: int | None = None) -> Iterator[None]:
        yield

    def advance(self, n: int = 1) -> None:
        pass

    def iteration(self, row: dict) -> None:
        pass


def quiet_libraries() -> None:
    """No per-row progress bars or advisory warnings from datasets/transformers: the loop
    shows its own progress."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def set_threads(n: int) -> None:
    """``n`` threads for torch and for numpy's BLAS (the measure and monitor steps' matrix work).

    BLAS keeps its own pool, one thread per core, that torch's setting does not reach. Beside
    busy neighbours (the control arm, other ablation arms) those threads wait on each other:
    two side-by-side ablation commands took 157-208 s a generation in the measure step against
    18-28 s. threadpoolctl caps that pool for the rest of the process."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # only settable once per process
        torch.set_num_interop_threads(1)
    threadpool_limits(limits=n, user_api="blas")


def domain_for(params: Params, tokenizer) -> Domain:
    template = None
    if getattr(tokenizer, "chat_template", None):
        def template(text: str) -> str:
            msgs = [{"role": "user", "content": text}]
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return get_domain(params.domain, template)


def _heldout_ids(ws: Workspace) -> set[str]:
    return {h["problem_id"] for h in read_jsonl(ws.heldout)}


def _generator(params: Params, model, tok) -> HFGenerator:
    return HFGenerator(model, tok, params.generate.batch_size, params.generate.max_new_tokens)


# ------------------------------------------------------------------ steps over files


def init_model(params: Params, ws: Workspace) -> None:
    """The starting checkpoint: a fresh char-level GPT-2, or the configured local model."""
    if mdl.is_complete(ws.init_model):
        return
    if params.model.path:
        model, tok = mdl.load(params.model.path)
    else:
        domain = get_domain(params.domain)
        tok = mdl.build_char_tokenizer(domain.alphabet)
        m = params.model
        model = mdl.build_gpt2(tok, m.n_layer, m.n_embd, m.n_head, m.n_positions, params.run.seed)
    # (not the path: the checkpoint's bytes must not depend on where the model lay)
    source = "local model" if params.model.path else "gpt2-from-config"
    mdl.save(model, tok, ws.init_model, {"source": source})


def make_data(params: Params, ws: Workspace) -> dict:
    tok = mdl.load_tokenizer(ws.init_model)
    counts = ref.run(params, domain_for(params, tok), ws.data)
    reference = read_jsonl(ws.reference)
    n_bad, chars, example = mdl.unwritable(tok, [r["prompt"] + r["response"] for r in reference])
    if n_bad:
        raise ConfigError(f"the model's tokenizer ({params.model.path or 'the default alphabet'}) cannot "
                          f"write {n_bad} of the {len(reference)} reference examples: it does not know "
                          f"{chars!r} (e.g. {example!r}); a model cannot learn what it reads as unknown")
    heldout_ids = _heldout_ids(ws)
    gate.validate_records("reference", reference, ws.reference, params, heldout_ids,
                          ws.data / "validation" / "reference.json")
    return counts


def _max_length(model) -> int:
    """Longest training sequence: the model's own context size (capped for CPU memory)."""
    cfg = model.config
    return min(getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", 1024), 1024)


def bootstrap(params: Params, ws: Workspace, rep: Reporter) -> None:
    """Train the base model on reference data only (gen_000/model)."""
    model, tok = mdl.load(ws.init_model, params.run.device)
    reference = read_jsonl(ws.reference)
    b = params.bootstrap
    mix = cur.build_mix(reference, [], b.steps, b.batch_size, 1.0, params.run.seed)
    by_id = {r["id"]: r for r in reference}
    with rep.step("bootstrap: train", b.steps):
        rows = tr.mix_to_rows(mix, by_id, tok, _max_length(model))
        tr.sft(model, tok, rows, steps=b.steps, batch_size=b.batch_size, lr=b.lr,
               scheduler="cosine", warmup_ratio=0.05, weight_decay=0.0, seed=params.run.seed,
               max_length=_max_length(model), progress=rep.advance)
    write_jsonl(ws.gen(0) / "pool.jsonl", [])
    tr.save_checkpoint(model, tok, ws.model(0), {"generation": 0, "arm": "base"})


def eval_seed(params: Params, g: int) -> int:
    """The sampling seed of generation ``g``'s held-out evaluation (both arms)."""
    return params.run.seed + 17 * g + pl.replicate_offset(params, g)


def evaluate(params: Params, ws: Workspace, g: int, arm: str, rep: Reporter) -> dict:
    model, tok = mdl.load(ws.model(g, arm), params.run.device)
    heldout = read_jsonl(ws.heldout)
    e = params.evaluate
    with rep.step(f"{arm} {g}: evaluate", len(heldout) * 2):
        result = ev.evaluate(domain_for(params, tok), _generator(params, model, tok), heldout,
                             e.pass_k, e.temperature, eval_seed(params, g),
                             params.verify.max_chars, progress=rep.advance)
    # the pass@k samples first: eval.json, written last, marks the step done
    write_jsonl(ws.gen(g, arm) / "eval_samples.jsonl", result.pop("samples"))
    write_json(ws.gen(g, arm) / "eval.json", result)
    return result


# One generation, step by step. Each step reads its inputs from files and writes its
# outputs to files, returning only small stats: the plain loop below and the Prefect flow
# (flows/) run the same functions.


def _mean_acc(path: Path) -> float:
    levels = read_json(path)["levels"]
    return sum(e["greedy_acc"] for e in levels.values()) / len(levels)


def step_plan(params: Params, ws: Workspace, g: int, rep: Reporter) -> dict:
    """The curriculum from the last evaluation, with the monitor's decisions on the last
    generation applied (its plan's policy carried over)."""
    plan = pl.make_plan(params, g, read_json(ws.gen(g - 1) / "eval.json"))
    if g > 1:
        previous = read_json(ws.gen(g - 1) / "plan.json")
        decisions = read_json(ws.gen(g - 1) / "monitor.json")["decisions"]
        accuracy = {k: _mean_acc(ws.gen(k) / "eval.json") for k in range(g)}
        plan = pl.apply_decisions(plan, previous, decisions, params, accuracy)
    write_json(ws.gen(g) / "plan.json", plan)
    return {"plan": plan["problems_per_level"]}


def _source(ws: Workspace, g: int) -> Path:
    """The checkpoint generation ``g`` samples from: the last one, or the champion after a
    rollback (the plan says which)."""
    return ws.model(ws.source_generation(g))


def step_generate(params: Params, ws: Workspace, g: int, rep: Reporter) -> dict:
    model, tok = mdl.load(_source(ws, g), params.run.device)
    domain = domain_for(params, tok)
    plan = read_json(ws.gen(g) / "plan.json")
    problems = gen.new_problems(domain, plan, _heldout_ids(ws))
    if params.curate.selection == "greedy":  # the provenance records the greedy sampling
        plan = gen.greedy_plan(plan)
    with rep.step(f"gen {g}: generate", len(problems)):
        ckpt = tr.checkpoint_info(_source(ws, g), ws.root)
        candidates, stats = gen.generate(domain, _generator(params, model, tok), plan, problems, ckpt,
                                         rep.advance)
    write_jsonl(ws.gen(g) / "candidates.jsonl", candidates)
    return {"generate": {**stats, "planned": sum(plan["problems_per_level"].values())}}


def step_verify(params: Params, ws: Workspace, g: int, rep: Reporter) -> dict:
    """Verify every candidate (``verify.verifier: none``: pass them unread, saying so), then
    gate the batch with its suite."""
    d = ws.gen(g)
    tok = mdl.load_tokenizer(ws.model(g - 1))
    check = gen.pass_unverified if params.verify.verifier == "none" else gen.verify
    verified, stats = check(domain_for(params, tok), read_jsonl(d / "candidates.jsonl"),
                            params.verify.max_chars)
    write_jsonl(d / "verified.jsonl", verified)
    gate.validate_records("candidates", verified, d / "verified.jsonl", params, _heldout_ids(ws),
                          d / "validation" / "candidates.json")
    return {"verify": stats}


def step_curate(params: Params, ws: Workspace, g: int, rep: Reporter) -> dict:
    """Curate, build the training mix, and gate both: nothing trains on a failed batch."""
    d = ws.gen(g)
    heldout_ids = _heldout_ids(ws)
    pool = read_jsonl(ws.gen(g - 1) / "pool.jsonl")
    policy = read_json(d / "plan.json").get("policy", {})  # the monitor's overrides, if any
    cfg = dataclasses.replace(params.curate,
                              cap_per_problem=policy.get("cap_per_problem", params.curate.cap_per_problem))
    accepted, decisions, counts = cur.curate(read_jsonl(d / "verified.jsonl"), pool, heldout_ids, cfg)
    pool = cur.next_pool(pool, accepted, params.curate.accumulate)
    reference = read_jsonl(ws.reference)
    t = params.train
    rf = policy.get("reference_fraction", t.reference_fraction)
    steps = cur.capped_steps(t.steps, t.batch_size, rf, len(pool), t.max_epochs)
    mix = cur.build_mix(reference, pool, steps, t.batch_size, rf, pl.generation_seed(params, g),
                        t.template_balance, t.difficulty_balance, t.reference_by_level,
                        t.pass_rate_balance)
    write_jsonl(d / "accepted.jsonl", accepted)
    write_jsonl(d / "curation.jsonl", decisions)
    write_jsonl(d / "pool.jsonl", pool)
    write_jsonl(d / "mix.jsonl", mix)
    makeup = cur.mix_makeup(mix, pool, reference)
    write_json(d / "makeup.json", makeup)  # a DVC metric: the mix by origin and by generation
    by_id = {r["id"]: r for r in (*reference, *pool)}
    gate.validate_records("accepted", accepted, d / "accepted.jsonl", params, heldout_ids,
                          d / "validation" / "accepted.json")
    gate.validate_mix(mix, by_id, d / "mix.jsonl", params, heldout_ids, bool(pool),
                      d / "validation" / "mix.json")
    return {"curate": {**counts, "accepted": len(accepted), "pool": len(pool), **makeup}}


def step_train(params: Params, ws: Workspace, g: int, rep: Reporter, arm: str = "loop") -> dict:
    """Train on this generation's mix, from the checkpoint ``train.start`` names."""
    d = ws.gen(g, arm)
    reference = read_jsonl(ws.reference)
    pool = read_jsonl(d / "pool.jsonl") if arm == "loop" else []
    by_id = {r["id"]: r for r in (*reference, *pool)}
    cur.assert_no_heldout(by_id.values(), _heldout_ids(ws))
    start = ws.start_generation(g, params.train.start, arm)
    model, tok = mdl.load(ws.model(start, arm), params.run.device)
    mix = read_jsonl(d / "mix.jsonl")
    with rep.step(f"{arm} {g}: train", len(mix)):  # train.max_epochs may have cut the steps
        _train(params, model, tok, tr.mix_to_rows(mix, by_id, tok, _max_length(model)),
               len(mix), pl.generation_seed(params, g), rep)
    tr.save_checkpoint(model, tok, ws.model(g, arm), {"generation": g, "arm": arm, "trained_from": start})
    return {}


def step_evaluate(params: Params, ws: Workspace, g: int, rep: Reporter, arm: str = "loop") -> dict:
    return {"eval": evaluate(params, ws, g, arm, rep)["levels"]}


def step_measure(params: Params, ws: Workspace, g: int, rep: Reporter) -> dict:
    """Diversity and confidence of this generation's samples and accepted answers, per level."""
    from selfloop.diversity import embed
    from selfloop.steps.measure import mean_logprob, measure

    d, m = ws.gen(g), params.measure
    model, tok = mdl.load(_source(ws, g), params.run.device)

    def confidence(records: list[dict]) -> float:
        return mean_logprob(model, tok, [r["prompt"] for r in records], [r["response"] for r in records])

    domain = domain_for(params, tok)

    def audit(record: dict) -> bool:  # the domain's exact checker, whatever verified the record
        return domain.verify(record["response"], record["problem"], params.verify.max_chars).correct

    with rep.step(f"gen {g}: measure"):
        result = measure(read_jsonl(d / "verified.jsonl"), read_jsonl(d / "accepted.jsonl"),
                         read_jsonl(ws.reference), embed if m.embeddings else None, m.embed_sample,
                         pl.generation_seed(params, g), confidence, m.confidence_sample,
                         read_jsonl(d / "eval_samples.jsonl"), m.probe_n, audit, m.probe_draws,
                         legal_attempt(params, domain), m.accepted_n)
    write_json(d / "diversity.json", result)
    return {"diversity": result}


def legal_attempt(params: Params, domain: Domain) -> Callable[[dict], bool]:
    """Whether a sample record is a well-formed attempt, right or wrong, by the domain's exact
    checker (whatever verified it): what ``samples_well_formed`` keeps."""
    def legal(record: dict) -> bool:
        return domain.verify(record["response"], record["problem"], params.verify.max_chars).well_formed
    return legal


def probe_vendi_of(params: Params, samples: list[dict], g: int) -> float | None:
    """Mean over levels of the well-formed probe samples' n-gram Vendi of generation ``g``'s
    evaluation samples, as the measure step computes it (its sample size, draws and seed):
    for the generations without a measure step, the base model's and the control arm's."""
    from selfloop.monitor import mean_vendi
    from selfloop.steps.measure import probe_levels

    m = params.measure
    return mean_vendi(probe_levels(samples, m.probe_n, pl.generation_seed(params, g), m.probe_draws),
                      "probe_well_formed")


def base_probe_vendi(params: Params, ws: Workspace) -> float:
    """The base model's probe diversity (``probe_vendi_of`` generation 0), of which the
    monitor's ``probe_floor`` is a share; 0 when it has none."""
    path, m = ws.gen(0) / "eval_samples.jsonl", params.measure
    if not path.exists():
        return 0.0
    stat = path.stat()  # a base run replaced in place must not be read from the memo
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, m.probe_n, m.probe_draws, params.run.seed)
    if key not in _BASE_PROBE:
        _BASE_PROBE[key] = probe_vendi_of(params, read_jsonl(path), 0) or 0.0
    return _BASE_PROBE[key]


_BASE_PROBE: dict[tuple, float] = {}  # one computation per process and base run (~3 s)


def step_monitor(params: Params, ws: Workspace, g: int, rep: Reporter) -> dict:
    """The collapse monitor's decisions after generation ``g``, from the measurements and
    evaluations of generations 1..g (files, so a replay reproduces them). Decisions are
    recorded and shown; a ``stop`` ends the loop, the next plan applies the others
    (``steps.plan.apply_decisions``), a ``wait`` changes nothing."""
    from selfloop.monitor import signals

    history = monitor_history(ws, g, [read_json(ws.gen(k) / "monitor.json")["decisions"]
                                      for k in range(1, g)])
    kl_noise = reference_kl_noise(params, ws, history[-1])
    decisions = monitor_decide(params, ws, history, kl_noise)
    write_json(ws.gen(g) / "monitor.json", {"decisions": decisions, "signals": signals(history[-1]),
                                            "kl_noise": kl_noise})
    return {"monitor": decisions}


def monitor_history(ws: Workspace, g: int, earlier: list[list[dict]]) -> list[dict]:
    """What the monitor reads after generation ``g``: generations 1..g's measurements and
    evaluations, with ``earlier`` (generations 1..g-1's decisions) as their ``monitor``, and
    generation g's plan's applied decisions as its ``applied`` (for ``kl_wait``)."""
    history = []
    for k in range(1, g + 1):
        d = ws.gen(k)
        h = {"generation": k, "diversity": read_json(d / "diversity.json"),
             "eval": read_json(d / "eval.json")["levels"]}
        if k < g:
            h["monitor"] = earlier[k - 1]
        history.append(h)
    history[-1]["applied"] = read_json(ws.gen(g) / "plan.json").get("decisions", [])
    return history


def monitor_decide(params: Params, ws: Workspace, history: list[dict],
                   kl_noise: dict[str, float] | None = None) -> list[dict]:
    """``monitor.decide`` on ``history`` with ``params.monitor``'s thresholds, the base
    model's (generation 0's) accuracy, headroom and probe diversity, and the reference data's
    own template KL at the last generation's sizes (``kl_noise``, computed when not given)."""
    from selfloop.monitor import Thresholds, decide, headroom

    base = read_json(ws.gen(0) / "eval.json")["levels"]
    base_acc = sum(e["greedy_acc"] for e in base.values()) / len(base)
    m = to_dict(params)["monitor"]
    th = Thresholds(**{f.name: m[f.name] for f in dataclasses.fields(Thresholds)})
    return decide(history, base_acc, th, base_headroom=headroom(base),
                  base_probe=base_probe_vendi(params, ws) if th.probe_floor else 0.0,
                  kl_noise=reference_kl_noise(params, ws, history[-1]) if kl_noise is None else kl_noise)


def reference_kl_noise(params: Params, ws: Workspace, metrics: dict) -> dict[str, float]:
    """Per level with accepted answers in ``metrics`` (a generation's), the template KL to
    the reference data that as many answers drawn from the reference data itself show at
    ``monitor.kl_noise_quantile`` (seeded by the run's seed, the level and the size, so a
    replay computes the same); empty when that quantile is 0."""
    from selfloop.diversity import reference_kl_noise as noise

    q = params.monitor.kl_noise_quantile
    sizes = {lv: d["accepted"]["n"] for lv, d in metrics.get("diversity", {}).items()
             if d.get("accepted", {}).get("n")}
    if not q or not sizes:
        return {}
    by_level: dict[str, list[str]] = {}
    for r in read_jsonl(ws.reference):
        by_level.setdefault(str(r["level"]), []).append(r["response"])
    return {lv: round(noise(by_level.get(lv, []), n, q, f"{params.run.seed}-{lv}-{n}"), 6)
            for lv, n in sizes.items()}


STEPS = (("plan", step_plan), ("generate", step_generate), ("verify", step_verify),
         ("curate", step_curate), ("train", step_train), ("evaluate", step_evaluate),
         ("measure", step_measure), ("monitor", step_monitor))


def finish_iteration(ws: Workspace, g: int, stats: dict, seconds: dict, arm: str = "loop",
                     memory: dict | None = None) -> dict:
    """The generation's metrics.json, written last: its presence marks the generation done.
    ``seconds`` and ``memory`` (peak RSS in MiB) are per step."""
    metrics = {"generation": g, "arm": arm, **stats, "seconds": seconds, "memory": memory or {}}
    write_json(ws.gen(g, arm) / "metrics.json", metrics)
    return metrics


def iteration(params: Params, ws: Workspace, g: int, rep: Reporter) -> dict:
    """One generation of the loop: plan -> generate -> verify -> curate -> train -> evaluate."""
    timer, stats = Meter(), {}
    for name, step in STEPS:
        with timer(name):
            stats.update(step(params, ws, g, rep))
    return finish_iteration(ws, g, stats, timer.times, memory=timer.memory)


# train.schedule -> the transformers scheduler (each with the configured warm-up first)
SCHEDULERS = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}


def _train(params: Params, model, tok, rows: list[dict], steps: int, seed: int, rep: Reporter) -> None:
    t = params.train
    tr.sft(model, tok, rows, steps=steps, batch_size=t.batch_size, lr=t.lr,
           scheduler=SCHEDULERS[t.schedule], warmup_ratio=t.warmup_ratio,
           weight_decay=t.weight_decay, seed=seed, max_length=_max_length(model),
           progress=rep.advance, ema=t.ema)


def step_control_mix(params: Params, ws: Workspace, g: int, rep: Reporter) -> dict:
    """The control arm's mix: the same steps and batch size, reference data only."""
    reference = read_jsonl(ws.reference)
    t = params.train
    mix = cur.build_mix(reference, [], t.steps, t.batch_size, 1.0, pl.generation_seed(params, g))
    d = ws.gen(g, "control")
    write_jsonl(d / "mix.jsonl", mix)
    gate.validate_mix(mix, {r["id"]: r for r in reference}, d / "mix.jsonl", params, _heldout_ids(ws),
                      False, d / "validation" / "mix.json")
    return {}


def control_iteration(params: Params, ws: Workspace, g: int, rep: Reporter) -> dict:
    """The control arm: the same training steps, reference data only."""
    timer, stats = Meter(), {}
    with timer("validate"):
        step_control_mix(params, ws, g, rep)
    with timer("train"):
        step_train(params, ws, g, rep, arm="control")
    with timer("evaluate"):
        stats.update(step_evaluate(params, ws, g, rep, arm="control"))
    return finish_iteration(ws, g, stats, timer.times, arm="control", memory=timer.memory)


# ------------------------------------------------------------------ the whole run


def control_arm(params: Params) -> None:
    """Every control iteration, in order (the body of the control process)."""
    quiet_libraries()
    set_threads(params.run.threads)
    ws = Workspace(Path(params.run.workdir))
    for g in range(1, params.run.iterations + 1):
        if not (ws.gen(g, "control") / "metrics.json").exists():
            control_iteration(params, ws, g, NullReporter())


def _start_control(params: Params):
    import multiprocessing as mp

    proc = mp.get_context("spawn").Process(target=control_arm, args=(params,), name="selfloop-control")
    proc.start()
    return proc


def check_resume(ws: Workspace, params: Params) -> None:
    """Resuming with other parameters would mix two runs: refuse, naming the keys."""
    saved_path = ws.root / "params.json"
    if not saved_path.exists():
        return
    saved, filled = with_added_keys(read_json(saved_path))
    now = json.loads(json.dumps(to_dict(params)))
    # More iterations only add generations (none of a generation's steps reads the count), so
    # a run, finished or not, may be resumed with a larger run.iterations; never a smaller one.
    if now["run"]["iterations"] > saved.get("run", {}).get("iterations", now["run"]["iterations"]):
        saved["run"]["iterations"] = now["run"]["iterations"]
    # Tracking settings change where the run is recorded, not what it computes.
    keys = [(s, k) for s in now if s != "track" for k in now[s]]
    missing = [f"{s}.{k}" for s, k in keys if k not in saved.get(s, {})]
    diff = [f"{s}.{k}" for s, k in keys if k in saved.get(s, {}) and saved[s][k] != now[s][k]]
    reasons = []
    if diff:
        def finish_as_begun(key: str) -> str:  # a default that changed since is the common case
            section, name = key.split(".")
            was = saved[section][name]
            why = (f"the run predates this key, so it ran with {was!r}" if key in filled
                   else f"the run has {was!r}")
            return f"{key}: {why} (--set {override_arg(key, was)} finishes it as it began)"
        reasons.append(f"parameters differ from the saved run: {diff}"
                       + "".join(f"; {finish_as_begun(k)}" for k in diff))
    if missing:
        reasons.append(f"it was made by an earlier selfloop without {missing}; "
                       "finish it with that version, or start a new run")
    if reasons:  # every reason at once, so that one retry can answer them all
        raise ConfigError(f"cannot resume {ws.root}: " + "; and ".join(reasons))


def done(path: Path) -> dict | None:
    """A step's last file, read only if it exists (it is written atomically, last)."""
    return read_json(path) if path.exists() else None


def run(params: Params, rep: Reporter | None = None, resume: bool = False, fresh: bool = False) -> dict:
    """Bootstrap plus ``run.iterations`` generations (and the control arm); returns results.

    With ``resume`` every step whose last file exists is skipped and the first incomplete
    one is redone from its inputs; all steps are deterministic, so a run killed at any point
    and resumed ends with the same files as one that never stopped."""
    ws = Workspace(Path(params.run.workdir))
    with claim(ws, params, resume=resume, fresh=fresh):
        return drive(params, ws, rep or NullReporter())


@contextlib.contextmanager
def claim(ws: Workspace, params: Params, resume: bool = False, fresh: bool = False) -> Iterator[None]:
    """Hold the run directory for one run: lock it, then empty it (``fresh``), check the
    saved parameters (``resume``), or refuse a directory that already holds a run.

    First of all, before ``fresh`` empties anything: a run directory DVC could not record
    (one git ignores) fails here, so a run that cannot start never deletes the one it would
    have replaced. Both the plain loop and the Prefect flow claim before they drive."""
    from selfloop.versioning import Versioning

    Versioning(ws.root, params.track.dvc).preflight()
    with exclusive(ws):
        if fresh:  # everything but the lock file, which a waiting process may already hold open
            for p in ws.root.iterdir():
                if p.name != ".lock":
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        if resume:
            check_resume(ws, params)
        elif (ws.root / "params.json").exists():
            raise ConfigError(f"{ws.root} already holds a run: resume it or remove it first")
        yield


def prepare(params: Params, ws: Workspace, rep: Reporter) -> None:
    """Starting checkpoint, reference data and held-out sets (skipped when already done)."""
    quiet_libraries()
    set_threads(params.run.threads)
    write_json(ws.root / "params.json", to_dict(params))
    with rep.step("reference data"):
        init_model(params, ws)
        if not (done(ws.data / "validation" / "reference.json") or {}).get("success"):
            make_data(params, ws)


def base(params: Params, ws: Workspace, rep: Reporter) -> dict:
    """The base model (gen_000) and its held-out evaluation (skipped when already done)."""
    if not mdl.is_complete(ws.model(0)):
        bootstrap(params, ws, rep)
    return done(ws.gen(0) / "eval.json") or evaluate(params, ws, 0, "loop", rep)


def next_action(params: Params, history: list[dict], monitor: list[dict] | None = None) -> tuple[str, str]:
    """After each generation: ("continue" | "stop", reason). Stops when the collapse monitor
    decided ``stop`` (and acts), or on a plateau: mean held-out greedy accuracy over levels not
    better than its best for ``run.patience`` generations."""
    # With monitor.act off the decisions are only recorded: a recorded "stop" ends nothing.
    stops = [d["reason"] for d in (monitor or []) if d["action"] == "stop" and params.monitor.act]
    if stops:
        return "stop", f"monitor: {stops[0]}"
    patience = params.run.patience
    if patience <= 0 or len(history) <= patience:
        return "continue", ""
    score = [sum(e["greedy_acc"] for e in h.values()) / len(h) for h in history]
    best_before = max(score[: -patience])
    if max(score[-patience:]) <= best_before:
        return "stop", f"plateau: no gain over {best_before:.3f} in the last {patience} generations"
    return "continue", ""


def finish_run(params: Params, ws: Workspace, base_eval: dict, rows: list[dict], ctl, rep: Reporter,
               seconds: dict, stop_reason: str = "", memory: dict | None = None) -> dict:
    """Wait for the control arm (stopping it if the loop stopped early) and write results."""
    control = []
    if ctl is not None:
        if len(rows) < params.run.iterations and ctl.is_alive():
            ctl.terminate()
        with rep.step("control arm (finishing)"):
            ctl.join()
        stopped_by_us = len(rows) < params.run.iterations and ctl.exitcode == -signal.SIGTERM
        if ctl.exitcode != 0 and not stopped_by_us:
            raise RuntimeError(f"control arm failed (exit code {ctl.exitcode}); see its log above")
        for g in range(1, len(rows) + 1):
            c = done(ws.gen(g, "control") / "metrics.json")
            if c is None:
                break
            control.append(c)
            rep.iteration(c)
    results = {
        "base": base_eval["levels"],
        "loop": [r["eval"] for r in rows],
        "control": [c["eval"] for c in control],
        "stopped": stop_reason,
        "seconds": seconds,
        "memory": memory or {},  # peak RSS (MiB) of the loop process per part
    }
    write_json(ws.results(), results)
    return results


def drive(params: Params, ws: Workspace, rep: Reporter, *, prepare_fn=prepare, base_fn=base,
          iteration_fn=iteration, recorder=None) -> dict:
    """The whole run, given how to do each part: the plain loop calls the functions above,
    the Prefect flow passes its tasks and per-iteration subflow. Generations already done
    (their metrics.json exists) are kept. ``recorder`` (default: ``recording.Recorder``)
    versions each finished part with DVC and tracks it in MLflow. A SIGTERM stops the control
    arm's process and marks the tracked run failed before this process exits (143)."""
    with sigterm_raises():
        return _drive(params, ws, rep, prepare_fn=prepare_fn, base_fn=base_fn,
                      iteration_fn=iteration_fn, recorder=recorder)


def _drive(params: Params, ws: Workspace, rep: Reporter, *, prepare_fn, base_fn, iteration_fn,
           recorder) -> dict:
    from selfloop.recording import Recorder

    t0 = time.perf_counter()
    timer = Meter()
    with timer("data"):
        prepare_fn(params, ws, rep)
    rec = recorder or Recorder(params, ws)
    ctl = None
    try:
        with timer("record"):
            rec.open()
        with timer("bootstrap"):
            base_eval = base_fn(params, ws, rep)
        with timer("record"):
            rec.base(base_eval)
        rep.iteration({"generation": 0, "arm": "loop", "eval": base_eval["levels"],
                       "seconds": dict(timer.times)})
        # The control arm needs only the base model: it runs beside the loop in its own
        # process (tiny models use one core each best; see run.threads).
        ctl = _start_control(params) if params.run.control and params.run.iterations else None
        rows: list[dict] = []
        reason = ""
        for g in range(1, params.run.iterations + 1):
            m = done(ws.gen(g) / "metrics.json") or iteration_fn(params, ws, g, rep)
            with timer("record"):
                rec.generation(g, m)
            rows.append(m)
            rep.iteration(m)
            action, reason = next_action(params, [base_eval["levels"], *[r["eval"] for r in rows]],
                                         m.get("monitor"))
            if action == "stop":
                break
        results = finish_run(params, ws, base_eval, rows, ctl, rep,
                             {**timer.times, "total": round(time.perf_counter() - t0, 1)}, reason,
                             timer.memory)
        rec.close(results, len(results["control"]))
        return results
    except BaseException:
        if ctl is not None and ctl.is_alive():
            ctl.terminate()
        with contextlib.suppress(Exception):
            rec.close({}, 0, status="FAILED")
        raise
