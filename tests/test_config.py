import dataclasses
import json
import os
from pathlib import Path

import pytest

from selfloop.config import ConfigError, Params, load_params, to_dict


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


def test_a_saved_run_without_a_later_key_reads_as_what_selfloop_did_before_it():
    from selfloop.config import ADDED_KEYS, saved_params

    saved = json.loads(json.dumps(to_dict(load_params(None, ["measure.probe_draws=7"]))))
    for name in ADDED_KEYS:
        section, key = name.split(".")
        del saved[section][key]
    kept = json.dumps(saved)
    params = saved_params(saved)
    assert params.measure.probe_draws == 5  # the mean of 5 draws before the key (today's default: 32)
    assert params.train.schedule == "constant" and params.train.ema == 0.0
    assert params.train.template_balance == 0.0  # today's default: 0.25
    assert json.dumps(saved) == kept  # the caller's dict is not changed
    assert saved_params(json.loads(json.dumps(to_dict(load_params(None, ["measure.probe_draws=7"]))))
                        ).measure.probe_draws == 7  # a key the run has is its own


def test_pass_rate_balance_help_states_curates_constants():
    # the help text repeats them as numbers (config must not import a step module): keep in step
    from selfloop.steps.curate import MIN_RELATIVE_PASS_RATE, PASS_RATE_PRIOR

    text = " ".join(next(f.metadata["help"] for f in dataclasses.fields(Params().train)
                         if f.name == "pass_rate_balance").split())
    assert f"by {PASS_RATE_PRIOR} pseudo-samples" in text
    assert f"at least {MIN_RELATIVE_PASS_RATE:g} of it" in text


@pytest.mark.parametrize("value", [None, True, 0.0, 1e-05, 800, "base", "a b", {3: 1000, 4: 100}, [3, 4, 5]])
def test_override_arg_reads_back_through_a_shell(value):
    import shlex

    from selfloop.config import override_arg, parse_override

    (text,) = shlex.split(override_arg("model.path", value))
    assert parse_override(text) == (["model", "path"], value)
