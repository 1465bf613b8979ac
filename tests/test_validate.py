"""great-expectations suites: each kind passes on good records and names the expectation,
file and ids of bad ones."""

from pathlib import Path

import pytest

from selfloop.config import load_params
from selfloop.records import read_json
from selfloop.validate import ValidationFailed, validate_mix, validate_records

P = load_params(None, ["train.batch_size=4", "train.reference_fraction=0.5"])
SHA = "a" * 64


def ref(i, problem="p1"):
    return {"id": f"r{i}", "origin": "reference", "generation": 0, "domain": "countdown", "level": 3,
            "problem_id": problem, "prompt": "2 3 4>20:", "response": "(2+3)*4"}


def syn(i, problem="p1", verdict="pass", **over):
    r = {**ref(i, problem), "id": f"s{i}", "origin": "synthetic", "generation": 1,
         "generator": {"sha256": SHA, "path": "gen_000/model"}, "sampling": {"seed": 7},
         "verification": [{"verifier": "v", "score": 1.0, "verdict": verdict, "reason": "r"}],
         "curation": {"decision": "accepted"}}
    r.update(over)
    return r


def test_good_batches_pass_and_results_are_saved(tmp_path):
    out = tmp_path / "v" / "reference.json"
    summary = validate_records("reference", [ref(1), ref(2, "p2")], Path("ref.jsonl"), P, {"h"}, out)
    assert summary["success"] and read_json(out)["rows"] == 2
    validate_records("candidates", [syn(1), syn(2, verdict="fail", response="")], Path("c"), P, set())
    validate_records("accepted", [syn(1), syn(2)], Path("a"), P, set())


@pytest.mark.parametrize(
    "kind,records,expectation,ids",
    [
        ("reference", [ref(1), ref(1)], "expect_column_values_to_be_unique", ["r1"]),
        ("reference", [ref(1), ref(2, problem="held")], "expect_column_values_to_be_in_set", ["r2"]),
        ("candidates", [syn(1), syn(2, verification=[])], "expect_column_values_to_not_be_null", ["s2"]),
        ("candidates", [syn(1), syn(3, generator={})], "expect_column_values_to_not_be_null", ["s3"]),
        ("candidates", [syn(1), syn(3, generator={"sha256": "x"})], "expect_column_value_lengths_to_equal",
         ["s3"]),
        ("candidates", [syn(1, response="9" * 5000)], "expect_column_value_lengths_to_be_between", ["s1"]),
        ("accepted", [syn(1), syn(2, verdict="fail")], "expect_column_values_to_be_in_set", ["s2"]),
        ("accepted", [syn(1), syn(4, origin="reference")], "expect_column_values_to_be_in_set", ["s4"]),
    ],
)
def test_bad_batches_fail_naming_expectation_file_and_ids(tmp_path, kind, records, expectation, ids):
    out = tmp_path / "result.json"
    with pytest.raises(ValidationFailed) as e:
        validate_records(kind, records, Path("gen_001/x.jsonl"), P, {"held"}, out)
    msg = str(e.value)
    assert "gen_001/x.jsonl" in msg and expectation in msg and ids[0] in msg
    saved = read_json(out)
    assert not saved["success"]
    assert any(f["expectation"] == expectation and f["ids"] == ids for f in saved["failures"])


def test_mix_suite_checks_reference_share_ids_and_heldout():
    by_id = {"r1": ref(1), "r2": ref(2), "s1": syn(1), "h": syn(9, problem="held")}
    good = [{"step": 0, "reference": ["r1", "r2"], "synthetic": ["s1", "s1"]}]
    validate_mix(good, by_id, Path("mix.jsonl"), P, {"held"}, pool_nonempty=True)
    bad = [
        {"step": 0, "reference": ["r1"], "synthetic": ["s1", "s1", "s1"]},  # 25% < 50%
        {"step": 1, "reference": ["r1", "r2"], "synthetic": ["s1", "zz"]},  # unknown id
        {"step": 2, "reference": ["r1", "r2"], "synthetic": ["s1", "h"]},  # held-out problem
    ]
    with pytest.raises(ValidationFailed) as e:
        validate_mix(bad, by_id, Path("mix.jsonl"), P, {"held"}, pool_nonempty=True)
    failed = {(f["column"], tuple(f["ids"])) for f in e.value.failures}
    assert failed == {("reference_share", ("step-0",)), ("unknown_ids", ("step-1",)),
                      ("heldout_ids", ("step-2",))}


def test_suites_of_one_kind_with_other_checks_coexist():
    """Suites are cached per process; a second suite of the same kind (other params) must
    not break the first."""
    other = load_params(None, ["train.batch_size=4", "train.reference_fraction=0.25"])
    by_id = {"r1": ref(1), "r2": ref(2), "s1": syn(1)}
    mix = [{"step": 0, "reference": ["r1", "r2"], "synthetic": ["s1", "s1"]}]
    for params in (P, other, P, other):
        validate_mix(mix, by_id, Path("mix.jsonl"), params, set(), pool_nonempty=True)
    with pytest.raises(ValidationFailed):
        validate_records("candidates", [syn(1), syn(2, generator={})], Path("c"), P, set())
    validate_records("candidates", [syn(1)], Path("c"), P, set())
