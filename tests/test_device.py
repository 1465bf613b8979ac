"""run.device: where models sample, train and are scored. The GPU test runs only where torch
sees one (the CI machine has none); the rest holds on any machine."""

import hashlib
import re

import pytest
import torch

from selfloop import model as mdl
from selfloop.cli import main
from selfloop.config import ConfigError, load_params, to_dict, with_added_keys
from selfloop.loop import run
from selfloop.versioning import base_stages, control_stages, generation_stages

HAS_CUDA = torch.cuda.is_available()


def test_unknown_device_is_refused_naming_the_choices():
    with pytest.raises(ConfigError, match=re.escape("run.device must be one of 'cpu', 'cuda', 'auto'")):
        load_params(None, ["run.device=gpu"])


def test_auto_is_saved_as_the_device_it_chose():
    assert load_params(None, ["run.device=auto"]).run.device == ("cuda" if HAS_CUDA else "cpu")
    assert load_params(None).run.device == "cpu"  # the default never depends on the machine


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_bad_input_before_any_work(tmp_path, capsys):
    with pytest.raises(ConfigError, match="sees no CUDA device"):
        load_params(None, ["run.device=cuda"])
    assert main(["run", "--workdir", str(tmp_path / "r"), "--set", "run.device=cuda"]) == 2
    assert "sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_run_saved_before_the_key_reads_as_cpu():
    saved = to_dict(load_params(None))
    del saved["run"]["device"]
    filled, added = with_added_keys(saved)
    assert filled["run"]["device"] == "cpu" and added == {"run.device": "cpu"}


def test_every_model_stage_depends_on_the_device():
    stages = {**base_stages(), **generation_stages(2), **control_stages(2)}
    model_steps = ["base_train", "base_evaluate", "gen_002_generate", "gen_002_train", "gen_002_evaluate",
                   "gen_002_measure", "control_002_train", "control_002_evaluate"]
    for name in model_steps:
        assert "run.device" in stages[name]["params"][0]["params.json"], name
    for name in ["data", "gen_002_verify", "gen_002_curate", "gen_002_monitor"]:  # no model runs there
        assert "run.device" not in stages[name]["params"][0]["params.json"], name


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_the_loop_runs_on_the_gpu_and_repeats_itself(tmp_path, tiny_overrides):
    """Every model step on the GPU, twice from scratch: the same samples, the same weights."""
    digests = []
    for name in ("a", "b"):
        params = load_params(None, [*tiny_overrides, f"run.workdir={tmp_path / name}", "run.device=cuda",
                                    "track.dvc=false", "run.gates=false"])
        assert params.run.device == "cuda"
        results = run(params)
        assert len(results["loop"]) == 1
        root = tmp_path / name
        files = ("gen_000/model/model.safetensors", "gen_001/candidates.jsonl",
                 "gen_001/model/model.safetensors", "gen_001/eval.json",
                 "control/gen_001/model/model.safetensors")
        digests.append([_digest(root / f) for f in files])
    loaded, _ = mdl.load(tmp_path / "a" / "gen_001" / "model", "cuda")
    assert next(loaded.parameters()).device.type == "cuda"
    assert digests[0] == digests[1]
