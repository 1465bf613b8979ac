"""The self-improvement loop as a plain Python program over files (no orchestrator).

bootstrap -> [plan -> generate -> verify -> curate -> train -> evaluate] x N, plus a control
arm that spends the same training budget on reference data only."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from selfloop import model as mdl
from selfloop import validate as gate
from selfloop.config import ConfigError, Params, to_dict
from selfloop.domains import Domain, get_domain
from selfloop.generation import HFGenerator
from selfloop.lock import exclusive
from selfloop.records import read_json, read_jsonl, write_json, write_jsonl
from selfloop.steps import curate as cur
from selfloop.steps import evaluate as ev
from selfloop.steps import generate as gen
from selfloop.steps import plan as pl
from selfloop.steps import reference as ref
from selfloop.steps import train as tr
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
    import torch

    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # only settable once per process
        torch.set_num_interop_threads(1)


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


class _Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.times[name] = round(self.times.get(name, 0.0) + time.perf_counter() - t, 3)


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
    mdl.save(model, tok, ws.init_model, {"source": params.model.path or "gpt2-from-config"})


def make_data(params: Params, ws: Workspace) -> dict:
    _, tok = mdl.load(ws.init_model)
    counts = ref.run(params, domain_for(params, tok), ws.data)
    heldout_ids = _heldout_ids(ws)
    gate.validate_records("reference", read_jsonl(ws.reference), ws.reference, params, heldout_ids,
                          ws.data / "validation" / "reference.json")
    return counts


def _max_length(model) -> int:
    """Longest training sequence: the model's own context size (capped for CPU memory)."""
    cfg = model.config
    return min(getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", 1024), 1024)


def bootstrap(params: Params, ws: Workspace, rep: Reporter) -> None:
    """Train the base model on reference data only (gen_000/model)."""
    model, tok = mdl.load(ws.init_model)
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


def evaluate(params: Params, ws: Workspace, g: int, arm: str, rep: Reporter) -> dict:
    model, tok = mdl.load(ws.model(g, arm))
    heldout = read_jsonl(ws.heldout)
    e = params.evaluate
    with rep.step(f"{arm} {g}: evaluate", len(heldout) * 2):
        result = ev.evaluate(domain_for(params, tok), _generator(params, model, tok), heldout,
                             e.pass_k, e.temperature, params.run.seed + 17 * g,
                             params.verify.max_chars, progress=rep.advance)
    write_json(ws.gen(g, arm) / "eval.json", result)
    return result


def iteration(params: Params, ws: Workspace, g: int, rep: Reporter) -> dict:
    """One generation of the loop: plan -> generate -> verify -> curate -> train -> evaluate."""
    d, prev = ws.gen(g), ws.gen(g - 1)
    timer = _Timer()
    model, tok = mdl.load(ws.model(g - 1))
    domain = domain_for(params, tok)
    heldout_ids = _heldout_ids(ws)
    with timer("plan"):
        plan = pl.make_plan(params, g, read_json(prev / "eval.json"))
        write_json(d / "plan.json", plan)
    with timer("generate"):
        problems = gen.new_problems(domain, plan, heldout_ids)
        planned = sum(plan["problems_per_level"].values())
        with rep.step(f"gen {g}: generate", len(problems)):
            ckpt = tr.checkpoint_info(ws.model(g - 1), ws.root)
            candidates, gstats = gen.generate(domain, _generator(params, model, tok), plan,
                                              problems, ckpt, rep.advance)
        write_jsonl(d / "candidates.jsonl", candidates)
    with timer("verify"):
        verified, vstats = gen.verify(domain, candidates, params.verify.max_chars)
        write_jsonl(d / "verified.jsonl", verified)
    with timer("validate"):
        gate.validate_records("candidates", verified, d / "verified.jsonl", params, heldout_ids,
                              d / "validation" / "candidates.json")
    with timer("curate"):
        pool = read_jsonl(prev / "pool.jsonl")
        accepted, decisions, cstats = cur.curate(verified, pool, heldout_ids, params.curate)
        pool = cur.next_pool(pool, accepted, params.curate.accumulate)
        reference = read_jsonl(ws.reference)
        t = params.train
        mix = cur.build_mix(reference, pool, t.steps, t.batch_size, t.reference_fraction,
                            plan["seed"])
        write_jsonl(d / "accepted.jsonl", accepted)
        write_jsonl(d / "curation.jsonl", decisions)
        write_jsonl(d / "pool.jsonl", pool)
        write_jsonl(d / "mix.jsonl", mix)
    by_id = {r["id"]: r for r in (*reference, *pool)}
    with timer("validate"):  # the gate: nothing below trains on a batch that failed
        gate.validate_records("accepted", accepted, d / "accepted.jsonl", params, heldout_ids,
                              d / "validation" / "accepted.json")
        gate.validate_mix(mix, by_id, d / "mix.jsonl", params, heldout_ids, bool(pool),
                          d / "validation" / "mix.json")
    with timer("train"), rep.step(f"gen {g}: train", t.steps):
        cur.assert_no_heldout(by_id.values(), heldout_ids)
        _train(params, model, tok, tr.mix_to_rows(mix, by_id, tok, _max_length(model)),
               plan["seed"], rep)
        tr.save_checkpoint(model, tok, ws.model(g), {"generation": g, "arm": "loop"})
    with timer("evaluate"):
        result = evaluate(params, ws, g, "loop", rep)
    metrics = {
        "generation": g,
        "arm": "loop",
        "plan": plan["problems_per_level"],
        "generate": {**gstats, "planned": planned},
        "verify": vstats,
        "curate": {**cstats, "accepted": len(accepted), "pool": len(pool),
                   **cur.mix_makeup(mix, pool)},
        "eval": result["levels"],
        "seconds": timer.times,
    }
    write_json(d / "metrics.json", metrics)
    return metrics


def _train(params: Params, model, tok, rows: list[dict], seed: int, rep: Reporter) -> None:
    t = params.train
    tr.sft(model, tok, rows, steps=t.steps, batch_size=t.batch_size, lr=t.lr,
           scheduler="constant_with_warmup", warmup_ratio=t.warmup_ratio,
           weight_decay=t.weight_decay, seed=seed, max_length=_max_length(model),
           progress=rep.advance)


def control_iteration(params: Params, ws: Workspace, g: int, rep: Reporter) -> dict:
    """The control arm: the same training steps, reference data only."""
    timer = _Timer()
    model, tok = mdl.load(ws.model(g - 1, "control"))
    reference = read_jsonl(ws.reference)
    t = params.train
    seed = pl.generation_seed(params, g)
    mix = cur.build_mix(reference, [], t.steps, t.batch_size, 1.0, seed)
    d = ws.gen(g, "control")
    write_jsonl(d / "mix.jsonl", mix)
    heldout_ids = _heldout_ids(ws)
    with timer("validate"):
        gate.validate_mix(mix, {r["id"]: r for r in reference}, d / "mix.jsonl", params, heldout_ids,
                          False, d / "validation" / "mix.json")
    with timer("train"), rep.step(f"control {g}: train", t.steps):
        rows = tr.mix_to_rows(mix, {r["id"]: r for r in reference}, tok, _max_length(model))
        _train(params, model, tok, rows, seed, rep)
        tr.save_checkpoint(model, tok, ws.model(g, "control"), {"generation": g, "arm": "control"})
    with timer("evaluate"):
        result = evaluate(params, ws, g, "control", rep)
    metrics = {"generation": g, "arm": "control", "eval": result["levels"], "seconds": timer.times}
    write_json(ws.gen(g, "control") / "metrics.json", metrics)
    return metrics


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


def _params_match(ws: Workspace, params: Params) -> None:
    """Resuming with other parameters would mix two runs: refuse, naming the keys."""
    saved_path = ws.root / "params.json"
    if not saved_path.exists():
        return
    saved = read_json(saved_path)
    now = json.loads(json.dumps(to_dict(params)))
    diff = [f"{s}.{k}" for s in now for k in now[s] if saved.get(s, {}).get(k) != now[s][k]]
    if diff:
        raise ConfigError(f"cannot resume {ws.root}: parameters differ from the saved run: {diff}")


def _done(path: Path) -> dict | None:
    """A step's last file, read only if it exists (it is written atomically, last)."""
    return read_json(path) if path.exists() else None


def run(params: Params, rep: Reporter | None = None, resume: bool = False) -> dict:
    """Bootstrap plus ``run.iterations`` generations (and the control arm); returns results.

    With ``resume`` every step whose last file exists is skipped and the first incomplete
    one is redone from its inputs; all steps are deterministic, so a run killed at any point
    and resumed ends with the same files as one that never stopped."""
    ws = Workspace(Path(params.run.workdir))
    with exclusive(ws):
        if resume:
            _params_match(ws, params)
        elif (ws.root / "params.json").exists():
            raise ConfigError(f"{ws.root} already holds a run: resume it or remove it first")
        return _run(params, ws, rep or NullReporter())


def _run(params: Params, ws: Workspace, rep: Reporter) -> dict:
    quiet_libraries()
    set_threads(params.run.threads)
    write_json(ws.root / "params.json", to_dict(params))
    t0 = time.perf_counter()
    timer = _Timer()
    with timer("data"), rep.step("reference data"):
        init_model(params, ws)
        if not (_done(ws.data / "validation" / "reference.json") or {}).get("success"):
            make_data(params, ws)
    with timer("bootstrap"):
        if not mdl.is_complete(ws.model(0)):
            bootstrap(params, ws, rep)
        base = _done(ws.gen(0) / "eval.json") or evaluate(params, ws, 0, "loop", rep)
    rep.iteration({"generation": 0, "arm": "loop", "eval": base["levels"], "seconds": dict(timer.times)})
    # The control arm needs only the base model: it runs beside the loop in its own
    # process (tiny models use one core each best; see run.threads).
    ctl = _start_control(params) if params.run.control and params.run.iterations else None
    rows = []
    try:
        for g in range(1, params.run.iterations + 1):
            m = _done(ws.gen(g) / "metrics.json") or iteration(params, ws, g, rep)
            rows.append(m)
            rep.iteration(m)
    finally:
        if ctl is not None and ctl.is_alive() and len(rows) < params.run.iterations:
            ctl.terminate()
    control = []
    if ctl is not None:
        with rep.step("control arm (finishing)"):
            ctl.join()
        if ctl.exitcode != 0:
            raise RuntimeError(f"control arm failed (exit code {ctl.exitcode}); see its log above")
        for g in range(1, params.run.iterations + 1):
            c = read_json(ws.gen(g, "control") / "metrics.json")
            control.append(c)
            rep.iteration(c)
    results = {
        "base": base["levels"],
        "loop": [r["eval"] for r in rows],
        "control": [c["eval"] for c in control],
        "seconds": {**timer.times, "total": round(time.perf_counter() - t0, 1)},
    }
    write_json(ws.results(), results)
    return results
