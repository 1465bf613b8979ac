"""Diversity metrics on distributions whose answer is known."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from selfloop import diversity as dv


def test_identical_samples_have_vendi_one():
    x = np.tile(np.array([[0.3, 1.0, -2.0]]), (50, 1))
    assert dv.vendi(x) == pytest.approx(1.0)
    assert dv.vendi(dv.ngram_features(["(9-3)*4"] * 40)) == pytest.approx(1.0)


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_orthogonal_samples_have_vendi_n(n):
    assert dv.vendi(np.eye(n) * 3.0) == pytest.approx(n)
    assert dv.vendi(sp.identity(n, format="csr")) == pytest.approx(n)


def test_vendi_orders_and_scale():
    x = np.eye(4)
    assert dv.vendi(x, q=2) == pytest.approx(4) and dv.vendi(x, q=math.inf) == pytest.approx(4)
    # two equal clusters of identical rows: effectively two distinct samples
    two = np.vstack([np.tile([1.0, 0.0], (30, 1)), np.tile([0.0, 1.0], (30, 1))])
    assert dv.vendi(two) == pytest.approx(2.0)
    assert dv.vendi(np.zeros((0, 3))) == 0.0


@pytest.mark.parametrize("n,d", [(200, 16), (16, 200)])  # through d x d, and through n x n
def test_vendi_matches_the_n_by_n_definition_on_random_data(n, d):
    """It equals exp(entropy of eig(K/n)) with K = X X^T, whichever side it decomposes."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    lam = np.clip(np.linalg.eigvalsh(xn @ xn.T / len(x)), 0, None)
    lam = lam[lam > 1e-12]
    expected = math.exp(-(lam * np.log(lam)).sum())
    assert dv.vendi(x) == pytest.approx(expected, rel=1e-9)
    assert dv.vendi(sp.csr_matrix(x)) == pytest.approx(expected, rel=1e-9)


def test_vendi_matches_the_vendi_score_package():
    vendi_score = pytest.importorskip("vendi_score.vendi")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(150, 10))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert dv.vendi(x) == pytest.approx(vendi_score.score_dual(xn), rel=1e-6)


def test_distinct_n_and_templates():
    assert dv.distinct_n(["abab"], 2) == pytest.approx(2 / 3)
    assert dv.distinct_n(["abcd"], 2) == 1.0 and dv.distinct_n([], 2) == 0.0
    assert dv.template("(19-3)*4") == "(#-#)*#"
    assert dv.template_entropy(["1+2", "3+4", "5*6", "(7-8)*9"]) == pytest.approx(1.5)
    assert dv.template_entropy(["1+2"] * 9) == 0.0


def test_template_kl():
    same = ["1+2", "3*4", "5-6"]
    assert dv.template_kl(same, same) == pytest.approx(0.0)
    narrow = ["1+2"] * 30
    assert dv.template_kl(narrow, same) > dv.template_kl(same, same) + 0.5
    assert dv.template_kl([], same) == 0.0


def test_reference_kl_noise():
    """The reference data's own KL at a size: known at n=1 with two equally common shapes
    (every draw is one shape: KL((1.5, 0.5)/2 || (1/2, 1/2)) = 0.75 log2 1.5 - 0.25 bits), zero
    for a reference of one shape, and shrinking as the size grows."""
    two = ["1+2"] * 10 + ["(1+2)*3"] * 10
    want = 0.75 * math.log2(1.5) - 0.25
    assert dv.reference_kl_noise(two, 1, 0.95, "s") == pytest.approx(want)
    assert dv.reference_kl_noise(["1+2", "3+4"], 50, 0.95, "s") == pytest.approx(0.0)
    assert dv.reference_kl_noise(two, 1, 0.0, "s") == dv.reference_kl_noise([], 5, 0.95, "s") == 0.0
    many = [f"{i}" + "+1" * (i % 7) for i in range(30)]
    at = [dv.reference_kl_noise(many, n, 0.95, "s") for n in (10, 100, 1000)]
    assert at[0] > at[1] > at[2] > 0
    assert dv.reference_kl_noise(many, 10, 0.95, "s") == dv.reference_kl_noise(many, 10, 0.95, "s")
    assert dv.reference_kl_noise(many, 10, 0.5, "s") < at[0]


def test_mmd():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    shifted = rng.normal(loc=2.0, size=(300, 4))
    assert dv.mmd(a, a) == pytest.approx(0.0, abs=1e-12)
    assert dv.mmd(a, b) < 0.02 < dv.mmd(a, shifted)


def test_an_embedding_does_not_depend_on_what_shared_its_batch():
    """The bundled all-MiniLM-L6-v2, for real: a text embedded beside longer texts (padded in
    one batch, before the fix about 1e-7 off) equals the text embedded alone, so the measure
    step's embedding numbers do not move with the process's cache (a resume, a one-stage
    replay)."""
    short, longer = "1+2+3", [f"({i}+{i + 1})*({i + 2}-{i + 3})/9" for i in range(20)]
    dv._VECTORS.clear()
    beside = dv.embed([short, *longer])
    dv._VECTORS.clear()
    alone = dv.embed([short])
    assert beside.shape == (21, 384)
    assert np.array_equal(beside[0], alone[0])
    assert np.array_equal(dv.embed(longer), beside[1:])  # cached: the same vectors again
