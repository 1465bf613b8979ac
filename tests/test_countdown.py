import random

import pytest

from selfloop.domains.countdown import (
    Countdown,
    Problem,
    random_problem,
    reward,
    solve,
    steps_to_infix,
    verify_answer,
)

P = Problem((2, 3, 4), 20)  # (2+3)*4


@pytest.mark.parametrize("level", [3, 4, 5])
def test_problems_are_reproducible_and_solvable(level):
    a = [random_problem(random.Random(5), level, (1, 9), (1, 99)) for _ in range(3)]
    rng = random.Random(5)
    b = [random_problem(rng, level, (1, 9), (1, 99))]
    assert a[0] == a[1] == b[0]
    rng = random.Random(level)
    for _ in range(30):
        problem, construction = random_problem(rng, level, (1, 9), (1, 99))
        assert problem.level == level and 1 <= problem.target <= 99
        assert verify_answer(construction, problem).correct
        solution = solve(problem)
        assert solution is not None and verify_answer(solution, problem).correct


def test_solver_reports_unsolvable():
    assert solve(Problem((1, 1, 1), 99)) is None
    assert solve(Problem((2, 2), 5)) is None
    assert solve(Problem((2, 3), 6)) == "2*3=6"


@pytest.mark.parametrize(
    "answer",
    ["(2+3)*4", "4*(3+2)", " (2 + 3) * 4 ", "2+3=5,5*4=20", "3+2=5,4*5=20"],
)
def test_correct_answers(answer):
    v = verify_answer(answer, P)
    assert v.correct and v.reason == "correct"


@pytest.mark.parametrize(
    "answer,reason",
    [
        ("2**3*4", "syntax"),  # power: '*' then '*' is not an atom
        ("(2+3)//4*0", "syntax"),
        ("(2+3)*4/(3-3)", "division_by_zero"),
        ("2+3=5,5/0=0", "number_not_available"),
        ("(2+2)*4", "wrong_numbers"),  # 2 reused, 3 missing
        ("(2+3)*4*2", "wrong_numbers"),
        ("(2+3)", "wrong_numbers"),
        ("23-3", "wrong_numbers"),  # digits concatenated
        ("23-3=20", "number_not_available"),
        ("-2+3*4+10", "syntax"),  # unary minus
        ("(2+3)*\u0664", "bad_char"),  # Arabic-Indic four
        ("(2+3)*４", "bad_char"),  # fullwidth four
        ("1" * 10_000, "too_long"),
        ("__import__('os')", "bad_char"),
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("(2+3*4", "syntax"),
        ("2+3=6,6*4=24", "wrong_arithmetic"),
        ("2+3=5", "numbers_unused"),
        ("2+3=5,5*4=20,", "syntax"),
        ("(2+3)*4=20", "syntax"),
        ("2*3+4", "wrong_value"),
        ("((((((((((((((((((((((((((((((((((((2))))))))))))))))))))))))))))))))))+3)*4", "too_deep"),
    ],
)
def test_hostile_and_wrong_answers(answer, reason):
    v = verify_answer(answer, P)
    assert not v.correct and v.score == 0.0
    assert v.reason == reason


def test_verifier_never_raises_on_non_text():
    assert verify_answer(None, P).reason == "not_text"  # type: ignore[arg-type]


def test_rational_intermediates_are_exact():
    # 8 / (3 - 8/3) = 24 needs a fraction on the way.
    assert verify_answer("8/(3-8/3)", Problem((8, 3, 8, 3), 24)).correct


def test_steps_to_infix_and_chat_format():
    assert steps_to_infix("2+3=5,5*4=20") == "(2+3)*4"
    dom = Countdown((1, 9), (1, 99), template=lambda s: f"<user>{s}</user>")
    problem = {"numbers": [2, 3, 4], "target": 20}
    assert dom.prompt(problem).startswith("<user>Using the numbers 2, 3, 4")
    completion = dom.completion("2+3=5,5*4=20")
    assert completion == "<answer>(2+3)*4</answer>"
    assert dom.verify("I think <answer>(2+3)*4</answer>.", problem).correct


def test_reward_has_trl_shape():
    scores = reward(["(2+3)*4", "2*3*4", "oops"], numbers=[[2, 3, 4]] * 3, target=[20, 24, 20])
    assert scores == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("level", [3, 4, 5, 6])
def test_infix_rewrite_keeps_the_value_with_minimal_parentheses(level):
    rng = random.Random(100 + level)
    for _ in range(200):
        problem, steps = random_problem(rng, level, (1, 9), (1, 99))
        infix = steps_to_infix(steps)
        assert verify_answer(infix, problem).correct, (steps, infix)
        assert not (infix.startswith("(") and infix.endswith(")") and infix.count("(") == 1)
    assert steps_to_infix("2+3=5,5+4=9") == "2+3+4"
    assert steps_to_infix("8-2=6,9-6=3") == "9-(8-2)"


def test_answer_format_choice():
    problem = {"numbers": [2, 3, 4], "target": 20}
    assert Countdown((1, 9), (1, 99)).completion("2+3=5,5*4=20") == "(2+3)*4"
    assert Countdown((1, 9), (1, 99), answer_format="steps").completion("2+3=5,5*4=20") == "2+3=5,5*4=20"
    with pytest.raises(ValueError, match="answer_format"):
        Countdown((1, 9), (1, 99), answer_format="rpn")
    assert Countdown((1, 9), (1, 99)).verify("(2+3)*4", problem).correct


def test_exhausted_problem_space_is_an_error_not_a_hang():
    from selfloop.domains import ProblemSpaceExhausted, draw_problems

    dom = Countdown((1, 2), (1, 99))  # level 2 with digits 1-2: only a handful of problems
    with pytest.raises(ProblemSpaceExhausted, match="level 2: found only"):
        draw_problems(dom, random.Random(0), 2, 1000, set(), max_misses=500)
    few = draw_problems(dom, random.Random(0), 2, 1000, set(), max_misses=500, strict=False)
    assert 0 < len(few) < 1000
    taken: set[str] = set()
    got = draw_problems(dom, random.Random(0), 2, 3, taken)
    assert len({p["problem_id"] for p, _ in got}) == 3 and len(taken) == 3
