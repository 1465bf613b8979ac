"""How much the probe's diversity moves when only the evaluation's sampling seed changes.

A generation's probe (``measure.probe_n`` well-formed held-out answers, n-gram Vendi, mean of
``measure.probe_draws`` draws) comes from ONE evaluation: its pass@k samples, drawn with one
seed. This re-samples the saved checkpoint's pass@k answers with other seeds (the first one
is the run's own, so its value must match diversity.json) and measures each sample the way
the measure step does, so two generations can be compared against that noise.

    .venv/bin/python scripts/probe_noise.py runs/ablate/default 1 2 5 --seeds 4
    .venv/bin/python scripts/probe_noise.py runs/ablate/default 1 3 --arm control

Prints one line per generation and seed (the probe: mean over levels; ways: distinct correct
answers per solved problem, pooled over levels, as the ablation report has them), then per
generation the mean and standard deviation over seeds. 17 s for one generation and seed of
the default model here, with nothing else running."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

SEED_STRIDE = 1000  # seed s samples with the run's evaluation seed + s * SEED_STRIDE


def probe_measures(workdir: Path, generation: int, seed_offset: int, arm: str = "loop") -> dict:
    """Per level, the measure step's probe numbers after the evaluate step's own evaluation
    (greedy answers included) with seed ``loop.eval_seed + SEED_STRIDE * seed_offset``."""
    from selfloop.ablate_report import probe_levels

    result, params = _evaluate(workdir, generation, seed_offset, arm)
    return probe_levels(result["samples"], params, generation)


def sample_measures(workdir: Path, generation: int, seed_offset: int,
                    arm: str = "loop") -> tuple[float | None, float | None]:
    """One evaluation's probe Vendi (mean over levels of ``probe_measures``' well-formed n-gram
    Vendi; None when no level has a well-formed answer) and its distinct correct answers per
    solved problem, pooled over levels (as the ablation report computes it)."""
    from selfloop.ablate_report import distinct_per_solved, probe_levels
    from selfloop.monitor import mean_vendi

    result, params = _evaluate(workdir, generation, seed_offset, arm)
    return (mean_vendi(probe_levels(result["samples"], params, generation), "probe_well_formed"),
            distinct_per_solved(result["levels"]))


def _evaluate(workdir: Path, generation: int, seed_offset: int, arm: str):
    from selfloop import loop
    from selfloop import model as mdl
    from selfloop.config import saved_params
    from selfloop.records import read_json, read_jsonl
    from selfloop.steps.evaluate import evaluate
    from selfloop.workspace import Workspace

    ws = Workspace(workdir)
    params = saved_params(read_json(ws.root / "params.json"))
    model, tok = mdl.load(ws.model(generation, arm))
    e, seed = params.evaluate, loop.eval_seed(params, generation) + SEED_STRIDE * seed_offset
    result = evaluate(loop.domain_for(params, tok), loop._generator(params, model, tok),
                      read_jsonl(ws.heldout), e.pass_k, e.temperature, seed, params.verify.max_chars)
    return result, params


def _summary(values: list[float]) -> str:
    sd = f"{statistics.stdev(values):.3f}" if len(values) > 1 else "-"
    return f"mean {statistics.fmean(values):.3f}, sd {sd} over {len(values)} seeds"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", type=Path, help="a finished run's directory (e.g. runs/ablate/default)")
    ap.add_argument("generations", type=int, nargs="+", help="generations whose checkpoints to re-sample")
    ap.add_argument("--seeds", type=int, default=4, help="evaluation seeds per generation (default: 4)")
    ap.add_argument("--arm", choices=("loop", "control"), default="loop",
                    help="whose checkpoints: the loop's (default) or its control arm's")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    for g in args.generations:
        probes, ways = [], []
        for s in range(args.seeds):
            probe, way = sample_measures(args.workdir, g, s, args.arm)
            print(f"generation {g} seed {s}: probe " + ("-" if probe is None else f"{probe:.3f}")
                  + ", ways " + ("-" if way is None else f"{way:.3f}"), flush=True)
            probes += [] if probe is None else [probe]
            ways += [] if way is None else [way]
        if probes:
            print(f"generation {g}: probe {_summary(probes)}", flush=True)
        if ways:
            print(f"generation {g}: ways to a correct answer {_summary(ways)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
