"""MLflow tracking adapter against a real sqlite store (one store per module: a fresh DB costs seconds)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from selfloop.tracking import DataInput, Tracker, TrackingError, default_tracking_uri, retry_locked

MODEL = "selfloop-lm"


def metrics_for(g: int, acc3: float, acc4: float) -> dict:
    return {
        "arm": "loop", "generation": g,
        "curate": {"pool": 700 + g, "reference_share": 0.2, "synthetic_by_generation": {"1": 0.8}},
        "eval": {"3": {"greedy_acc": acc3, "pass_at_k": acc3 + 0.1, "k": 8, "n": 500},
                 "4": {"greedy_acc": acc4, "pass_at_k": acc4 + 0.1, "k": 8, "n": 500}},
        "generate": {"samples": 45000 + g},
        "seconds": {"train": 29.5},
        "verify": {"acceptance_rate": 0.07, "reasons": {"correct": 3479}},
    }


def make_checkpoint(path: Path, g: int) -> Path:
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(bytes([g]) * 2048)
    (path / "config.json").write_text(json.dumps({"n_layer": 1, "generation": g}))
    (path / "tokenizer.json").write_text("{}")
    (path / "COMPLETE").write_text("ok")
    return path


def inputs_for(root: Path, g: int) -> list[DataInput]:
    mix, held = root / f"gen_{g:03d}" / "mix.jsonl", root / "heldout.jsonl"
    mix.write_text('{"id": 1}\n')
    held.write_text('{"id": 2}\n')
    return [DataInput(mix, f"{g:032x}", f"gen_{g:03d}/mix.jsonl", "training"),
            DataInput(held, "ab" * 16, "heldout.jsonl", "evaluation")]


def run_generation(tracker: Tracker, root: Path, g: int, m: dict) -> int:
    ckpt = root / f"gen_{g:03d}" / "model"
    if not ckpt.exists():
        make_checkpoint(ckpt, g)
    tags = {"checkpoint_sha256": f"{g:064x}", "git_commit": "deadbeef", "dvc_hash": "cafe"}
    return tracker.log_generation(g, m, ckpt, inputs_for(root, g), tags)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A finished 2-generation loop; generation 2 scores better than generation 1."""
    root = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{root}/mlflow.db"
    tracker = Tracker(uri, "selfloop-test", MODEL, root / "mlartifacts")
    params = {"run": {"iterations": 2, "threads": 1}, "model": {"n_layer": 1}, "notes": "x" * 900}
    parent = tracker.start_loop(root / "run" / "mlflow_run.json", params, {"prefect_flow_run_id": "f1"})
    versions = [run_generation(tracker, root, 1, metrics_for(1, 0.1, 0.05)),
                run_generation(tracker, root, 2, metrics_for(2, 0.3, 0.10))]
    tracker.finish(results={"final": 0.2})
    return {"root": root, "uri": uri, "tracker": tracker, "client": tracker.client,
            "parent": parent, "versions": versions}


def nested_runs(store: dict) -> dict[int, object]:
    runs = store["client"].search_runs([store["tracker"].experiment_id],
                                       f"tags.mlflow.parentRunId = '{store['parent']}'")
    return {int(r.data.tags["generation"]): r for r in runs}


def test_default_tracking_uri(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_import_is_lazy():
    code = "import sys, selfloop.tracking; assert 'mlflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parent_and_nested_runs(store):
    client, parent = store["client"], store["client"].get_run(store["parent"])
    assert parent.info.status == "FINISHED"
    assert parent.data.params["run.iterations"] == "2" and parent.data.params["model.n_layer"] == "1"
    assert len(parent.data.params["notes"]) == 500
    assert parent.data.tags["prefect_flow_run_id"] == "f1"
    assert json.loads(Path(client.download_artifacts(parent.info.run_id, "results.json")).read_text()) \
        == {"final": 0.2}
    state = json.loads((store["root"] / "run" / "mlflow_run.json").read_text())
    assert state == {"run_id": store["parent"], "experiment_id": store["tracker"].experiment_id}
    runs = nested_runs(store)
    assert sorted(runs) == [1, 2]
    for g, r in runs.items():
        assert r.info.run_name == f"gen_{g:03d}" and r.info.status == "FINISHED"
        assert r.data.tags["git_commit"] == "deadbeef" and r.data.tags["dvc_hash"] == "cafe"
        assert r.info.artifact_uri.startswith(str(store["root"] / "mlartifacts"))


def test_metrics_use_generation_as_step(store):
    client, runs = store["client"], nested_runs(store)
    data = runs[2].data.metrics
    assert data["curate.pool"] == 702 and data["verify.acceptance_rate"] == 0.07
    assert data["eval.3.greedy_acc"] == 0.3 and data["seconds.train"] == 29.5
    assert data["generate.samples"] == 45002 and data["score"] == pytest.approx(0.2)
    assert "arm" not in data and "generation" not in data
    for g, r in runs.items():
        assert [m.step for m in client.get_metric_history(r.info.run_id, "eval.4.pass_at_k")] == [g]
    curve = client.get_metric_history(store["parent"], "eval.3.greedy_acc")
    assert sorted((m.step, m.value) for m in curve) == [(1, 0.1), (2, 0.3)]


def test_model_versions_and_champion(store):
    client = store["client"]
    assert store["versions"] == [1, 2]
    runs = nested_runs(store)
    for g, v in zip((1, 2), store["versions"], strict=True):
        mv = client.get_model_version(MODEL, str(v))
        assert mv.tags["checkpoint_sha256"] == f"{g:064x}" and mv.tags["generation"] == str(g)
        assert mv.run_id == runs[g].info.run_id
        assert (Path(mv.source) / "model.safetensors").read_bytes() == bytes([g]) * 2048
    assert int(client.get_model_version_by_alias(MODEL, "champion").version) == 2


def test_dataset_digests(store):
    for g, r in nested_runs(store).items():
        got = {(i.dataset.name, i.dataset.digest, i.tags[0].value) for i in r.inputs.dataset_inputs}
        assert got == {(f"gen_{g:03d}/mix.jsonl", f"{g:032x}", "training"),
                       ("heldout.jsonl", "ab" * 16, "evaluation")}


def test_version_for_checkpoint(store):
    assert store["tracker"].version_for_checkpoint(f"{2:064x}") == 2
    assert store["tracker"].version_for_checkpoint("0" * 64) is None


def test_resume_is_idempotent(store, tmp_path):
    """A second attempt of a loop reopens its parent run and re-logs nothing already done."""
    uri, root = store["uri"], tmp_path
    state = root / "mlflow_run.json"
    first = Tracker(uri, "selfloop-resume", "resume-lm", store["root"] / "mlartifacts")
    parent = first.start_loop(state, {"run": {"iterations": 3}}, {})
    assert run_generation(first, root, 1, metrics_for(1, 0.5, 0.5)) == 1
    # an attempt that crashed: generation 2 registered, but its run never finished
    crashed = first.client.create_run(first.experiment_id, run_name="gen_002",
                                      tags={"mlflow.parentRunId": parent, "generation": "2"})
    first.client.create_model_version("resume-lm", source="/nowhere", run_id=crashed.info.run_id,
                                      tags={"generation": "2", "score": "0.9"})

    second = Tracker(uri, "selfloop-resume", "resume-lm", store["root"] / "mlartifacts")
    assert second.start_loop(state, {"run": {"iterations": 3}}, {"attempt": "2"}) == parent
    assert first.client.get_run(parent).data.tags["attempt"] == "2"
    count = len(first.client.search_runs([first.experiment_id]))
    assert run_generation(second, root, 1, metrics_for(1, 0.5, 0.5)) == 1
    assert run_generation(second, root, 2, metrics_for(2, 0.9, 0.9)) == 2
    assert len(first.client.search_runs([first.experiment_id])) == count
    assert len(first.client.search_model_versions("name = 'resume-lm'")) == 2
    assert first.client.get_run(crashed.info.run_id).info.status == "FINISHED"
    assert int(first.client.get_model_version_by_alias("resume-lm", "champion").version) == 2
    # a worse generation does not take the champion alias
    assert run_generation(second, root, 3, metrics_for(3, 0.1, 0.1)) == 3
    assert int(first.client.get_model_version_by_alias("resume-lm", "champion").version) == 2


def test_unreachable_store_names_uri(tmp_path):
    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:9"):
        Tracker("http://127.0.0.1:9", "x", "m", tmp_path)
    (tmp_path / "file").write_text("not a directory")
    uri = f"sqlite:///{tmp_path}/file/mlflow.db"
    with pytest.raises(TrackingError, match=re.escape(uri)):
        Tracker(uri, "x", "m", tmp_path)


def test_locked_store_is_retried_then_reported():
    calls = []

    def locked_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert retry_locked(locked_twice, "sqlite:///x.db", attempts=3, backoff=0) == "ok"
    calls.clear()
    with pytest.raises(TrackingError, match=r"sqlite:///x\.db"):
        retry_locked(locked_twice, "sqlite:///x.db", attempts=2, backoff=0)
    assert len(calls) == 2


def test_runs_left_running_for_the_same_directory_are_reaped(store, tmp_path):
    """A loop killed (or replaced with --fresh) leaves its runs RUNNING; the next loop in
    the same run directory marks them KILLED and leaves other directories' runs alone."""
    uri = store["uri"]
    killed = Tracker(uri, "selfloop-reap", "reap-lm", store["root"] / "mlartifacts")
    old = killed.start_loop(tmp_path / "a.json", {}, {"workdir": "/runs/x"})
    other = killed.start_loop(tmp_path / "b.json", {}, {"workdir": "/runs/y"})
    fresh = Tracker(uri, "selfloop-reap", "reap-lm", store["root"] / "mlartifacts")
    new = fresh.start_loop(tmp_path / "c.json", {}, {"workdir": "/runs/x"})
    status = {r: fresh.client.get_run(r).info.status for r in (old, other, new)}
    assert status == {old: "KILLED", other: "RUNNING", new: "RUNNING"}
