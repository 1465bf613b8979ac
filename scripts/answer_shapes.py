"""What narrows when a level's accepted answers narrow: their form or their numbers.

For each generation of a run directory, the accepted answers of one level are measured four
ways, each as the mean n-gram Vendi of ``--draws`` seeded samples of ``--n`` answers (the
measure step's ``accepted_equal_n`` is the first of them, with other draws):

- answer: the answer as written (``7*3-5+2``);
- shape: every number masked (``#*#-#+#``, ``selfloop.diversity.template``);
- operators: the operators alone, in order (``*-+``);
- numbers: the digits sorted (``2357``): which numbers were used, not how.

Each is also given relative to the first generation listed (generation 1 for the accepted
answers; for the probe, the base model's generation 0), followed by how many answers use
division, use multiplication (and no division), or only add and subtract, and how many use
parentheses.
With ``--probe`` the same is done for the well-formed held-out samples (``eval_samples.jsonl``,
what the measure step's probe is drawn from: every well-formed sample, repeats included)
instead of the accepted answers.

    .venv/bin/python scripts/answer_shapes.py runs/ablate/default --level 4
    .venv/bin/python scripts/answer_shapes.py runs/ablate/default --level 5 --probe

A generation with fewer than ``--n`` answers at that level prints its count only."""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
from collections import Counter
from pathlib import Path

from selfloop.diversity import ngram_features, template, vendi

VIEWS = {
    "answer": lambda a: a,
    "shape": template,
    "operators": lambda a: re.sub(r"[\d()\s]", "", a),
    "numbers": lambda a: "".join(sorted(re.findall(r"\d", a))),
}


def operator_class(answer: str) -> str:
    return "/" if "/" in answer else "*" if "*" in answer else "+-"


def measure(answers: list[str], n: int, draws: int) -> dict[str, float]:
    out = {}
    for name, view in VIEWS.items():
        texts = [view(a) for a in answers]
        out[name] = statistics.fmean(vendi(ngram_features(random.Random(1000 + d).sample(texts, n)))
                                     for d in range(draws))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", type=Path, help="an arm's run directory (holds gen_001/accepted.jsonl, ...)")
    ap.add_argument("--level", type=int, default=4)
    ap.add_argument("--n", type=int, default=128, help="answers per sample (default 128)")
    ap.add_argument("--draws", type=int, default=16, help="samples averaged (default 16)")
    ap.add_argument("--probe", action="store_true",
                    help="the well-formed held-out samples instead of the accepted answers")
    args = ap.parse_args(argv)
    name = "eval_samples.jsonl" if args.probe else "accepted.jsonl"
    gens = sorted(args.workdir.glob(f"gen_[0-9][0-9][0-9]/{name}"))
    if not gens:
        raise SystemExit(f"no gen_NNN/{name} under {args.workdir}")
    print("gen  answers  " + "  ".join(f"{k:>15}" for k in VIEWS) + "     +-      *      /  parens")
    first = None
    for path in gens:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        answers = [r["response"] for r in rows
                   if r["level"] == args.level and (not args.probe or r["well_formed"])]
        g = int(path.parent.name.split("_")[1])
        if len(answers) < args.n:
            print(f"{g:>3}  {len(answers):>7}  (fewer than {args.n})")
            continue
        m = measure(answers, args.n, args.draws)
        first = first or m
        cls = Counter(map(operator_class, answers))
        print(f"{g:>3}  {len(answers):>7}  "
              + "  ".join(f"{m[k]:6.2f} ({m[k] / first[k]:.2f}x)" for k in VIEWS)
              + f"  {cls['+-']:>5}  {cls['*']:>5}  {cls['/']:>5}  {sum('(' in a for a in answers):>6}")


if __name__ == "__main__":
    main()
