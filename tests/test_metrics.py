"""Rule metrics (dsmtheory/metrics.py, THEORY §4) on exact and deliberately broken samples.

Monte-Carlo tolerances (n samples, dy = 1, B bins):
- ρ: standard error 1/√(2n) for the truth (and `rho_se` estimates it); we allow 4.5 SE.
- violation rate: binomial SE √(p(1−p)/n).
- coarse_ratio of the truth: n·coarse_ratio² ≈ χ²_B (bin means of N(0, 1/n_b) residuals), so
  coarse_ratio < √(χ²_B 0.999-quantile / n) = √(29.6/n) for B = 10 with probability 0.999.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
import scipy.stats

from dsmtheory import metrics
from dsmtheory.families.linear_gaussian import LinearGaussian

N = 20_000
SIGMA_R = 0.1


@pytest.fixture(scope="module")
def truth():
    fam = LinearGaussian.create(mu_x=(0.5,), cov_x=[[1.0]], A=[[1.0]], b=[0.2], sigma_r=SIGMA_R)
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 1.0, size=(N, 1))
    y = x + 0.2 + SIGMA_R * rng.normal(size=(N, 1))
    return fam, x, y


def _rule(x):
    return x + 0.2


def _m(x, y, **kw):
    return metrics.rule_metrics_xy(x, y, _rule, SIGMA_R, **kw)


def test_truth_samples(truth):
    _, x, y = truth
    m = _m(x, y)
    se = 1 / math.sqrt(2 * N)
    assert abs(m["rho"] - 1) < 4.5 * se
    assert abs(m["rho_se"] - se) < 0.1 * se
    p = math.erfc(3 / math.sqrt(2))
    assert m["violation_rate_truth"] == pytest.approx(p, rel=1e-12)
    assert abs(m["violation_rate"] - p) < 4.5 * math.sqrt(p * (1 - p) / N)
    assert m["coarse_ratio"] < math.sqrt(29.6 / N)
    assert abs(m["rho_fine"] - 1) < 4.5 * se
    # the empirical-measure floor of the conditional W1 with N/10 points per bin is ~1e-2 σ_r
    assert m["cond_w1"] < 0.05


def test_broken_samples(truth):
    _, x, y = truth
    rng = np.random.default_rng(1)
    se = 1 / math.sqrt(2 * N)
    shuffled = _m(x, y[rng.permutation(N)])
    # ρ² ≈ (2 Var x + σ_r²)/σ_r² = 201 ⇒ ρ ≈ 14
    assert shuffled["rho"] > 10 and shuffled["violation_rate"] > 0.5
    doubled = _m(x, _rule(x) + 2 * (y - _rule(x)))
    assert abs(doubled["rho"] - 2) < 2 * 4.5 * se
    assert doubled["cond_w1"] > 0.3  # W1(N(0, 4σ²), N(0, σ²)) = σ·√(2/π) ≈ 0.80σ
    shift = 0.5 * SIGMA_R
    shifted = _m(x, y + shift)
    assert shifted["coarse_error"] == pytest.approx(shift, abs=4.5 * SIGMA_R / math.sqrt(N))
    assert shifted["coarse_ratio"] > 0.4
    assert abs(shifted["rho_fine"] - 1) < 4.5 * se  # the fine error is the truth's
    # an x-dependent trend error: coarse > 0, fine ≈ truth (within-bin trend spread is small)
    trend = _m(x, y + 0.5 * SIGMA_R * np.tanh(x))
    assert trend["coarse_ratio"] > 0.2
    assert abs(trend["rho_fine"] - 1) < 0.02


def test_rho_decomposes_into_fine_and_coarse(truth):
    _, x, y = truth
    m = _m(x, y + 0.3 * SIGMA_R * np.sin(2 * x))
    assert m["rho"] ** 2 == pytest.approx(m["rho_fine"] ** 2 + m["coarse_ratio"] ** 2, rel=1e-10)


def test_invariant_to_sample_permutation(truth):
    _, x, y = truth
    ref = np.random.default_rng(2).normal(0.5, 1.0, size=(3000, 1))
    train = np.concatenate([x[:500], y[:500]], axis=1)
    a = _m(x, y, x_reference=ref, train_set=train)
    perm = np.random.default_rng(3).permutation(N)
    b = _m(x[perm], y[perm], x_reference=ref[::-1], train_set=train[::-1])
    assert a.keys() == b.keys()
    for k in a:
        if a[k] is None or b[k] is None:  # metrics whose input is absent (e.g. gaussian_kl here)
            assert a[k] is None and b[k] is None, k
        else:
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k


def test_truth_violation_rate_closed_form():
    for dy in (1, 2, 3, 4, 7, 10, 50):
        assert metrics.truth_violation_rate(dy) == pytest.approx(scipy.stats.chi2.sf(9 * dy, dy), rel=1e-9)
    assert metrics.chi2_upper_tail(3, 2.5) == pytest.approx(scipy.stats.chi2.sf(2.5, 3), rel=1e-12)


def test_w1_to_gaussian_is_exact():
    rng = np.random.default_rng(4)
    for m_size, loc, scale in [(1, 0.3, 1.0), (7, -0.5, 2.0), (400, 0.2, 0.7)]:
        s = rng.normal(loc, 1.3 * scale, size=m_size)
        # reference: ∫ |F̂⁻¹(u) − scale Φ⁻¹(u)| du by adaptive quadrature on each quantile piece
        srt = np.sort(s)
        ref = 0.0
        for i in range(m_size):
            lo, hi = scipy.stats.norm.ppf([i / m_size, (i + 1) / m_size])
            cut = min(max(srt[i] / scale, lo), hi)  # the integrand's kink, split there
            for a_, b_ in ((lo, cut), (cut, hi)):
                if a_ < b_:
                    ref += scipy.integrate.quad(lambda v: abs(srt[i] - scale * v) * scipy.stats.norm.pdf(v),
                                                a_, b_, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
        assert metrics.w1_to_gaussian(s, scale) == pytest.approx(ref, rel=1e-8)
    # a shifted Gaussian sample: W1 → |shift| as m grows (here within the empirical floor)
    big = rng.normal(0.5, 1.0, size=200_000)
    assert metrics.w1_to_gaussian(big, 1.0) == pytest.approx(0.5, abs=0.01)


def test_w1_1d_and_marginal_w1():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=37), rng.normal(0.3, 2.0, size=101)
    assert metrics.w1_1d(a, b) == pytest.approx(scipy.stats.wasserstein_distance(a, b), rel=1e-12)
    assert metrics.w1_1d(a, a + 0.25) == pytest.approx(0.25, rel=1e-12)
    x2 = rng.normal(size=(4000, 2))
    same = metrics.marginal_w1(x2, rng.normal(size=(4000, 2)))
    shifted = metrics.marginal_w1(x2 + np.array([1.0, 0.0]), rng.normal(size=(4000, 2)))
    # sliced W1 of a shift δ is E|⟨θ, δ⟩| = |δ|·2/π for uniform directions in 2-D
    assert same < 0.06 and shifted == pytest.approx(2 / math.pi, abs=0.1)


def test_memorisation_rate():
    rng = np.random.default_rng(6)
    train = rng.normal(size=(300, 2))
    copies = train[rng.integers(0, 300, size=1000)] + 0.01 * SIGMA_R * rng.normal(size=(1000, 2))
    far = train[:100] + np.array([5.0, 5.0])
    assert metrics.memorisation_rate(copies, train, 0.5 * SIGMA_R) == 1.0
    assert metrics.memorisation_rate(far, train, 0.5 * SIGMA_R) == 0.0
    mixed = np.concatenate([copies[:250], far[:75]])
    m = metrics.rule_metrics_xy(mixed[:, :1], mixed[:, 1:], _rule, SIGMA_R, train_set=train, n_bins=5)
    assert m["memorisation_rate"] == pytest.approx(250 / 325)
    assert m["memorisation_threshold"] == 0.5 * SIGMA_R
    d = metrics.nearest_distance(train[:5] + 0.3, train)
    assert np.all(d <= math.sqrt(2 * 0.3**2) + 1e-12)


def test_gaussian_kl(truth):
    fam, x, y = truth
    g = {"A": fam.A, "b": fam.b, "mu_x": fam.mu_x, "cov_x": fam.cov_x}
    exact = metrics.rule_metrics_xy(x, y, fam.rule, SIGMA_R, gaussian_truth=g)
    # fitting 2 mean parameters + 1 variance: KL ≈ χ² / (2n) scale, ≪ 1e-3 at n = 2e4
    assert 0 <= exact["gaussian_kl"] < 1e-3 and 0 <= exact["gaussian_kl_reverse"] < 1e-3
    doubled = metrics.rule_metrics_xy(x, _rule(x) + 2 * (y - _rule(x)), fam.rule, SIGMA_R, gaussian_truth=g)
    # S = 4σ_r²: KL(true‖fit) = ½(1/4 − 1 + ln 4), KL(fit‖true) = ½(4 − 1 − ln 4)
    assert doubled["gaussian_kl"] == pytest.approx(0.5 * (0.25 - 1 + math.log(4)), abs=0.01)
    assert doubled["gaussian_kl_reverse"] == pytest.approx(0.5 * (3 - math.log(4)), abs=0.03)
    slope = metrics.rule_metrics_xy(x, y + 0.1 * (x - 0.5), fam.rule, SIGMA_R, gaussian_truth=g)
    # fitted B = A + 0.1, S = σ_r²: both KLs = ½·0.1²·Var(x)/σ_r² = 0.5
    assert slope["gaussian_kl"] == pytest.approx(0.5, rel=0.05)
    assert slope["gaussian_kl_reverse"] == pytest.approx(0.5, rel=0.05)


def test_rule_metrics_on_a_family():
    fam = LinearGaussian.create(mu_x=(0.0,), cov_x=[[1.0]], A=[[0.5]], b=[0.0], sigma_r=0.2)
    z = fam.sample(jax.random.PRNGKey(0), 5000)
    m = metrics.rule_metrics(z, fam, key=jax.random.PRNGKey(1), train_set=z[:200])
    for k, v in m.items():
        assert v is None or type(v) in (float, int), (k, type(v))
    assert abs(m["rho"] - 1) < 4.5 / math.sqrt(2 * 5000)
    assert m["marginal_w1"] < 0.1 and m["gaussian_kl"] < 5e-3
    assert m["rho_truth_mc"] is not None and m["memorisation_rate_truth"] is not None
    bare = metrics.rule_metrics(z, fam)
    assert bare["marginal_w1"] is None and bare["memorisation_rate"] is None and bare["rho"] == m["rho"]


def test_bad_inputs(truth):
    fam, x, y = truth
    with pytest.raises(ValueError, match="sigma_r"):
        metrics.rule_metrics_xy(x, y, _rule, 0.0)
    with pytest.raises(ValueError, match="sigma_r"):
        metrics.rule_metrics_xy(x, y, _rule, -0.1)
    with pytest.raises(ValueError, match="same number of samples"):
        metrics.rule_metrics_xy(x[:-1], y, _rule, SIGMA_R)
    y_nan = y.copy()
    y_nan[3] = np.nan
    with pytest.raises(ValueError, match="y contains non-finite"):
        metrics.rule_metrics_xy(x, y_nan, _rule, SIGMA_R)
    with pytest.raises(ValueError, match="rule"):
        metrics.rule_metrics_xy(x, np.concatenate([y, y], axis=1), _rule, SIGMA_R)
    with pytest.raises(ValueError, match="n_bins"):
        metrics.rule_metrics_xy(x[:15], y[:15], _rule, SIGMA_R, n_bins=10)
    with pytest.raises(ValueError, match="dx"):
        metrics.marginal_w1(x, np.zeros((10, 2)))
    with pytest.raises(ValueError, match="family.dim"):
        metrics.rule_metrics(np.zeros((100, 3)), fam)
    with pytest.raises(TypeError, match="family"):
        metrics.rule_metrics(np.zeros((100, 2)), "linear")
    with pytest.raises(ValueError, match="threshold"):
        metrics.memorisation_rate(x, x, 0.0)
