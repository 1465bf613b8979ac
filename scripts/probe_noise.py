"""How much the probe's diversity moves when only the evaluation's sampling seed changes.

A generation's probe (``measure.probe_n`` well-formed held-out answers, n-gram Vendi, mean of
``measure.probe_draws`` draws) comes from ONE evaluation: its pass@k samples, drawn with one
seed. This re-samples the saved checkpoint's pass@k answers with other seeds (the first one
is the run's own, so its value must match diversity.json) and measures each sample the way
the measure step does, so two generations can be compared against that noise.

    .venv/bin/python scripts/probe_noise.py runs/ablate/default 1 2 5 --seeds 4

Prints one line per generation and seed (mean over levels), then per generation the mean and
standard deviation over seeds. About 30 s per generation and seed for the default model (one
core, with another run beside it)."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

SEED_STRIDE = 1000  # seed s samples with the run's evaluation seed + s * SEED_STRIDE


def probe_vendi(workdir: Path, generation: int, seed_offset: int) -> float | None:
    """Mean over levels of the probe's well-formed n-gram Vendi when the checkpoint of
    ``generation`` is evaluated with sampling seed number ``seed_offset`` (0: the run's own);
    None when no level has a well-formed answer."""
    from selfloop.monitor import mean_vendi

    return mean_vendi(probe_measures(workdir, generation, seed_offset), "probe_well_formed")


def probe_measures(workdir: Path, generation: int, seed_offset: int) -> dict:
    """Per level, the measure step's probe numbers (``measure_probe``, without reference)."""
    from selfloop import loop
    from selfloop import model as mdl
    from selfloop.config import params_from_dict
    from selfloop.records import read_json, read_jsonl
    from selfloop.steps import plan as pl
    from selfloop.steps.measure import measure_probe
    from selfloop.workspace import Workspace

    ws = Workspace(workdir)
    params = params_from_dict(read_json(ws.root / "params.json"))
    model, tok = mdl.load(ws.model(generation))
    domain, generator = loop.domain_for(params, tok), loop._generator(params, model, tok)
    e, m = params.evaluate, params.measure
    seed = params.run.seed + 17 * generation + SEED_STRIDE * seed_offset  # as loop.evaluate
    probe, heldout = [], read_jsonl(ws.heldout)
    for level in params.domain.levels:
        problems = [h for h in heldout if h["level"] == level]
        answers = generator([domain.prompt(p) for p in problems], e.pass_k, e.temperature, 1.0, seed + level)
        for got, p in zip(answers, problems, strict=True):
            probe += [{"level": level, "response": a,
                       "well_formed": domain.verify(a, p, params.verify.max_chars).well_formed} for a in got]
    return {str(lv): measure_probe(probe, lv, [], None, 0, m.probe_n, pl.generation_seed(params, generation),
                                   None, m.probe_draws) for lv in params.domain.levels}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", type=Path, help="a finished run's directory (e.g. runs/ablate/default)")
    ap.add_argument("generations", type=int, nargs="+", help="generations whose checkpoints to re-sample")
    ap.add_argument("--seeds", type=int, default=4, help="evaluation seeds per generation (default: 4)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    for g in args.generations:
        got = []
        for s in range(args.seeds):
            value = probe_vendi(args.workdir, g, s)
            print(f"generation {g} seed {s}: " + ("-" if value is None else f"{value:.3f}"), flush=True)
            if value is not None:
                got.append(value)
        if not got:
            continue
        sd = f"{statistics.stdev(got):.3f}" if len(got) > 1 else "-"
        print(f"generation {g}: mean {statistics.fmean(got):.3f}, sd {sd} over {len(got)} seeds", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
