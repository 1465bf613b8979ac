"""Countdown: reach a target with given numbers, each used exactly once.

Pure functions over plain data. Problems are solvable by construction (a random
expression tree over the numbers whose value is the target); an exact solver over
positive-integer intermediates tells whether any instance is solvable and produces
the reference solutions. Answers are verified with exact rational arithmetic by a
small hand-written parser: never ``eval``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from itertools import permutations

OPS = "+-*/"
MAX_ANSWER_CHARS = 200


@dataclass(frozen=True)
class Problem:
    """One Countdown instance; ``level`` is how many numbers are given."""

    numbers: tuple[int, ...]
    target: int

    @property
    def level(self) -> int:
        return len(self.numbers)

    @property
    def problem_id(self) -> str:
        """Order-insensitive key: the same multiset and target is the same problem."""
        return "cd-" + "-".join(str(n) for n in sorted(self.numbers)) + f"-t{self.target}"


# ---------------------------------------------------------------- generation


def _apply(op: str, a: int, b: int) -> int | None:
    """Combine two positive integers; None when the result is not a positive integer."""
    if op == "+":
        return a + b
    if op == "*":
        return a * b
    if op == "-":
        return a - b if a > b else None
    if op == "/":
        return a // b if b and a % b == 0 and a // b > 0 else None
    raise ValueError(op)


def random_problem(
    rng: random.Random, level: int, num_range: tuple[int, int], target_range: tuple[int, int]
) -> tuple[Problem, str]:
    """A problem and one solution (step format), solvable by construction.

    Repeatedly combines two random numbers from the pool with a random operator, keeping
    every intermediate a positive integer, until one number is left; retries until that
    number lies in ``target_range``.
    """
    lo, hi = num_range
    for _ in range(10_000):
        numbers = [rng.randint(lo, hi) for _ in range(level)]
        pool = list(numbers)
        steps: list[str] = []
        while len(pool) > 1:
            i, j = rng.sample(range(len(pool)), 2)
            a, b = pool[i], pool[j]
            if a < b and rng.random() < 0.5:
                a, b = b, a
            ops = list(OPS)
            rng.shuffle(ops)
            for op in ops:
                c = _apply(op, a, b)
                if c is not None:
                    break
            else:  # pragma: no cover - '+' always applies
                raise AssertionError
            steps.append(f"{a}{op}{b}={c}")
            pool = [x for k, x in enumerate(pool) if k not in (i, j)] + [c]
        if target_range[0] <= pool[0] <= target_range[1]:
            return Problem(tuple(numbers), pool[0]), ",".join(steps)
    raise ValueError(f"no problem with target in {target_range} for level {level}")


# ---------------------------------------------------------------- exact solver


@lru_cache(maxsize=200_000)
def _reachable(pool: tuple[int, ...]) -> dict[int, str]:
    """Every value reachable using *all* numbers in ``pool`` -> one step list producing it."""
    if len(pool) == 1:
        return {pool[0]: ""}
    out: dict[int, str] = {}
    n = len(pool)
    for i in range(n):
        for j in range(i + 1, n):
            rest = pool[:i] + pool[i + 1 : j] + pool[j + 1 :]
            a, b = pool[i], pool[j]
            for x, y in ((a, b), (b, a)):
                for op in OPS:
                    if op in "+*" and x is b and a != b:
                        continue  # commutative: one order suffices
                    c = _apply(op, x, y)
                    if c is None:
                        continue
                    step = f"{x}{op}{y}={c}"
                    for value, tail in _reachable(tuple(sorted((*rest, c)))).items():
                        if value not in out:
                            out[value] = step + ("," + tail if tail else "")
    return out


def solvable(problem: Problem) -> bool:
    """Whether any solution with positive-integer intermediates exists (memoized search)."""
    return problem.target in _reachable(tuple(sorted(problem.numbers)))


def _trees(seq: tuple[int, ...]) -> Iterator[tuple[int, list[str]]]:
    """Every expression over ``seq`` in this order: (value, steps). Left-fold shapes and
    the operators in OPS order come first."""
    if len(seq) == 1:
        yield seq[0], []
        return
    for k in range(len(seq) - 1, 0, -1):
        for lv, ls in _trees(seq[:k]):
            for rv, rs in _trees(seq[k:]):
                for op in OPS:
                    c = _apply(op, lv, rv)
                    if c is not None:
                        yield c, [*ls, *rs, f"{lv}{op}{rv}={c}"]


def solve(problem: Problem) -> str | None:
    """The canonical solution in step format, or None if the problem has none.

    Canonical = the first found trying the numbers in the order given (then other orders),
    left-fold shapes first, operators in ``+-*/`` order. One consistent style makes the
    reference data far easier for a small model to learn than an arbitrary solution."""
    if not solvable(problem):
        return None
    seen: set[tuple[int, ...]] = set()
    for perm in permutations(problem.numbers):
        if perm in seen:
            continue
        seen.add(perm)
        for value, steps in _trees(perm):
            if value == problem.target:
                return ",".join(steps)
    raise AssertionError("solvable but no expression found")  # pragma: no cover


# ---------------------------------------------------------------- rendering


def render_prompt(problem: Problem) -> str:
    """Compact prompt for the char-level model, e.g. ``3 5 7>22:``."""
    return " ".join(str(n) for n in problem.numbers) + f">{problem.target}:"


def render_chat_prompt(problem: Problem) -> str:
    """Instruction for a chat model; its answer is found by :func:`extract_answer`."""
    nums = ", ".join(str(n) for n in problem.numbers)
    return (
        f"Using the numbers {nums}, each exactly once, and the operations + - * / "
        f"with parentheses, write an expression equal to {problem.target}. "
        "Reply with the expression alone inside <answer></answer>."
    )


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)


def extract_answer(text: str) -> str:
    """The answer part of a model response: inside <answer> tags if present, else all."""
    m = _ANSWER_TAG.search(text)
    return (m.group(1) if m else text).strip()


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class Verdict:
    """Outcome of checking one answer: ``score`` 1.0 or 0.0 and a reason code."""

    score: float
    reason: str
    value: str | None = None  # what the answer evaluated to, when it parsed

    @property
    def correct(self) -> bool:
        return self.score == 1.0

    @property
    def well_formed(self) -> bool:
        """A legal attempt: it parsed and used exactly the given numbers, whatever its value
        (diversity measured over these is not inflated by malformed output)."""
        return self.reason in ("correct", "wrong_value")


_ALLOWED = frozenset("0123456789+-*/()=, ")
_TOKEN = re.compile(r"[0-9]+|[+\-*/()]")


class _Reject(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Expr:
    """Recursive-descent parser for ``expr := term (('+'|'-') term)*``,
    ``term := atom (('*'|'/') atom)*``, ``atom := number | '(' expr ')'``.
    Binary operators only: no unary minus, no ``**`` or ``//``."""

    def __init__(self, text: str) -> None:
        self.toks = _TOKEN.findall(text)
        if "".join(self.toks) != text.replace(" ", ""):
            raise _Reject("bad_token")
        self.i = 0
        self.used: list[int] = []

    def parse(self) -> Fraction:
        if not self.toks:
            raise _Reject("empty")
        value = self._expr(depth=0)
        if self.i != len(self.toks):
            raise _Reject("syntax")
        return value

    def _peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _expr(self, depth: int) -> Fraction:
        value = self._term(depth)
        while self._peek() in ("+", "-"):
            op = self.toks[self.i]
            self.i += 1
            rhs = self._term(depth)
            value = value + rhs if op == "+" else value - rhs
        return value

    def _term(self, depth: int) -> Fraction:
        value = self._atom(depth)
        while self._peek() in ("*", "/"):
            op = self.toks[self.i]
            self.i += 1
            rhs = self._atom(depth)
            if op == "/" and rhs == 0:
                raise _Reject("division_by_zero")
            value = value * rhs if op == "*" else value / rhs
        return value

    def _atom(self, depth: int) -> Fraction:
        tok = self._peek()
        if tok is None:
            raise _Reject("syntax")
        self.i += 1
        if tok == "(":
            if depth > 32:
                raise _Reject("too_deep")
            value = self._expr(depth + 1)
            if self._peek() != ")":
                raise _Reject("syntax")
            self.i += 1
            return value
        if tok.isdigit():
            self.used.append(int(tok))
            return Fraction(int(tok))
        raise _Reject("syntax")


_STEP = re.compile(r"^([0-9]+)([+\-*/])([0-9]+)=([0-9]+)$")


def _check_steps(text: str, numbers: tuple[int, ...]) -> Fraction:
    """Step format ``a op b=c,c op d=e,...``: each operand must be an available number
    (a given one or an earlier result), each result must be right, all numbers consumed."""
    pool = list(numbers)
    value: Fraction | None = None
    for part in text.replace(" ", "").split(","):
        m = _STEP.match(part)
        if not m:
            raise _Reject("syntax")
        a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        for x in (a, b):
            if x not in pool:
                raise _Reject("number_not_available")
            pool.remove(x)
        if op == "/" and b == 0:
            raise _Reject("division_by_zero")
        fa, fb = Fraction(a), Fraction(b)
        exact = {"+": fa + fb, "-": fa - fb, "*": fa * fb, "/": fa / fb if b else None}[op]
        if exact != c:
            raise _Reject("wrong_arithmetic")
        pool.append(c)
        value = exact
    if len(pool) != 1 or value is None:
        raise _Reject("numbers_unused")
    return value


def verify_answer(answer: str, problem: Problem, max_chars: int = MAX_ANSWER_CHARS) -> Verdict:
    """Check ``answer`` (infix expression or step format) against ``problem``. Never raises."""
    if not isinstance(answer, str):
        return Verdict(0.0, "not_text")
    if len(answer) > max_chars:
        return Verdict(0.0, "too_long")
    text = answer.strip()
    if not text:
        return Verdict(0.0, "empty")
    if any(ch not in _ALLOWED for ch in text):
        return Verdict(0.0, "bad_char")
    try:
        if "=" in text:
            value = _check_steps(text, problem.numbers)
        else:
            parser = _Expr(text)
            value = parser.parse()
            if sorted(parser.used) != sorted(problem.numbers):
                return Verdict(0.0, "wrong_numbers", str(value))
    except _Reject as r:
        return Verdict(0.0, r.reason)
    if value != problem.target:
        return Verdict(0.0, "wrong_value", str(value))
    return Verdict(1.0, "correct", str(value))


_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def steps_to_infix(steps: str) -> str:
    """Rewrite a step-format solution as one infix expression with only the parentheses
    it needs, e.g. ``9-3=6,6*4=24`` -> ``(9-3)*4``."""
    exprs: dict[int, list[tuple[str, int]]] = {}  # value -> [(expression, precedence)]
    last = ("", 3)
    for part in steps.split(","):
        m = _STEP.match(part.strip())
        if not m:
            raise ValueError(f"not a step: {part!r}")
        a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        ea, pa = exprs[a].pop() if exprs.get(a) else (str(a), 3)
        eb, pb = exprs[b].pop() if exprs.get(b) else (str(b), 3)
        if pa < _PREC[op]:
            ea = f"({ea})"
        if pb < _PREC[op] or (pb == _PREC[op] and op in "-/"):
            eb = f"({eb})"
        last = (f"{ea}{op}{eb}", _PREC[op])
        exprs.setdefault(c, []).append(last)
    return last[0]


def reward(completions: list[str], numbers: list[list[int]], target: list[int], **_: object) -> list[float]:
    """The verifier in TRL's reward-function shape (usable for online RL unchanged)."""
    return [
        verify_answer(extract_answer(c), Problem(tuple(ns), int(t))).score
        for c, ns, t in zip(completions, numbers, target, strict=True)
    ]


class Countdown:
    """The Countdown domain bound to its configured ranges."""

    name = "countdown"
    alphabet = "0123456789+-*/()=, >:"

    def __init__(
        self,
        num_range: tuple[int, int],
        target_range: tuple[int, int],
        template: Callable[[str], str] | None = None,
        answer_format: str = "infix",
    ) -> None:
        if answer_format not in ("infix", "steps"):
            raise ValueError(f"answer_format must be 'infix' or 'steps', not {answer_format!r}")
        self.answer_format = answer_format
        self.num_range = num_range
        self.target_range = target_range
        self.template = template  # a chat template: instruction prompts, <answer> replies

    def make_problem(self, rng: random.Random, level: int) -> tuple[dict, str]:
        problem, solution = random_problem(rng, level, self.num_range, self.target_range)
        return problem_to_dict(problem), solution

    def prompt(self, problem: dict) -> str:
        p = problem_from_dict(problem)
        return self.template(render_chat_prompt(p)) if self.template else render_prompt(p)

    def completion(self, solution: str) -> str:
        """A reference solution as the model should write it."""
        if self.template:
            return f"<answer>{steps_to_infix(solution)}</answer>"
        return steps_to_infix(solution) if self.answer_format == "infix" else solution

    def verify(self, response: str, problem: dict, max_chars: int = MAX_ANSWER_CHARS) -> Verdict:
        return verify_answer(extract_answer(response), problem_from_dict(problem), max_chars)

    def solve(self, problem: dict) -> str | None:
        return solve(problem_from_dict(problem))


def problem_to_dict(p: Problem) -> dict:
    return {"numbers": list(p.numbers), "target": p.target, "level": p.level, "problem_id": p.problem_id}


def problem_from_dict(d: dict) -> Problem:
    return Problem(tuple(int(n) for n in d["numbers"]), int(d["target"]))
