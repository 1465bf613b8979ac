"""Reliability: a run killed at any point and resumed ends with the files a clean run writes;
two runs never share a directory; resuming with other parameters is refused."""

import json
import os
import shutil
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
    err = capsys.readouterr().err
    lr = json.loads((workdir / "params.json").read_text())["train"]["lr"]
    assert (f"parameters differ from the saved run: ['train.lr']; train.lr: the run has {lr!r} "
            f"(--set train.lr={lr} finishes it as it began)") in err
    assert main([*cli_args(tiny_overrides, workdir), "--resume"]) == 0  # nothing left to do
    assert Path(workdir / "gen_002" / "metrics.json").exists()


def _as_made_before(workdir: Path, *keys: str) -> None:
    """Drop ``keys`` from the run's params.json, as a selfloop from before them left it."""
    saved = json.loads((workdir / "params.json").read_text())
    for name in keys:
        section, key = name.split(".")
        del saved[section][key]
    (workdir / "params.json").write_text(json.dumps(saved))


def test_resume_of_a_run_made_before_a_key_existed(tmp_path, tiny_overrides, capsys):
    """A key added later reads as what selfloop did before it (config.ADDED_KEYS): the run
    resumes when today's value does the same, and is refused, with the reason, when not;
    a key whose absence means another computation is refused outright."""
    workdir = tmp_path / "r"
    assert main(cli_args(tiny_overrides, workdir)) == 0
    shutil.rmtree(workdir / "gen_002")  # as if stopped before its last generation
    _as_made_before(workdir, "train.schedule")  # 'constant' before the key, and today's default
    assert main([*cli_args(tiny_overrides, workdir), "--resume"]) == 0
    assert (workdir / "gen_002" / "metrics.json").exists()
    assert json.loads((workdir / "params.json").read_text())["train"]["schedule"] == "constant"
    capsys.readouterr()
    _as_made_before(workdir, "train.ema", "measure.probe_draws")  # 0.0 and 5 before; 0.99 and 32 today
    assert main([*cli_args(tiny_overrides, workdir), "--resume"]) == 2
    assert ("parameters differ from the saved run: ['train.ema', 'measure.probe_draws']; train.ema: "
            "the run predates this key, so it ran with 0.0 (--set train.ema=0.0 finishes it as it "
            "began); measure.probe_draws: the run predates this key, so it ran with 5 (--set "
            "measure.probe_draws=5 finishes it as it began)") in capsys.readouterr().err
    finish_as_begun = ["--set", "train.ema=0.0", "--set", "measure.probe_draws=5"]
    shutil.rmtree(workdir / "gen_002")  # so that the resume below trains a generation again
    assert main([*cli_args(tiny_overrides, workdir), "--resume", *finish_as_begun]) == 0
    assert (workdir / "gen_002" / "metrics.json").exists()
    saved = json.loads((workdir / "params.json").read_text())
    assert saved["train"]["ema"] == 0.0 and saved["measure"]["probe_draws"] == 5  # written back
    _as_made_before(workdir, "measure.probe_n")
    assert main([*cli_args(tiny_overrides, workdir), "--resume", *finish_as_begun]) == 2
    assert "made by an earlier selfloop without ['measure.probe_n']" in capsys.readouterr().err
    _as_made_before(workdir, "train.ema")  # both reasons in one refusal
    assert main([*cli_args(tiny_overrides, workdir), "--resume", "--set", "measure.probe_draws=5"]) == 2
    err = capsys.readouterr().err
    assert "parameters differ from the saved run: ['train.ema']; train.ema: the run predates" in err
    assert "; and it was made by an earlier selfloop without ['measure.probe_n']" in err


def test_fresh_replaces_a_finished_run_in_place(tmp_path, tiny_overrides):
    workdir = tmp_path / "f"
    assert main(cli_args(tiny_overrides, workdir)) == 0
    (workdir / "stray.txt").write_text("left from before")
    assert main([*cli_args(tiny_overrides, workdir), "--fresh"]) == 0
    assert not (workdir / "stray.txt").exists() and (workdir / "gen_002" / "metrics.json").exists()
    assert main([*cli_args(tiny_overrides, workdir), "--fresh", "--resume"]) == 2


def test_a_finished_run_resumed_with_more_iterations_adds_them_as_a_longer_run_would(tmp_path, tiny_overrides,
                                                                                     capsys):
    """Extending: generation 2 added to a finished one-generation run is the clean two-generation
    run's; the control arm is extended too. Fewer iterations than the run has are refused."""
    short, clean = tmp_path / "short", tmp_path / "clean"
    one = [a if a != "2" else "1" for a in cli_args(tiny_overrides, short)]
    assert one[one.index("--iterations") + 1] == "1"
    with_control = [a for a in one if a != "--no-control"]
    assert main(with_control) == 0
    assert len(json.loads((short / "results.json").read_text())["loop"]) == 1
    two = [a for a in cli_args(tiny_overrides, short) if a != "--no-control"]
    assert main([*two, "--resume"]) == 0
    assert main([a for a in cli_args(tiny_overrides, clean) if a != "--no-control"]) == 0
    for rel in [*SAME, "control/gen_002/model/model.safetensors", "control/gen_002/eval.json"]:
        assert file_sha256(short / rel) == file_sha256(clean / rel), rel
    results = json.loads((short / "results.json").read_text())
    assert len(results["loop"]) == len(results["control"]) == 2
    assert json.loads((short / "params.json").read_text())["run"]["iterations"] == 2
    capsys.readouterr()
    assert main([*with_control, "--resume"]) == 2
    refused = "run.iterations: the run has 2 (--set run.iterations=2 finishes it as it began)"
    assert refused in capsys.readouterr().err
