"""run.replicate: runs from one base model that differ by chance alone."""

import functools

import pytest

from selfloop import diversity
from selfloop.ablate import ablate
from selfloop.config import ConfigError, load_params
from selfloop.loop import eval_seed
from selfloop.records import file_sha256, read_json, read_jsonl
from selfloop.steps.plan import generation_seed
from selfloop.versioning import base_stages, control_stages, generation_stages
from tests.conftest import TINY


def test_replicate_0_keeps_every_seed_and_others_shift_generations_1_on():
    p0, p1, p2 = (load_params(None, ["run.seed=3", f"run.replicate={r}"]) for r in (0, 1, 2))
    # the seeds every earlier run was made with (so those runs resume and replay unchanged)
    assert [generation_seed(p0, g) for g in (0, 1, 2)] == [3_000_009, 3_000_110, 3_000_211]
    assert [eval_seed(p0, g) for g in (0, 1, 2)] == [3, 20, 37]
    # generation 0 (the shared base model's evaluation and probe) is every replicate's
    assert generation_seed(p1, 0) == generation_seed(p0, 0) and eval_seed(p1, 0) == eval_seed(p0, 0)
    seeds = {(r, g): generation_seed(p, g) for r, p in enumerate((p0, p1, p2)) for g in range(1, 40)}
    assert len(set(seeds.values())) == len(seeds)  # no replicate reuses another's generation seed
    assert all(eval_seed(p1, g) != eval_seed(p0, g) for g in range(1, 40))


def test_a_negative_replicate_is_refused():
    with pytest.raises(ConfigError, match=r"run\.replicate must be >= 0"):
        load_params(None, ["run.replicate=-1"])


def test_dvc_replays_a_generation_when_its_replicate_changes():
    def params_of(stage: dict) -> list[str]:
        return stage["params"][0]["params.json"]

    for name, stage in {**generation_stages(2), **control_stages(2)}.items():
        assert ("run.replicate" in params_of(stage)) == (not name.endswith("_verify")), name
    assert not any("run.replicate" in params_of(s) for s in base_stages().values())


def test_replicates_share_the_base_and_draw_their_own_generations(tmp_path, monkeypatch):
    monkeypatch.setattr(diversity, "ngram_features", functools.partial(diversity.ngram_features, dim=256))
    sets = [o for o in TINY if not o.startswith("run.iterations=")]
    arms = {"r0": ("run.control=false",), "r1": ("run.control=false", "run.replicate=1")}
    work = tmp_path / "ablate"
    got = ablate(None, sets, 1, arms, workers=1, workdir=work, out=tmp_path / "report", log=lambda _: None)
    assert got["failed"] == {} and sorted(got["ran"]) == ["r0", "r1"]

    def model_sha(arm: str, g: int) -> str:
        return file_sha256(work / arm / f"gen_{g:03d}" / "model" / "model.safetensors")

    assert model_sha("r0", 0) == model_sha("r1", 0)
    plans = [read_json(work / arm / "gen_001" / "plan.json") for arm in arms]
    assert plans[0]["seed"] == 101 and plans[1]["seed"] == 101 + 7_919
    assert plans[0]["problems_per_level"] == plans[1]["problems_per_level"]  # same base evaluation
    problems = [{r["problem_id"] for r in read_jsonl(work / arm / "gen_001" / "candidates.jsonl")}
                for arm in arms]
    assert problems[0] != problems[1]
    assert model_sha("r0", 1) != model_sha("r1", 1)
    evals = [[r["response"] for r in read_jsonl(work / arm / "gen_001" / "eval_samples.jsonl")]
             for arm in arms]
    assert len(evals[0]) == len(evals[1]) and evals[0] != evals[1]
