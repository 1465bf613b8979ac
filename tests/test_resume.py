"""Reliability: a run killed at any point and resumed ends with the files a clean run writes;
two runs never share a directory; resuming with other parameters is refused."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from selfloop.cli import main
from selfloop.lock import exclusive
from selfloop.records import file_sha256
from selfloop.workspace import Workspace

SAME = ["data/reference.jsonl", "data/heldout.jsonl", "gen_000/model/model.safetensors",
        "gen_000/eval.json", "gen_001/candidates.jsonl", "gen_001/verified.jsonl",
        "gen_001/accepted.jsonl", "gen_001/pool.jsonl", "gen_001/mix.jsonl",
        "gen_001/model/model.safetensors", "gen_001/eval.json", "gen_002/verified.jsonl",
        "gen_002/model/model.safetensors", "gen_002/eval.json"]


def cli_args(overrides, workdir):
    args = ["run", "--params", "params.yaml", "--no-control", "--iterations", "2", "--workdir", str(workdir)]
    for o in overrides:
        if not o.startswith(("run.workdir=", "run.iterations=")):
            args += ["--set", o]
    return args


def test_sigkill_mid_generation_then_resume_gives_the_clean_run_files(tmp_path, tiny_overrides):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen([sys.executable, "-m", "selfloop.cli", *cli_args(tiny_overrides, killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "gen_001" / "verified.jsonl").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "gen_001" / "metrics.json").exists(), "kill came too late to test anything"

    assert main(cli_args(tiny_overrides, killed)) == 2  # refuses to overwrite without --resume
    assert main([*cli_args(tiny_overrides, killed), "--resume"]) == 0
    assert main(cli_args(tiny_overrides, clean)) == 0
    for rel in SAME:
        assert file_sha256(killed / rel) == file_sha256(clean / rel), rel


def test_a_second_run_on_a_busy_directory_is_refused(tmp_path, tiny_overrides, capsys):
    ws = Workspace(tmp_path / "busy")
    with exclusive(ws):
        assert main([*cli_args(tiny_overrides, ws.root), "--resume"]) == 2
    assert f"is in use by another selfloop run (pid {os.getpid()})" in capsys.readouterr().err
    with exclusive(ws):  # released on exit, so it can be taken again
        pass


def test_resume_with_other_parameters_is_refused(tmp_path, tiny_overrides, capsys):
    workdir = tmp_path / "r"
    assert main(cli_args(tiny_overrides, workdir)) == 0
    assert main([*cli_args(tiny_overrides, workdir), "--resume", "--set", "train.lr=0.5"]) == 2
    assert "parameters differ from the saved run: ['train.lr']" in capsys.readouterr().err
    assert main([*cli_args(tiny_overrides, workdir), "--resume"]) == 0  # nothing left to do
    assert Path(workdir / "gen_002" / "metrics.json").exists()
    saved = json.loads((workdir / "params.json").read_text())  # as an earlier selfloop left it
    del saved["train"]["schedule"]
    (workdir / "params.json").write_text(json.dumps(saved))
    assert main([*cli_args(tiny_overrides, workdir), "--resume"]) == 2
    assert "made by an earlier selfloop without ['train.schedule']" in capsys.readouterr().err


def test_fresh_replaces_a_finished_run_in_place(tmp_path, tiny_overrides):
    workdir = tmp_path / "f"
    assert main(cli_args(tiny_overrides, workdir)) == 0
    (workdir / "stray.txt").write_text("left from before")
    assert main([*cli_args(tiny_overrides, workdir), "--fresh"]) == 0
    assert not (workdir / "stray.txt").exists() and (workdir / "gen_002" / "metrics.json").exists()
    assert main([*cli_args(tiny_overrides, workdir), "--fresh", "--resume"]) == 2
