"""DVC versioning: the stage graph is closed, a run leaves a clean DVC status with every
file it wrote recorded, `selfloop checkout` restores a generation, and DVC access from two
processes is serialized."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from selfloop.config import load_params
from selfloop.loop import run
from selfloop.versioning import (
    DvcError,
    Versioning,
    checkout,
    file_md5,
    generation_stages,
    repo_lock,
    stages_upto,
)
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def sh(cwd: Path, *cmd: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def dvc_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    sh(path, "git", "init", "-q")
    sh(path, "git", "config", "user.email", "t@example.com")
    sh(path, "git", "config", "user.name", "t")
    sh(path, str(BIN / "dvc"), "init", "-q")
    (path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    sh(path, "git", "add", "dvc.yaml")
    sh(path, "git", "commit", "-qm", "dvc init")
    return path


def test_stage_graph_is_closed():
    """Every dependency of a stage is the output of an earlier stage (or inside one)."""
    outs: list[str] = []
    for name, stage in stages_upto(3, control=True).items():
        for dep in stage.get("deps", []):
            assert any(dep == o or dep.startswith(o + "/") for o in outs), f"{name}: {dep} made by no stage"
        assert all(p["params.json"] for p in stage["params"])
        outs.extend(stage["outs"])
    assert len(outs) == len(set(outs)), "two stages write one file"


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    repo = dvc_repo(tmp_path_factory.mktemp("v") / "repo")
    workdir = repo / "runs" / "t"
    params = load_params(ROOT / "params.yaml", [*TINY, "run.iterations=2", f"run.workdir={workdir}"])
    run(params)
    return repo, workdir


def test_run_is_recorded_and_status_clean(recorded_run):
    repo, workdir = recorded_run
    assert "Data and pipelines are up to date" in sh(repo, str(BIN / "dvc"), "status")
    lock = yaml.safe_load((workdir / "dvc.lock").read_text())["stages"]
    for g in (1, 2):
        for step in ("plan", "generate", "verify", "curate", "train", "evaluate"):
            assert f"gen_{g:03d}_{step}" in lock
        for step in ("mix", "train", "evaluate"):
            assert f"control_{g:03d}_{step}" in lock
    # every file the loop wrote is either a DVC output or a small git-tracked file
    recorded = set(Versioning(workdir).lock_outs())
    git_tracked = {"params.json", "results.json", "history.json", "dvc.yaml", "dvc.lock", ".gitignore"}
    for f in workdir.rglob("*"):
        rel = f.relative_to(workdir).as_posix()
        local = (".lock", ".gitignore", "report.html", "metrics.json")
        if f.is_dir() or f.name in local or rel in git_tracked:
            continue
        assert any(rel == r or rel.startswith(r + "/") for r in recorded), f"{rel} is not versioned"
    ignored = sh(repo, "git", "status", "--porcelain", "--ignored", "runs")
    assert "runs/t/.lock" in ignored and "runs/t/gen_001/candidates.jsonl" in ignored
    assert "Data and pipelines are up to date" in sh(repo, str(BIN / "dvc"), "repro", "--dry")
    plots = yaml.safe_load((workdir / "dvc.yaml").read_text())["plots"]
    assert plots and "gen_002/eval.json" in yaml.safe_load((workdir / "dvc.yaml").read_text())["metrics"]
    assert "gen_002" in sh(repo, str(BIN / "dvc"), "metrics", "show")
    # the training mix's make-up by origin is a metric too, one file per generation
    assert "gen_002/makeup.json" in yaml.safe_load((workdir / "dvc.yaml").read_text())["metrics"]
    shown = sh(repo, str(BIN / "dvc"), "metrics", "show", "--json")
    makeup = json.loads((workdir / "gen_002" / "makeup.json").read_text())
    assert "gen_002/makeup.json" in shown and "reference_share" in makeup
    history = json.loads((workdir / "history.json").read_text())
    assert [r["generation"] for r in history] == [0, 1, 2] and "history" in lock


def test_plots_cover_the_diversity_metrics(recorded_run):
    """Every column a declared plot draws is in history.json, and the rows carry the measure
    step's means over levels (template entropy and KL, the samples' log-probability) and the
    training mix's reference share; the embedding metrics are None here, since TINY turns the
    embedding model off (and the accepted set's, since its model solves nothing)."""
    _, workdir = recorded_run
    history = json.loads((workdir / "history.json").read_text())
    declared = yaml.safe_load((workdir / "dvc.yaml").read_text())["plots"]
    columns = [c for plot in declared for spec in plot.values() for c in spec["y"]["history.json"]]
    assert {"entropy_samples", "kl_accepted", "mmd_samples", "mean_logprob_samples",
            "reference_share"} <= set(columns)
    for row in history:
        assert set(columns) <= set(row), set(columns) - set(row)
    base, last = history[0], history[-1]
    assert base["reference_share"] == 1.0 and base["entropy_samples"] is None
    div = json.loads((workdir / "gen_002" / "diversity.json").read_text())
    have = [d["samples"]["template_entropy"] for d in div.values() if d.get("samples", {}).get("n")]
    want = sum(have) / len(have)
    assert last["entropy_samples"] == pytest.approx(want, abs=1e-6)
    assert last["kl_samples"] >= 0 and last["mean_logprob_samples"] < 0
    mix = [json.loads(line) for line in (workdir / "gen_002" / "mix.jsonl").read_text().splitlines()]
    n_ref, n_syn = (sum(len(m[k]) for m in mix) for k in ("reference", "synthetic"))
    assert n_ref and last["reference_share"] == pytest.approx(n_ref / (n_ref + n_syn), abs=1e-6)
    shares = [last[c] for c in ("reference_share", "mix_this_generation", "mix_earlier_generations")]
    assert sum(shares) == pytest.approx(1.0, abs=1e-5)
    assert base["mix_this_generation"] == base["mix_earlier_generations"] == 0.0
    assert last["mmd_samples"] is None and last["vendi_embedding_samples"] is None


def test_recorded_stages_are_not_recommitted(recorded_run):
    """Recording a generation again (a resume does) keeps dvc.lock: a file damaged after it
    was recorded shows in `dvc status` instead of being recorded as the truth."""
    repo, workdir = recorded_run
    lock = (workdir / "dvc.lock").read_text()
    plan = workdir / "gen_001" / "plan.json"
    original = plan.read_bytes()
    plan.write_text("{}")
    Versioning(workdir).record(generation_stages(1))
    assert (workdir / "dvc.lock").read_text() == lock
    assert "gen_001/plan.json" in sh(repo, str(BIN / "dvc"), "status")
    plan.write_bytes(original)


def test_checkout_restores_a_generation(recorded_run):
    _, workdir = recorded_run
    weights = workdir / "gen_001" / "model" / "model.safetensors"
    before = file_md5(weights)
    weights.write_bytes(b"damaged")
    (workdir / "gen_001" / "mix.jsonl").unlink()
    restored = checkout(workdir, 1)
    assert "gen_001/model" in restored and file_md5(weights) == before
    assert (workdir / "gen_001" / "mix.jsonl").exists()
    with pytest.raises(DvcError, match="generation 7 is not recorded"):
        checkout(workdir, 7)


def test_dvc_access_is_serialized(tmp_path):
    """A second writer waits for the first; one that cannot wait gets a clear error."""
    repo = dvc_repo(tmp_path / "repo")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from selfloop.versioning import repo_lock\n"
        f"with repo_lock(Path({str(repo)!r})):\n    print('held', flush=True); time.sleep(1.5)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(DvcError, match="another selfloop run is versioning"), repo_lock(repo, wait_s=0.2):
        pass
    t = time.monotonic()
    with repo_lock(repo):
        waited = time.monotonic() - t
    holder.wait()
    assert waited > 0.5


def test_counterfactual_replay_reruns_only_what_depends_on_the_change(recorded_run):
    """`dvc exp run -S` on a curation setting re-runs curation (and what its outputs feed)
    and nothing upstream of it or beside it (the control arm)."""
    repo, _ = recorded_run
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "a recorded run")
    out = sh(repo, str(BIN / "dvc"), "exp", "run", "runs/t/dvc.yaml",
             "-S", "runs/t/params.json:curate.cap_per_problem=1")
    def stages(marker: str) -> set[str]:
        return {m.group(1) for line in out.splitlines() if marker in line
                for m in [re.search(r"stage '[^']*:([^']+)'", line, re.I)] if m}

    ran, skipped = stages("Running stage"), stages("didn't change")
    assert {"gen_001_curate", "gen_002_curate"} <= ran
    # (the plan depends on the curation cap too, since a monitor decision may change it; with
    # no decision it writes the same plan, so generation and verification are skipped)
    upstream = {"init", "data", "base_train", "base_evaluate", "gen_001_generate", "gen_001_verify"}
    assert upstream <= skipped and not upstream & ran
    assert not {s for s in ran if s.startswith("control_")}
    assert "Data and pipelines are up to date" in sh(repo, str(BIN / "dvc"), "status")


def test_a_run_directory_git_ignores_fails_before_any_work(tmp_path, capsys):
    """DVC refuses a pipeline file git ignores; the run says so at once, naming the rule,
    instead of failing at its first record after the base model has trained."""
    repo = dvc_repo(tmp_path / "repo")
    (repo / ".gitignore").write_text("runs/\n")
    workdir = repo / "runs" / "t"
    params = load_params(ROOT / "params.yaml", [*TINY, "run.iterations=1", f"run.workdir={workdir}"])
    with pytest.raises(DvcError, match=r"runs/t/dvc.yaml is ignored by git \(rule \.gitignore:1:runs/\)"):
        run(params)
    assert not (workdir / "gen_000" / "model").exists()  # nothing trained
    # a run that cannot start deletes nothing: --fresh over an earlier run keeps its files
    earlier = workdir / "gen_001" / "eval.json"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("{}")
    with pytest.raises(DvcError, match="is ignored by git"):
        run(params, fresh=True)
    assert earlier.exists()
    # the command line: bad input (2), and no "continue with --resume": nothing has run
    from selfloop.cli import main

    sets = [a for s in [*TINY, "run.iterations=1"] for a in ("--set", s)]
    argv = ["run", "--fresh", "--params", str(ROOT / "params.yaml"), "--workdir", str(workdir), *sets]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is ignored by git (rule .gitignore:1:runs/)" in err and "--resume" not in err
    assert earlier.exists()
    # the Prefect flow claims the directory as run() does, before its first task (whose
    # recordings run beside the loop): the claim itself refuses
    from selfloop.loop import claim
    from selfloop.workspace import Workspace

    with pytest.raises(DvcError, match="is ignored by git"), claim(Workspace(workdir), params, fresh=True):
        pytest.fail("claimed a run directory git ignores")
    assert earlier.exists()
    # not ignored: no complaint
    (repo / ".gitignore").write_text("")
    Versioning(workdir).preflight()


def test_checkout_pulls_what_the_cache_lacks(recorded_run, tmp_path):
    """With the local cache gone, `selfloop checkout` fetches the generation from the remote
    (DVC's own error, "missing", is what sends it there: it must reach the DvcError)."""
    repo, workdir = recorded_run
    sh(repo, str(BIN / "dvc"), "remote", "add", "-d", "-f", "store", str(tmp_path / "remote"))
    v = Versioning(workdir)
    v.push()
    cache = repo / ".dvc" / "cache"
    kept = tmp_path / "cache"
    cache.rename(kept)
    try:
        weights = workdir / "gen_002" / "model" / "model.safetensors"
        before = file_md5(weights)
        weights.unlink()
        restored = checkout(workdir, 2)
        assert "gen_002/model" in restored and file_md5(weights) == before
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        kept.rename(cache)
        sh(repo, str(BIN / "dvc"), "remote", "remove", "store")
