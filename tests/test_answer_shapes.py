"""scripts/answer_shapes.py: which rows each mode reads, and its per-class counts."""

import json
import re
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "answer_shapes.py"


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def table(capsys) -> dict[int, list[str]]:
    lines = capsys.readouterr().out.splitlines()[1:]
    return {int(line.split()[0]): line.split() for line in lines}


def test_probe_mode_reads_only_the_well_formed_held_out_samples(tmp_path, capsys):
    main = runpy.run_path(str(SCRIPT))["main"]
    samples = [("1+2+3+4", True), ("(1+2)*3-4", True), ("1*2*3", True), ("1+", False), ("9/3+1-2", True)]
    write(tmp_path / "gen_000" / "eval_samples.jsonl",
          [{"level": 4, "response": a, "well_formed": ok} for a, ok in samples]
          + [{"level": 3, "response": "1+2+3", "well_formed": True}])
    write(tmp_path / "gen_001" / "eval_samples.jsonl",
          [{"level": 4, "response": "1+2", "well_formed": True}])  # fewer than --n
    main([str(tmp_path), "--level", "4", "--n", "3", "--draws", "2", "--probe"])
    rows = table(capsys)
    # generation 0: 4 well-formed level-4 answers; +- 1, * 2 ((1+2)*3-4 and 1*2*3), / 1, brackets 1
    assert rows[0][1] == "4" and rows[0][-4:] == ["1", "2", "1", "1"]
    # answers as written: 3 of 4 distinct ones, so between 1 and 3; relative to itself, since
    # the first generation listed is the reference
    assert 1.0 < float(rows[0][2]) <= 3.0 and rows[0][3] == "(1.00x)"
    assert rows[1][1:] == ["1", "(fewer", "than", "3)"]


def test_accepted_mode_needs_accepted_answers(tmp_path):
    main = runpy.run_path(str(SCRIPT))["main"]
    write(tmp_path / "gen_000" / "eval_samples.jsonl", [{"level": 4, "response": "1+2", "well_formed": True}])
    with pytest.raises(SystemExit, match=re.escape("no gen_NNN/accepted.jsonl")):
        main([str(tmp_path)])
