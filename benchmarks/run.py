"""Benchmarks: `make bench` (or `python benchmarks/run.py [--quick]`).

Writes benchmarks/results/<name>.json and benchmarks/results/SUMMARY.md; every figure is
stored with the command that produced it. Timings are medians of repeated runs."""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "src"))


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_verifier(quick: bool) -> dict:
    """Countdown candidates verified per second on one core (a realistic mix of answers)."""
    from selfloop.domains.countdown import random_problem, steps_to_infix, verify_answer

    rng = random.Random(0)
    cases = []
    for i in range(20_000 if not quick else 2_000):
        problem, steps = random_problem(rng, 3 + i % 3, (1, 9), (1, 99))
        good = steps_to_infix(steps)
        answer = [good, good[:-1] + "1", good.replace("+", "*", 1), "", "(" + good][i % 5]
        cases.append((answer, problem))

    def run():
        for a, p in cases:
            verify_answer(a, p)

    sec = median_time(run, 3 if quick else 5)
    return {"candidates": len(cases), "seconds": round(sec, 4),
            "candidates_per_second_per_core": round(len(cases) / sec)}


def bench_generation(quick: bool, threads: int) -> dict:
    """Tokens sampled per second by batch size for the default model (untrained weights:
    sampling cost does not depend on what the weights are; max_new_tokens fixed, no EOS)."""
    import torch

    from selfloop import model as mdl
    from selfloop.config import Params
    from selfloop.domains import get_domain

    torch.set_num_threads(threads)
    p = Params()
    domain = get_domain(p.domain)
    tok = mdl.build_char_tokenizer(domain.alphabet)
    model = mdl.build_gpt2(tok, p.model.n_layer, p.model.n_embd, p.model.n_head, p.model.n_positions, 0)
    model.eval()
    tok.padding_side = "left"
    rng = random.Random(0)
    new_tokens = 16
    curve = {}
    for bs in ([64, 256] if quick else [16, 64, 256, 512, 1024, 2048]):
        prompts = [domain.prompt(domain.make_problem(rng, 4)[0]) for _ in range(bs)]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)

        def run(enc=enc):
            with torch.inference_mode():
                model.generate(**enc, do_sample=True, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                               pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)

        sec = median_time(run, 3)
        curve[str(bs)] = round(bs * new_tokens / sec)
    best = max(curve, key=curve.get)
    return {"threads": threads, "new_tokens": new_tokens, "tokens_per_second_by_batch": curve,
            "best_batch": int(best), "best_tokens_per_second": curve[best]}


def bench_diversity(quick: bool) -> dict:
    """Diversity metrics of n Countdown answers on 2 threads: n-gram Vendi (through the d x d
    covariance), distinct-2/3, template entropy and KL to a reference set; and, on 384-dim
    vectors standing for sentence embeddings, Vendi and MMD (the embedding model's own cost,
    ~3.5 s per 1000 strings on one thread, is separate: the loop embeds a sample)."""
    import numpy as np
    import torch

    from selfloop import diversity as dv
    from selfloop.domains.countdown import random_problem, steps_to_infix

    torch.set_num_threads(2)
    rng = random.Random(0)
    pool = [steps_to_infix(random_problem(rng, 3 + i % 3, (1, 9), (1, 99))[1]) for i in range(20_000)]
    reference = pool[:2000]
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    out = {}
    for n in sizes:
        texts = [pool[rng.randrange(len(pool))] for _ in range(n)]
        vecs = np.random.default_rng(n).normal(size=(n, 384)).astype(np.float32)

        def text_metrics(texts=texts):
            dv.vendi(dv.ngram_features(texts))
            dv.distinct_n(texts, 2), dv.distinct_n(texts, 3)
            dv.template_entropy(texts), dv.template_kl(texts, reference)

        def vector_metrics(vecs=vecs):
            dv.vendi(vecs)
            dv.mmd(vecs, vecs[:2000])

        t_text, t_vec = median_time(text_metrics, 3), median_time(vector_metrics, 3)
        out[str(n)] = {"text_metrics_s": round(t_text, 3), "vector_metrics_s": round(t_vec, 3),
                       "total_s": round(t_text + t_vec, 3)}
    return {"threads": 2, "seconds_by_samples": out}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds), for a smoke check")
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--summary-only", action="store_true", help="rewrite SUMMARY.md from results/*.json")
    args = ap.parse_args()
    cmd = "python benchmarks/run.py" + (" --quick" if args.quick else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": cmd, "python": platform.python_version(), "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    names = ("verifier", "generation_1_thread", "generation_2_threads", "diversity")
    if args.summary_only:  # rebuild SUMMARY.md from the stored results
        results = {n: json.loads((out / f"{n}.json").read_text()) for n in names}
        meta = {k: results["verifier"][k] for k in ("command", "python", "machine", "date")}
        cmd = meta["command"]
    else:
        results = {
            "verifier": bench_verifier(args.quick),
            "generation_1_thread": bench_generation(args.quick, 1),
            "generation_2_threads": bench_generation(args.quick, 2),
            "diversity": bench_diversity(args.quick),
        }
        for name, r in results.items():
            (out / f"{name}.json").write_text(json.dumps({**meta, **r}, indent=2) + "\n")
    lines = [f"# Benchmark summary\n\nCommand: `{cmd}` ({meta['date']}, Python {meta['python']}, "
             f"{meta['machine']})\n",
             f"- verifier: {results['verifier']['candidates_per_second_per_core']:,} "
             "candidates/s on one core"]
    for key in ("generation_1_thread", "generation_2_threads"):
        g = results[key]
        lines.append(f"- generation ({g['threads']} thread(s)): best {g['best_tokens_per_second']:,} "
                     f"tokens/s at batch {g['best_batch']}; by batch: {g['tokens_per_second_by_batch']}")
    d = results["diversity"]["seconds_by_samples"]
    lines.append("- diversity metrics (2 threads), seconds by samples: "
                 + ", ".join(f"{n}: {v['total_s']}s (text {v['text_metrics_s']}s, vectors "
                             f"{v['vector_metrics_s']}s)" for n, v in d.items()))
    overhead = out / "overhead.json"
    if overhead.exists():  # written by benchmarks/overhead.py (make bench runs it after this)
        o = json.loads(overhead.read_text())
        lines.append(f"- overhead of Prefect + DVC + MLflow + great-expectations over the plain loop: "
                     f"x{o['ratio']} ({o['overhead_percent']:+.1f}%), median {o['median_full_s']}s vs "
                     f"{o['median_plain_s']}s over {len(o['full_seconds'])} pair(s); CPU time "
                     f"x{o.get('cpu_ratio', '?')}; identical accuracy: "
                     f"{o['identical_accuracy']} (`{o['command']}`, {o['date']})")
    steps = out / "steps.json"
    if steps.exists():  # written by benchmarks/overhead.py from its plain default run
        st = json.loads(steps.read_text())
        lines.append(f"- an iteration of the default run ({st['iteration_s']}s median over "
                     f"{st['generations']} generations), seconds by step: {st['seconds_by_step']}; "
                     f"peak RSS (MiB) by step: {st['peak_rss_mb_by_step']} (`{st['command']}`, {st['date']})")
    scaling = out / "scaling.json"
    if scaling.exists():  # written by benchmarks/scaling.py
        sc = json.loads(scaling.read_text())
        lines.append(f"- iteration cost vs problems per generation ({sc['problems_at_1x']} at 1x): "
                     + ", ".join(f"{k}x: {v['total_s']}s" for k, v in sc["by_scale"].items())
                     + f"; time ratio vs 1x {sc['time_ratio_vs_1x']}; linear or better: "
                     f"{sc['linear_or_better']} (`{sc['command']}`, {sc['date']})")
    (out / "SUMMARY.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
