"""One tiny iteration of the real loop (real model, real TRL training) on files."""

from pathlib import Path

from selfloop.config import load_params
from selfloop.loop import run
from selfloop.records import read_json, read_jsonl
from selfloop.steps.curate import capped_steps


def test_tiny_loop_writes_every_step_with_provenance(tiny_overrides):
    params = load_params(None, tiny_overrides)
    results = run(params)
    root = Path(params.run.workdir)
    g1 = root / "gen_001"
    for name in ("plan.json", "candidates.jsonl", "verified.jsonl", "accepted.jsonl",
                 "curation.jsonl", "pool.jsonl", "mix.jsonl", "eval.json", "diversity.json",
                 "metrics.json", "model/model.safetensors", "model/COMPLETE"):
        assert (g1 / name).exists(), name
    assert (root / "control" / "gen_001" / "model" / "COMPLETE").exists()
    assert set(results["base"]) == {"3", "4", "5"} and len(results["loop"]) == 1

    candidates = read_jsonl(g1 / "verified.jsonl")
    assert candidates, "the model produced no candidates"
    heldout = {h["problem_id"] for h in read_jsonl(root / "data" / "heldout.jsonl")}
    base_sha = read_jsonl(g1 / "candidates.jsonl")[0]["generator"]["sha256"]
    assert len(base_sha) == 64
    for r in candidates:
        assert r["origin"] == "synthetic" and r["generation"] == 1
        assert r["problem_id"] not in heldout
        assert r["generator"]["sha256"] == base_sha
        assert {"temperature", "top_p", "seed", "samples_per_problem"} <= set(r["sampling"])
        assert r["verification"][0]["verdict"] in ("pass", "fail")
    assert sum(r["count"] for r in candidates) == 40 * 4

    decisions = read_jsonl(g1 / "curation.jsonl")
    assert {d["id"] for d in decisions} == {r["id"] for r in candidates}
    mix = read_jsonl(g1 / "mix.jsonl")
    reference_ids = {r["id"] for r in read_jsonl(root / "data" / "reference.jsonl")}
    pool = read_jsonl(g1 / "pool.jsonl")
    t = params.train  # train.max_epochs cuts the steps while the pool is small
    assert len(mix) == capped_steps(t.steps, t.batch_size, t.reference_fraction, len(pool), t.max_epochs)
    t = params.train
    n_ref = round(t.reference_fraction * t.batch_size) if pool else t.batch_size
    for m in mix:
        assert len(m["reference"]) == n_ref and set(m["reference"]) <= reference_ids
    metrics = read_json(g1 / "metrics.json")
    assert metrics["curate"]["accepted"] == len(read_jsonl(g1 / "accepted.jsonl"))
    assert set(metrics["seconds"]) == {"plan", "generate", "verify", "curate", "train", "evaluate", "measure",
                                       "monitor"}
    assert read_json(g1 / "monitor.json")["decisions"] == metrics["monitor"]
    div = metrics["diversity"]["3"]
    assert div["samples"]["n"] == sum(r["count"] for r in candidates if r["level"] == 3)
    assert div["samples"]["vendi_ngram"] >= 1.0 and div["samples"]["mean_logprob"] < 0
    assert div["reference"]["vendi_ngram"] > 1.0
    # the accepted answers at a fixed size as well: a tiny model accepts next to nothing, so the
    # step measures again with reference answers standing in for accepted ones
    from selfloop.loop import NullReporter, step_measure
    from selfloop.records import write_jsonl
    from selfloop.workspace import Workspace

    stand_in = [r for r in read_jsonl(root / "data" / "reference.jsonl") if r["level"] == 3][:150]
    write_jsonl(g1 / "accepted.jsonl", stand_in)
    eq = step_measure(params, Workspace(root), 1, NullReporter())["diversity"]["3"]["accepted_equal_n"]
    assert params.measure.accepted_n == 128 and len(stand_in) == 150
    assert eq["available"] == 150 and eq["n"] == 128 and eq["full_size"] and eq["vendi_ngram"] > 1
    for kind in ("candidates", "accepted", "mix"):
        assert read_json(g1 / "validation" / f"{kind}.json")["success"]
    assert read_json(root / "data" / "validation" / "reference.json")["success"]


def test_reference_data_is_solver_made_and_disjoint_from_heldout(tiny_overrides):
    from selfloop.domains import get_domain
    from selfloop.steps import reference

    params = load_params(None, tiny_overrides)
    domain = get_domain(params.domain)
    heldout = reference.make_heldout(params, domain)
    ids = {h["problem_id"] for h in heldout}
    assert len(ids) == len(heldout) == 12 * 3
    ref = reference.make_reference(params, domain, ids)
    assert len(ref) == 180 and not ids & {r["problem_id"] for r in ref}
    assert all(domain.verify(r["response"], r["problem"]).correct for r in ref)
    assert ref == reference.make_reference(params, domain, ids)  # seeded


def test_same_params_same_files_wherever_the_run_lives(tmp_path, tiny_overrides):
    """Sampling and training are deterministic on CPU: two runs give identical bytes."""
    from selfloop.records import file_sha256

    roots = []
    for name in ("a", "b"):
        overrides = [o for o in tiny_overrides if not o.startswith("run.workdir=")]
        params = load_params(None, [*overrides, f"run.workdir={tmp_path / name}", "run.control=false"])
        run(params)
        roots.append(tmp_path / name)
    for rel in ("data/reference.jsonl", "gen_000/model/model.safetensors", "gen_001/candidates.jsonl",
                "gen_001/verified.jsonl", "gen_001/mix.jsonl", "gen_001/model/model.safetensors",
                "gen_001/eval.json", "gen_001/diversity.json"):
        assert file_sha256(roots[0] / rel) == file_sha256(roots[1] / rel), rel


def test_a_corrupted_batch_is_stopped_before_training(tiny_overrides, monkeypatch, capsys):
    """A candidate that lost its verdict fails the candidates suite: the iteration stops,
    the batch stays on disk, no checkpoint of that generation exists."""
    from selfloop import cli
    from selfloop.steps import generate as gen

    real_verify = gen.verify

    def corrupting_verify(domain, records, max_chars):
        out, stats = real_verify(domain, records, max_chars)
        out[0] = {k: v for k, v in out[0].items() if k != "verification"}
        return out, stats

    monkeypatch.setattr(gen, "verify", corrupting_verify)
    args = ["run", "--params", "params.yaml", "--no-control"]
    for o in tiny_overrides:
        args += ["--set", o]
    assert cli.main(args) == 3
    err = capsys.readouterr().err
    assert "candidates batch" in err and "verified.jsonl failed validation" in err
    assert "expect_column_values_to_not_be_null(verdict)" in err
    root = Path(next(o for o in tiny_overrides if o.startswith("run.workdir=")).split("=", 1)[1])
    bad_id = read_jsonl(root / "gen_001" / "verified.jsonl")[0]["id"]
    assert bad_id in err
    assert not read_json(root / "gen_001" / "validation" / "candidates.json")["success"]
    assert not (root / "gen_001" / "model").exists()
    assert not (root / "gen_001" / "mix.jsonl").exists()


def test_lineage_resolves_a_synthetic_and_a_reference_record(tiny_overrides, capsys, monkeypatch):
    from selfloop import cli
    from selfloop.lineage import lineage
    from selfloop.steps import generate as gen
    from selfloop.workspace import Workspace

    real_verify = gen.verify

    def first_one_passes(domain, records, max_chars):  # the tiny model may solve nothing
        out, stats = real_verify(domain, records, max_chars)
        out[0]["verification"] = [{**out[0]["verification"][0], "verdict": "pass", "score": 1.0}]
        return out, stats

    monkeypatch.setattr(gen, "verify", first_one_passes)
    params = load_params(None, [*tiny_overrides, "run.control=false", "plan.samples=8"])
    run(params)
    ws = Workspace(Path(params.run.workdir))
    mix_ids = {i for m in read_jsonl(ws.gen(1) / "mix.jsonl") for i in m["synthetic"] + m["reference"]}
    verified = read_jsonl(ws.gen(1) / "verified.jsonl")
    accepted = read_jsonl(ws.gen(1) / "accepted.jsonl")
    rejected = next(r for r in verified if r["verification"][0]["verdict"] == "fail")

    chain = lineage(ws, rejected["id"])
    assert chain["curation"] == "rejected_unverified" and chain["trained"] == []
    assert chain["record"]["generator"]["path"] == "gen_000/model"

    ref_id = next(i for i in mix_ids if i in {r["id"] for r in read_jsonl(ws.reference)})
    chain = lineage(ws, ref_id)
    assert chain["record"]["origin"] == "reference"
    assert [(t["generation"], t["checkpoint"]) for t in chain["trained"]][-1] == (1, "gen_001/model")
    chain = lineage(ws, accepted[0]["id"])
    assert chain["curation"] == "accepted"
    assert [(t["arm"], t["generation"]) for t in chain["trained"]] == [("loop", 1)]
    assert chain["trained"][0]["times_in_mix"] >= 1

    assert cli.main(["lineage", rejected["id"], "--workdir", str(ws.root)]) == 0
    out = capsys.readouterr().out
    assert "generator   gen_000/model" in out and "curation    rejected_unverified" in out
    assert cli.main(["lineage", "nope", "--workdir", str(ws.root)]) == 2
