"""The collapse onset and the monitor's first flag, per pair of runs, from ablation reports.

``selfloop ablate`` computes these for its ``collapse`` arm against its ``default`` arm. A
replicate of the collapse arm (``--arm co1:...,run.replicate=1``) is another arm name, and
its natural yardstick is the default's replicate with the same ``run.replicate``; this reads
any such pair with the report's own check (``selfloop.ablate_report.collapse_check``):

    .venv/bin/python scripts/collapse_onset.py \\
        runs/ablate/results.json:collapse=runs/ablate/results.json:default \\
        runs/rep/results.json:co1=runs/rep/results.json:r1

Each argument is ``COLLAPSE_RESULTS_JSON:ARM=DEFAULT_RESULTS_JSON:ARM``.
"""

from __future__ import annotations

import argparse

from selfloop.ablate_report import collapse_check, read_arm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pairs", nargs="+", metavar="COLLAPSE_RESULTS_JSON:ARM=DEFAULT_RESULTS_JSON:ARM")
    args = ap.parse_args(argv)
    for spec in args.pairs:
        left, sep, right = spec.partition("=")
        if not sep:
            ap.error(f"{spec!r}: expected COLLAPSE_RESULTS_JSON:ARM=DEFAULT_RESULTS_JSON:ARM")
        got = collapse_check(read_arm(left), read_arm(right))
        flag = got["first_flag"]
        said = f"generation {flag['generation']}: {', '.join(flag['decisions'])}" if flag else "never"
        print(f"{left} against {right}: onset {got['onset']}, first flag {said}, "
              f"flag within 2 generations of onset: {got['flag_within_2_of_onset']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
