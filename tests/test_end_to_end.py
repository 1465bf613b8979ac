"""End to end through the real parts: a local Prefect server serves the deployments from
prefect.yaml; the manual one, triggered through the API with parameters, runs a tiny loop
(great-expectations gates on) inside a git + DVC repository with MLflow tracking on. Then:
the run completed with its artifacts; every generation is in dvc.lock and `dvc status` is
clean; MLflow has the loop run, a nested run and a registered version per generation with
matching tags and input digests; lineage resolves a record to model versions; and a fresh
clone replays the run from the DVC remote with identical hashes."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from mlflow import MlflowClient

from selfloop.lineage import lineage
from selfloop.recording import model_versions
from selfloop.records import file_sha256
from selfloop.versioning import Versioning, file_md5
from selfloop.workspace import Workspace
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prefect_server(tmp_path):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "DO_NOT_TRACK": "true",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    server = subprocess.Popen([str(ROOT / ".venv/bin/prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "prefect server did not start"
            time.sleep(0.5)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def sh(cwd: Path, *cmd: str, env: dict | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env or ENV, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def project(path: Path, remote: Path) -> Path:
    """A user's project: git + DVC, our top-level dvc.yaml, a local directory remote."""
    path.mkdir(parents=True)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.com"],
                ["git", "config", "user.name", "t"], [DVC, "init", "-q"],
                [DVC, "remote", "add", "-d", "local", str(remote)]):
        sh(path, *cmd)
    (path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    (path / ".gitignore").write_text("mlflow.db\nmlartifacts/\n")
    sh(path, "git", "add", "-A")
    sh(path, "git", "commit", "-qm", "project")
    return path


def trigger(env: dict, tmp_path: Path, params: dict) -> dict:
    """Serve the deployments, run the manual one through the API, return its final state."""
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed in finally
    serve = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
    api = env["PREFECT_API_URL"]
    try:
        deadline = time.monotonic() + 120
        while httpx.get(f"{api}/deployments/name/selfloop-loop/manual", timeout=5).status_code != 200:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "deployments were not served"
            time.sleep(0.5)
        code = (
            "import json, sys\n"
            "from prefect.deployments import run_deployment\n"
            "fr = run_deployment('selfloop-loop/manual', parameters=json.loads(sys.argv[1]), timeout=600)\n"
            "print(json.dumps({'state': fr.state.type.value, 'id': str(fr.id)}))\n"
        )
        out = subprocess.run([sys.executable, "-c", code, json.dumps(params)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        log.close()
        print((tmp_path / "serve.log").read_text()[-3000:])


def test_flow_run_is_versioned_tracked_and_replayable(prefect_server, tmp_path):
    env = prefect_server
    api = env["PREFECT_API_URL"]
    repo = project(tmp_path / "project", tmp_path / "remote")
    workdir = repo / "runs" / "e2e"
    # a sample-diversity floor of twice generation 1's own makes the monitor flag generation 1,
    # so generation 2's plan carries a decision (and the replay below must reproduce it)
    params = {"iterations": 2, "workdir": str(workdir),
              "overrides": [*TINY, "run.control=false", "track.mlflow=true", "monitor.vendi_floor=2"]}
    run = trigger({**env, "PATH": ENV["PATH"]}, tmp_path, params)
    assert run["state"] == "COMPLETED"

    # Prefect events: one per monitor decision, named after its action, with its reason
    decided = [(g, d) for g in (1, 2)
               for d in json.loads((workdir / f"gen_{g:03d}" / "metrics.json").read_text())["monitor"]]
    assert "raise_temperature" in {d["action"] for g, d in decided if g == 1}
    assert json.loads((workdir / "gen_002" / "plan.json").read_text())["policy"]
    events, deadline = [], time.monotonic() + 60  # the server persists events asynchronously
    while len(events) < len(decided) and time.monotonic() < deadline:
        page = httpx.post(f"{api}/events/filter", timeout=10, json={
            "filter": {"event": {"prefix": ["selfloop.monitor."]}}, "limit": 50}).json()
        events = page["events"]
        time.sleep(1)
    got = sorted((e["event"], e["payload"]["generation"], e["payload"]["reason"]) for e in events)
    assert got == sorted((f"selfloop.monitor.{d['action']}", g, d["reason"]) for g, d in decided)
    assert {e["resource"]["prefect.resource.id"] for e in events} == {f"selfloop.run.{workdir.resolve()}"}

    # Prefect: parameters as given, a table artifact per generation, the results artifact
    flow_run = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=10).json()
    assert flow_run["parameters"]["iterations"] == 2
    keys = ["selfloop-gen-001", "selfloop-gen-002", "selfloop-results"]
    arts = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"key": {"any_": keys}}},
                      timeout=10).json()
    by_key = {a["key"]: a for a in arts}
    assert set(by_key) == set(keys)
    rows = by_key["selfloop-gen-002"]["data"]
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert {r["level"] for r in rows} == {3, 4, 5} and all("greedy_acc" in r for r in rows)
    assert "Held-out greedy accuracy" in by_key["selfloop-results"]["data"]

    # DVC: every generation's stages in dvc.lock, nothing to reproduce
    lock = yaml.safe_load((workdir / "dvc.lock").read_text())["stages"]
    for g in (1, 2):
        for step in ("plan", "generate", "verify", "curate", "train", "evaluate"):
            assert f"gen_{g:03d}_{step}" in lock
    assert "Data and pipelines are up to date" in sh(repo, DVC, "status")
    outs = Versioning(workdir).lock_outs()
    assert (workdir / "gen_001" / "validation" / "mix.json").exists()  # the gates ran

    # MLflow: loop run, nested run per generation, registered versions, tags, input digests
    client = MlflowClient(f"sqlite:///{repo}/mlflow.db")
    exp = client.get_experiment_by_name("selfloop")
    parent = json.loads((workdir / "mlflow.json").read_text())["run_id"]
    nested = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    by_gen = {int(r.data.tags["generation"]): r for r in nested}
    assert sorted(by_gen) == [0, 1, 2] and client.get_run(parent).info.status == "FINISHED"
    registered = client.search_model_versions("name = 'selfloop-countdown'")
    versions = {int(v.tags["generation"]): v for v in registered}
    assert sorted(versions) == [0, 1, 2]
    head = sh(repo, "git", "rev-parse", "HEAD").strip()
    for g, r in by_gen.items():
        t = r.data.tags
        assert t["prefect_flow_run_id"] == run["id"] and t["git_commit"].startswith(head)
        assert t["dvc_hash"] == Versioning(workdir).generation_hash(g) and (g == 0 or t["dvc_hash"])
        sha = file_sha256(workdir / f"gen_{g:03d}" / "model" / "model.safetensors")
        assert t["checkpoint_sha256"] == sha == versions[g].tags["checkpoint_sha256"]
        assert r.data.metrics["eval.3.greedy_acc"] >= 0 and r.info.status == "FINISHED"
        digests = {i.dataset.name: i.dataset.digest for i in r.inputs.dataset_inputs}
        train_file = "data/reference.jsonl" if g == 0 else f"gen_{g:03d}/mix.jsonl"
        assert digests == {train_file: outs[train_file], "data/heldout.jsonl": outs["data/heldout.jsonl"]}
    champion = client.get_model_version_by_alias("selfloop-countdown", "champion")
    assert int(champion.tags["generation"]) in versions

    # lineage: a synthetic record -> its generator's model version -> ...
    record = json.loads((workdir / "gen_001" / "verified.jsonl").read_text().splitlines()[0])
    chain = lineage(Workspace(workdir), record["id"], model_versions(Workspace(workdir)))
    assert chain["generator_version"] == int(versions[0].version)
    shown = sh(repo, str(BIN / "selfloop"), "lineage", record["id"], "--workdir", str(workdir))
    assert f"model version {versions[0].version}" in shown

    # replay: a fresh clone pulls the run from the remote and reproduces it byte for byte
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "a recorded run")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    sh(clone, DVC, "pull", "-q")
    cwork = clone / "runs" / "e2e"
    assert file_md5(cwork / "gen_002" / "mix.jsonl") == outs["gen_002/mix.jsonl"]
    sh(clone, DVC, "repro", "--force", "-q", "runs/e2e/dvc.yaml")
    assert sh(clone, "git", "status", "--porcelain") == ""  # dvc.lock: the same hashes
    assert Versioning(cwork).lock_outs() == outs
