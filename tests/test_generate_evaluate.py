"""generate and evaluate with the scripted FakeGenerator: duplicate answers collapse with their
count; greedy accuracy, pass@k and distinct correct answers per solved problem are exact."""

from selfloop.domains.countdown import Countdown
from selfloop.generation import FakeGenerator
from selfloop.steps.evaluate import evaluate
from selfloop.steps.generate import generate, verify

DOM = Countdown((1, 9), (1, 99))
P1 = {"numbers": [2, 3, 4], "target": 20, "level": 3, "problem_id": "a"}  # (2+3)*4
P2 = {"numbers": [1, 2, 3], "target": 6, "level": 3, "problem_id": "b"}  # 1+2+3, 1*2*3


def scripted(prompt: str, i: int) -> str:
    if prompt.startswith("2 3 4"):
        return ["(2+3)*4", "4*(3+2)", "(2+3)*4", "oops"][i % 4]
    return ["1+2+3", "1*2*3", "9"][i % 3] if i else "1-2"


def test_generate_collapses_duplicates_and_verify_counts_samples():
    plan = {"samples": 4, "temperature": 1.0, "top_p": 1.0, "seed": 3, "generation": 1}
    records, stats = generate(DOM, FakeGenerator(scripted), plan, [P1], {"sha256": "x"})
    assert [(r["response"], r["count"]) for r in records] == [("(2+3)*4", 2), ("4*(3+2)", 1), ("oops", 1)]
    assert stats == {"problems": 1, "samples": 4, "distinct": 3}
    verified, vstats = verify(DOM, records, 200)
    assert [r["verification"][0]["verdict"] for r in verified] == ["pass", "pass", "fail"]
    assert vstats["acceptance_rate"] == 0.75 and vstats["reasons"] == {"bad_char": 1, "correct": 3}


def test_evaluate_greedy_pass_at_k_and_distinct_answers():
    result = evaluate(DOM, FakeGenerator(scripted), [P1, P2], k=4, temperature=1.0, seed=0,
                      max_chars=200)
    lv = result["levels"]["3"]
    # greedy (sample 0): P1 right, P2 wrong ("1-2"); sampled: both solved; P1 has 2 distinct
    # correct answers, P2 has 2 ("1+2+3", "1*2*3").
    assert lv == {"n": 2, "k": 4, "greedy_acc": 0.5, "pass_at_k": 1.0, "distinct_per_solved": 2.0}
    # the pass@k samples come back as the probe: k per problem, each with its verdict
    probe = result["samples"]
    assert [(p["problem_id"], p["response"], p["reason"], p["well_formed"]) for p in probe] == [
        ("a", "(2+3)*4", "correct", True), ("a", "4*(3+2)", "correct", True),
        ("a", "(2+3)*4", "correct", True), ("a", "oops", "bad_char", False),
        ("b", "1-2", "wrong_numbers", False), ("b", "1*2*3", "correct", True),
        ("b", "9", "wrong_numbers", False), ("b", "1+2+3", "correct", True)]
