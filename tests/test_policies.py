"""Ablation policies: greedy-only selection, no verifier, no reference data in the mix."""

from pathlib import Path

import pytest

from selfloop.config import ConfigError, CurateConfig, load_params
from selfloop.domains.countdown import Countdown
from selfloop.generation import FakeGenerator
from selfloop.steps.curate import build_mix, curate, mix_makeup, next_pool
from selfloop.steps.generate import generate, greedy_plan, pass_unverified, verify
from selfloop.validate import validate_mix, validate_records

DOM = Countdown((1, 9), (1, 99))
PROBLEMS = [
    {"numbers": [2, 3, 4], "target": 20, "level": 3, "problem_id": "a"},  # (2+3)*4
    {"numbers": [1, 2, 3], "target": 6, "level": 3, "problem_id": "b"},  # 1+2+3
]
PLAN = {"samples": 4, "temperature": 1.0, "top_p": 0.9, "seed": 3, "generation": 1, "policy": {}}
CKPT = {"path": "gen_000/model", "sha256": "a" * 64}


class Recording(FakeGenerator):
    """A fake that remembers how it was asked to sample."""

    def __call__(self, prompts, n, temperature, top_p, seed, progress=None):
        self.asked = (n, temperature, top_p)
        return super().__call__(prompts, n, temperature, top_p, seed, progress)


def answers(prompt: str, i: int) -> str:
    return ["(2+3)*4", "4*(2+3)", "9"][i % 3] if prompt.startswith("2 3 4") else ["1+2+3", "3+2+1"][i % 2]


def test_greedy_samples_once_per_problem_and_keeps_one_answer():
    fake = Recording(answers)
    records, stats = generate(DOM, fake, greedy_plan(PLAN), PROBLEMS, CKPT)
    assert fake.asked == (1, 0.0, 1.0)  # greedy decoding: one answer, temperature 0
    assert stats == {"problems": 2, "samples": 2, "distinct": 2}
    assert [r["count"] for r in records] == [1, 1]
    for r in records:
        assert r["sampling"]["greedy"] is True and r["sampling"]["temperature"] == 0.0
        assert r["sampling"]["samples_per_problem"] == 1
    # curation keeps at most one answer per problem, even from several samples
    sampled, _ = generate(DOM, FakeGenerator(answers), PLAN, PROBLEMS, CKPT)
    assert not sampled[0]["sampling"]["greedy"] and len(sampled) == 5
    verified, _ = verify(DOM, sampled, 200)
    accepted, _, counts = curate(verified, [], set(), CurateConfig(selection="greedy", cap_per_problem=5))
    assert sorted(r["problem_id"] for r in accepted) == ["a", "b"]
    assert counts == {"accepted": 2, "over_cap": 2, "rejected_unverified": 1}


def test_monitor_temperature_raise_overrides_greedy():
    raised = {**PLAN, "temperature": 1.2, "policy": {"temperature": 1.2}}
    assert greedy_plan(raised) == raised
    assert greedy_plan(PLAN)["temperature"] == 0.0


def test_no_verifier_passes_everything_says_so_and_passes_the_suites():
    records, _ = generate(DOM, FakeGenerator(answers), PLAN, PROBLEMS, CKPT)
    verified, stats = pass_unverified(DOM, records, 200)
    traces = [r["verification"] for r in verified]
    assert all(t == [{"verifier": "none", "score": None, "verdict": "pass", "reason": "not_verified"}]
               for t in traces)
    assert stats["acceptance_rate"] == 1.0 and stats["verifier"] == "none"
    assert stats["exact_pass_rate"] == pytest.approx(7 / 8)  # "9" is wrong: passed anyway
    accepted, _, counts = curate(verified, [], set(), CurateConfig(cap_per_problem=5))
    assert len(accepted) == len(verified) and counts == {"accepted": 5}
    params = load_params(None, ["verify.verifier=none"])
    for kind, batch in (("candidates", verified), ("accepted", accepted)):
        assert validate_records(kind, batch, Path(kind), params, set())["success"]


def test_verifier_and_selection_values_are_checked():
    with pytest.raises(ConfigError, match=r"verify\.verifier"):
        load_params(None, ["verify.verifier=judge"])
    with pytest.raises(ConfigError, match="'greedy'"):
        load_params(None, ["curate.selection=best"])


def test_reference_fraction_zero_gives_all_synthetic_batches_that_pass_the_gate():
    params = load_params(None, ["train.reference_fraction=0", "train.batch_size=8", "train.steps=5"])
    reference = [{"id": f"r{i}", "problem_id": f"rp{i}"} for i in range(20)]
    pool = next_pool([], [{"id": f"s{i}", "problem_id": f"sp{i}", "generation": 1} for i in range(3)], True)
    mix = build_mix(reference, pool, 5, 8, params.train.reference_fraction, seed=0)
    assert all(m["reference"] == [] and len(m["synthetic"]) == 8 for m in mix)
    assert mix_makeup(mix, pool)["reference_share"] == 0.0
    by_id = {r["id"]: r for r in (*reference, *pool)}
    assert validate_mix(mix, by_id, Path("mix"), params, set(), True)["success"]
    # an empty pool still trains on reference data only
    assert all(len(m["reference"]) == 8 for m in build_mix(reference, [], 2, 8, 0.0, seed=0))


def _nudge(model_dir: Path) -> None:
    """Scale every weight of a saved checkpoint by 1.01 (a different checkpoint, same shapes)."""
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    save_file({k: v * 1.01 for k, v in load_file(path).items()}, path, metadata={"format": "pt"})


@pytest.mark.parametrize("start", ["base", "previous"])
def test_train_start_names_the_checkpoint_training_starts_from(tmp_path, start):
    """``train.start: base`` trains every generation from the base model, in the loop and the
    control arm: generation 2's training does not read generation 1's checkpoint, so changing
    that checkpoint and training generation 2 again gives the same weights. With 'previous'
    it does read it (the check can tell the two apart)."""
    import json

    from selfloop import loop
    from selfloop.records import file_sha256
    from selfloop.versioning import control_stages, generation_stages
    from selfloop.workspace import Workspace
    from tests.conftest import TINY

    params = load_params(Path("params.yaml"), [*TINY, "run.iterations=2", f"run.workdir={tmp_path / 'r'}",
                                               f"train.start={start}", "track.dvc=false"])
    loop.run(params)
    ws = Workspace(tmp_path / "r")
    for arm in ("loop", "control"):
        meta = json.loads((ws.model(2, arm) / "COMPLETE").read_text())
        assert meta["trained_from"] == (0 if start == "base" else 1)
        weights = ws.model(2, arm) / "model.safetensors"
        before = file_sha256(weights)
        _nudge(ws.model(1, arm))
        loop.step_train(params, ws, 2, loop.NullReporter(), arm=arm)
        assert (file_sha256(weights) == before) == (start == "base"), arm
    # what DVC records as the training's input checkpoint (what a replay retrains from)
    stages = generation_stages(2, ws.source_generation(2), ws.start_generation(2, start))
    assert ("gen_000/model" in stages["gen_002_train"]["deps"]) == (start == "base")
    assert ("gen_001/model" in stages["gen_002_train"]["deps"]) == (start != "base")
    assert "gen_001/model" in stages["gen_002_generate"]["deps"]  # samples come from the last one
    control = control_stages(2, ws.start_generation(2, start, "control"))["control_002_train"]["deps"]
    assert ("gen_000/model" in control) == (start == "base")
    assert ("control/gen_001/model" in control) == (start != "base")


def test_train_start_values_are_checked():
    with pytest.raises(ConfigError, match=r"train\.start must be one of 'base', 'previous'"):
        load_params(Path("params.yaml"), ["train.start=last"])


def test_max_epochs_cuts_the_loops_steps_not_the_controls(tmp_path):
    """With ``train.max_epochs`` the loop's mix (and so its training call) has only the steps
    that pass over the pool that many times; the control arm keeps ``train.steps``."""
    from selfloop import loop
    from selfloop.records import read_jsonl
    from selfloop.steps.curate import capped_steps
    from selfloop.workspace import Workspace
    from tests.conftest import TINY

    params = load_params(Path("params.yaml"), [*TINY, f"run.workdir={tmp_path / 'r'}", "train.steps=40",
                                               "train.max_epochs=1", "track.dvc=false",
                                               "train.template_balance=0",  # each once a pass
                                               "verify.verifier=none"])  # a pool, whatever it samples
    loop.run(params)
    ws = Workspace(tmp_path / "r")
    pool = read_jsonl(ws.gen(1) / "pool.jsonl")
    mix = read_jsonl(ws.gen(1) / "mix.jsonl")
    assert 0 < len(pool) < 40 * 13  # else the cap would not bind
    assert len(mix) == capped_steps(40, 16, 0.2, len(pool), 1.0) < 40
    drawn = [i for m in mix for i in m["synthetic"]]
    assert len(set(drawn)) == len(pool) and len(drawn) < len(pool) + 13  # each once, one batch over
    assert len(read_jsonl(ws.gen(1, "control") / "mix.jsonl")) == 40
    assert (ws.model(1) / "COMPLETE").exists()
