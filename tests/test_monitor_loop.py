"""The monitor acting in a real tiny loop (versioned by DVC): a flagged collapse signal
raises the next generation's temperature, an accuracy drop rolls back to the champion
checkpoint, and a second one in a row stops the loop; the decisions are files that the DVC
stages depend on, so the run stays replayable."""

import yaml

from selfloop.config import load_params
from selfloop.loop import run
from selfloop.monitor_replay import actions, replay, replay_params
from selfloop.records import file_sha256, read_json, read_jsonl
from selfloop.workspace import Workspace
from tests.conftest import TINY
from tests.test_versioning import BIN, ROOT, dvc_repo, sh


def test_monitor_acts_and_stops(tmp_path):
    repo = dvc_repo(tmp_path / "repo")
    workdir = repo / "runs" / "m"
    # thresholds that always fire: sample diversity is never 100x the first generation's,
    # and accuracy is always "more than -1 below the best"
    params = load_params(ROOT / "params.yaml", [*TINY, "run.iterations=4", "run.control=false",
                                                "monitor.vendi_floor=100", "monitor.accuracy_drop=-1",
                                                f"run.workdir={workdir}"])
    results = run(params)
    assert results["stopped"].startswith("monitor:") and len(results["loop"]) == 2
    g1 = read_json(workdir / "gen_001" / "monitor.json")["decisions"]
    assert {d["action"] for d in g1} >= {"raise_temperature", "rollback"}
    assert [d["action"] for d in read_json(workdir / "gen_002" / "monitor.json")["decisions"]][-1] == "stop"
    plan = read_json(workdir / "gen_002" / "plan.json")
    source = plan["policy"]["source_generation"]
    raised = round(params.plan.temperature + params.monitor.temperature_step, 6)
    assert plan["temperature"] == raised and source in (0, 1)
    assert {d["action"] for d in plan["decisions"]} >= {"raise_temperature", "rollback"}
    src = workdir / f"gen_{source:03d}" / "model" / "model.safetensors"
    record = read_jsonl(workdir / "gen_002" / "candidates.jsonl")[0]
    assert record["sampling"]["temperature"] == raised and record["generator"]["sha256"] == file_sha256(src)
    lock = yaml.safe_load((workdir / "dvc.lock").read_text())["stages"]
    deps = {d["path"] for d in lock["gen_002_generate"]["deps"]}
    assert f"gen_{source:03d}/model" in deps
    assert "gen_001/monitor.json" in {d["path"] for d in lock["gen_002_plan"]["deps"]}
    assert "Data and pipelines are up to date" in sh(repo, str(BIN / "dvc"), "status")
    # `selfloop monitor` over this real run: from its files alone it decides what the loop
    # decided while it ran (a rollback, then the stop) ...
    ws = Workspace(workdir)
    rows = replay(ws, replay_params(ws, []))
    assert [r.generation for r in rows] == [1, 2]
    g2 = read_json(workdir / "gen_002" / "monitor.json")["decisions"]
    assert [actions(r.replayed) for r in rows] == [actions(g1), actions(g2)]
    assert "stop" in actions(rows[1].replayed)
    assert all(r.recorded == r.replayed for r in rows)
    # ... and at thresholds that never fire, it says the run would have gone another way
    quiet = replay(ws, replay_params(ws, ["monitor.vendi_floor=0", "monitor.accuracy_drop=1"]))
    assert not quiet[0].same_actions and "rollback" not in actions(quiet[0].replayed)
