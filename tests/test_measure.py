"""Measuring a generation: weighting by sample counts, per-level sets, and the model's
confidence computed as training tokenizes."""

import math
import random
import statistics

import pytest
import torch

from selfloop import diversity as dv
from selfloop import model as mdl
from selfloop.config import DomainConfig
from selfloop.domains import get_domain
from selfloop.steps.measure import (
    fixed_n_draws,
    mean_logprob,
    mean_template_entropy,
    measure,
    measure_fixed_n,
    texts_by_level,
)
from selfloop.steps.train import tokenize_example


def rec(level, response, count=1, problem="p", verdict="pass"):
    return {"level": level, "response": response, "count": count, "prompt": "1 2 3>6:",
            "problem_id": f"{problem}{level}", "verification": [{"verdict": verdict}]}


def test_answers_per_solved_problem_count_distinct_passing_answers():
    samples = [rec(3, "1+2+3", 9, "a"), rec(3, "3+2+1", 1, "a"), rec(3, "1*2*3", 1, "a", "fail"),
               rec(3, "1+2+3", 2, "b"), rec(3, "9-3", 4, "c", "fail"), rec(4, "1+2+3+4", 1, "a")]
    accepted = [rec(3, "1+2+3", 1, "a"), rec(3, "1+2+3", 1, "b")]
    out = measure(samples, accepted, [rec(3, "1+2+3")], None, 100, 0)
    # a: two passing ways (the failing one does not count), b: one; c solved nothing
    assert out["3"]["samples"]["solved"] == 2 and out["3"]["samples"]["distinct_per_solved"] == 1.5
    assert out["3"]["accepted"]["solved"] == 2 and out["3"]["accepted"]["distinct_per_solved"] == 1.0
    assert out["4"]["samples"]["distinct_per_solved"] == 1.0 and out["4"]["accepted"] == {"n": 0}
    nothing = measure([rec(3, "1", 1, "a", "fail")], [], [rec(3, "1+2+3")], None, 100, 0)
    assert nothing["3"]["samples"]["solved"] == 0 and nothing["3"]["samples"]["distinct_per_solved"] == 0.0
    anonymous = [{"level": 3, "response": "1+2+3"}]  # no problem_id: no problems to count over
    assert "distinct_per_solved" not in measure(anonymous, anonymous, [], None, 100, 0)["3"]["accepted"]


def test_samples_are_weighted_by_count():
    got = texts_by_level([rec(3, "1+2+3", 3), rec(3, "3*2*1"), rec(4, "x")])
    assert got == {3: ["1+2+3"] * 3 + ["3*2*1"], 4: ["x"]}
    assert texts_by_level([rec(3, "a", 5)], weighted=False) == {3: ["a"]}


def test_measure_per_level_and_set():
    samples = [rec(3, "1+2+3", 40), rec(3, "(1+2)*3", 2), rec(4, "1*2*3*4")]
    accepted = [rec(3, "1+2+3")]
    reference = [rec(3, "1+2+3"), rec(3, "3*2*1"), rec(4, "1+2+3+4")]
    out = measure(samples, accepted, reference, None, 100, 0)
    s3 = out["3"]["samples"]
    assert s3["n"] == 42 and s3["distinct"] == 2
    assert 1.0 < s3["vendi_ngram"] < 2.0  # two answers, one dominating
    assert out["3"]["accepted"]["vendi_ngram"] == pytest.approx(1.0)
    assert out["3"]["reference"]["template_kl_vs_reference"] == pytest.approx(0.0)
    assert out["4"]["accepted"] == {"n": 0}
    fake = measure(samples, accepted, reference, lambda t: torch.eye(len(t), 8)[:, :8].numpy(), 100, 0)
    assert "vendi_embedding" in fake["3"]["samples"] and "mmd_vs_reference" in fake["3"]["samples"]


def test_mean_logprob_matches_a_direct_computation():
    domain = get_domain(DomainConfig())
    tok = mdl.build_char_tokenizer(domain.alphabet)
    model = mdl.build_gpt2(tok, 1, 16, 2, 48, 0).eval()
    prompts, responses = ["3 5 7>22:", "1 2>3:"], ["3*5+7", "1+2"]
    want = 0.0
    for p, r in zip(prompts, responses, strict=True):
        row = tokenize_example(tok, p, r, 48)
        ids = torch.tensor([row["input_ids"]])
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)
        for t, label in enumerate(row["labels"][1:]):
            if label != -100:
                want += float(logp[t, label])
    got = mean_logprob(model, tok, prompts, responses)
    assert got == pytest.approx(want / 2, rel=1e-5) and got < 0 and math.isfinite(got)


def probe_rec(level, response, well_formed=True):
    return {"level": level, "response": response, "well_formed": well_formed,
            "reason": "wrong_value" if well_formed else "syntax"}


def test_probe_measures_all_samples_and_a_fixed_size_sample_of_the_well_formed():
    probe = ([probe_rec(4, f"{i}+1+2+3") for i in range(1, 10)] * 40  # 360 well-formed, 9 distinct
             + [probe_rec(4, f"({i}(+", False) for i in range(40)]  # 40 malformed, all distinct
             + [probe_rec(3, "1+2+3")] * 5)
    out = measure([], [], [rec(4, "1+2+3+4")], None, 100, 0, probe=probe, probe_n=100)
    p4, w4 = out["4"]["probe"], out["4"]["probe_well_formed"]
    assert p4["n"] == 400 and p4["well_formed_share"] == pytest.approx(0.9) and p4["distinct"] == 49
    assert w4["n"] == 100 and w4["distinct"] <= 9  # the fixed-size sample, malformed left out
    assert w4["available"] == 360 and w4["vendi_ngram_sd"] > 0  # 32 draws of 100 from 360
    one = measure([], [], [rec(4, "1+2+3+4")], None, 100, 0, probe=probe, probe_n=100, probe_draws=1)
    w1 = one["4"]["probe_well_formed"]
    assert "vendi_ngram_sd" not in w1 and w1["n"] == 100  # one draw: no spread to give
    assert w1["vendi_ngram"] != w4["vendi_ngram"]  # the mean of 32 is not the first draw
    assert w4["vendi_ngram"] < p4["vendi_ngram"]  # malformed noise inflates the all-samples Vendi
    assert out["3"]["probe_well_formed"]["vendi_ngram"] == pytest.approx(1.0)  # 5 identical answers
    again = measure([], [], [rec(4, "1+2+3+4")], None, 100, 0, probe=probe, probe_n=100)
    assert again == out  # the sample is seeded
    assert "probe" not in measure([rec(3, "1+2+3")], [], [], None, 100, 0)["3"]  # no probe given


def test_audit_gives_the_share_of_accepted_answers_that_pass_a_trusted_check():
    dom = get_domain(DomainConfig())
    accepted = [{**rec(3, r), "problem": {"numbers": [1, 2, 3], "target": 6}}
                for r in ("1+2+3", "1*2*3", "3*2-1", "1+2")]
    accepted.append({**rec(4, "1+2+3+4"), "problem": {"numbers": [1, 2, 3, 4], "target": 10}})

    def audit(r):
        return dom.verify(r["response"], r["problem"], 200).correct

    out = measure([], accepted, [], None, 100, 0, audit=audit)
    assert out["3"]["accepted"]["audit_pass_share"] == 0.5 and out["4"]["accepted"]["audit_pass_share"] == 1.0
    assert "audit_pass_share" not in measure([], accepted, [], None, 100, 0)["3"]["accepted"]


def test_probe_with_fewer_well_formed_answers_than_probe_n_measures_them_all():
    probe = [probe_rec(5, f"{i}+1+2+3+4") for i in range(1, 8)] + [probe_rec(5, "x(", False)] * 3
    w5 = measure([], [], [], None, 100, 0, probe=probe, probe_n=256)["5"]["probe_well_formed"]
    assert w5["n"] == 7 and w5["available"] == 7 and "vendi_ngram_sd" not in w5  # one draw: all of them
    none = measure([], [], [], None, 100, 0, probe=[probe_rec(5, "x(", False)], probe_n=256)["5"]
    assert none["probe_well_formed"] == {"n": 0, "available": 0} and none["probe"]["well_formed_share"] == 0.0


def test_samples_well_formed_keeps_legal_attempts_counted_at_a_fixed_size():
    dom = get_domain(DomainConfig())
    problem = {"numbers": [1, 2, 3, 4], "target": 10}
    legal_answers = [f"{a}+{b}+{c}+{d}" for a, b, c, d in
                     [(1, 2, 3, 4), (4, 3, 2, 1), (2, 1, 4, 3), (3, 4, 1, 2), (1, 3, 2, 4)]]
    samples = ([{**rec(4, a, 30), "problem": problem} for a in legal_answers]  # 150 legal
               + [{**rec(4, f"({i}(+"), "problem": problem} for i in range(50)]  # 50 malformed, distinct
               + [{**rec(4, "1*2*3*4", 50), "problem": problem}])  # 50 legal, wrong value
    out = measure(samples, [], [], None, 100, 0, probe_n=100,
                  well_formed=lambda r: dom.verify(r["response"], r["problem"], 200).well_formed)
    w = out["4"]["samples_well_formed"]
    assert w["available"] == 200 and w["share"] == pytest.approx(200 / 250)  # repeats counted
    assert w["n"] == 100 and w["distinct"] <= 6 and w["vendi_ngram_sd"] > 0
    assert w["vendi_ngram"] < out["4"]["samples"]["vendi_ngram"]  # the malformed noise is left out
    assert "samples_well_formed" not in measure(samples, [], [], None, 100, 0)["4"]  # no check given


def test_accepted_answers_are_also_measured_at_a_fixed_size():
    """A Vendi score grows with the number of answers; at a fixed size two generations with
    different numbers of accepted answers compare on their variety alone."""
    digits = range(1, 10)
    answers = [f"{a}*{b}-{c}+{d}" for a in digits for b in digits for c in digits for d in (1, 2)]
    large = [rec(3, a) for a in random.Random(1).sample(answers, 1000)]
    small = random.Random(0).sample(large, 60)  # the same variety, a sixteenth of the answers

    def vendi(acc, key):
        return measure([], acc, [], None, 100, 0, probe_draws=8, accepted_n=40)["3"][key]
    assert vendi(large, "accepted")["vendi_ngram"] > vendi(small, "accepted")["vendi_ngram"] * 1.25
    eq_small, eq_large = vendi(small, "accepted_equal_n"), vendi(large, "accepted_equal_n")
    assert eq_small["n"] == eq_large["n"] == 40 and eq_small["full_size"] and eq_large["full_size"]
    assert eq_small["available"] == 60 and eq_large["available"] == 1000
    assert eq_large["vendi_ngram"] == pytest.approx(eq_small["vendi_ngram"], rel=0.05)
    assert "accepted_equal_n" not in measure([], large, [], None, 100, 0)["3"]  # accepted_n=0: off
    few = measure([], small[:10], [], None, 100, 0, accepted_n=40)["3"]["accepted_equal_n"]
    assert few["n"] == 10 and not few["full_size"]


def test_fixed_size_template_entropy_is_the_mean_over_the_draws():
    """One draw of a fixed size moves the template entropy as much as a generation can; the
    recorded value is the mean over the same draws the Vendi averages."""
    texts = ([f"{i}+{i}" for i in range(100)] + [f"{i}*{i}-1" for i in range(60)]
             + [f"({i}-1)*2" for i in range(40)])
    random.Random(3).shuffle(texts)
    draws = fixed_n_draws(texts, 20, 5, 8)
    assert len(draws) == 8 and all(len(d) == 20 for d in draws)
    per_draw = [dv.template_entropy(d) for d in draws]
    assert len(set(per_draw)) > 1  # the draws differ
    out = measure_fixed_n(texts, [], 0, 20, 5, 8)
    assert out["template_entropy"] == pytest.approx(statistics.fmean(per_draw), abs=1e-6)
    assert out["template_entropy_sd"] == pytest.approx(statistics.stdev(per_draw), abs=1e-6)
    assert out["distinct"] == len(set(draws[0]))  # the other numbers: the first draw's
    assert mean_template_entropy(texts, 20, 5, 8) == out["template_entropy"]  # what the report recomputes
    # at most n texts: one draw, all of them, no spread
    few = measure_fixed_n(texts[:10], [], 0, 20, 5, 8)
    assert few["template_entropy"] == pytest.approx(dv.template_entropy(texts[:10]), abs=1e-6)
    assert "template_entropy_sd" not in few and fixed_n_draws(texts[:10], 20, 5, 8) == [texts[:10]]
