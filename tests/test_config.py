import dataclasses
import os
from pathlib import Path

import pytest

from selfloop.config import ConfigError, Params, load_params


def test_params_yaml_matches_defaults():
    import runpy

    assert load_params("params.yaml") == Params()
    render = runpy.run_path("scripts/write_params.py")["render"]
    assert Path("params.yaml").read_text() == render(), "run: python scripts/write_params.py"


def test_overrides_and_types(tmp_path):
    (tmp_path / "m").mkdir()
    rel = os.path.relpath(tmp_path / "m")
    p = load_params(None, ["train.steps=7", "reference.train_per_level={3: 5, 4: 1}", f"model.path={rel}"])
    assert p.train.steps == 7 and p.reference.train_per_level == {3: 5, 4: 1}
    assert p.model.path == str(tmp_path / "m")  # made absolute: stages run elsewhere
    with pytest.raises(ConfigError, match="is not a directory"):
        load_params(None, ["model.path=/nonexistent"])
    assert load_params(None, ["train.lr=5e-4"]).train.lr == 5e-4
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.train.steps = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.stpes=1", "unknown key(s) ['stpes']"),
        ("trian.steps=1", "unknown key(s) ['trian']"),
        ("train.steps=many", "params.train.steps: expected int"),
        ("run.control=maybe", "expected true/false"),
        ("train.reference_fraction=1.5", "reference_fraction must be in [0, 1]"),
        ("curate.selection=best", "curate.selection"),
        ("monitor.audit_floor=1.2", "monitor.audit_floor must be in [0, 1]"),
        ("train.template_balance=-1", "train.template_balance must be >= 0"),
        ("measure.probe_n=1", "measure.probe_n must be >= 2"),
        ("measure.probe_draws=0", "measure.probe_draws must be >= 1"),
        ("train.ema=1", "train.ema must be in [0, 1)"),
        ("train.schedule=step", "train.schedule must be one of 'constant', 'cosine', 'linear'"),
        ("nodots", "not of the form"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_params(None, [override])
    assert message in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such parameters file"):
        load_params(tmp_path / "nope.yaml")
