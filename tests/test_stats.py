"""THEORY §5 statistics on synthetic curves whose truth is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from dsmtheory.results import to_jsonable
from dsmtheory.stats import (
    constant_error_verdict,
    curve_bands,
    excess_over_oracle,
    loglog_slope,
    mean_ci,
    upper_half,
)

N_VALUES = 2.0 ** np.arange(8, 17)  # 2^8 .. 2^16: 9 values, upper half = 2^12 .. 2^16
SEEDS = 6


def flat_with_excess(rng, level=1.5, noise=0.02, seeds=SEEDS):
    return level + noise * rng.normal(size=(seeds, N_VALUES.size))


def oracle_curve(rng, seeds=SEEDS):
    return 1.02 + 0.02 * rng.normal(size=(seeds, N_VALUES.size))


# --------------------------------------------------------------------------- primitives


def test_mean_ci_is_the_student_t_interval():
    values = [1.2, 1.5, 1.1, 1.4, 1.3]
    ci = mean_ci(values, level=0.9)
    lo, hi = sps.t.interval(0.9, df=4, loc=np.mean(values), scale=sps.sem(values))
    assert ci.mean == pytest.approx(1.3) and ci.lo == pytest.approx(lo) and ci.hi == pytest.approx(hi)
    single = mean_ci([2.0])
    assert single.mean == 2.0 and math.isinf(single.lo) and single.to_dict()["lo"] is None


def test_curve_bands_per_n():
    rho = np.array([[1.0, 2.0, 3.0], [1.2, 2.2, 3.4], [0.8, 1.8, 2.6]])
    bands = curve_bands(rho, level=0.95)
    np.testing.assert_allclose(bands["mean"], [1.0, 2.0, 3.0])
    half = sps.t.ppf(0.975, 2) * np.std(rho, axis=0, ddof=1) / math.sqrt(3)
    np.testing.assert_allclose(bands["hi"] - bands["mean"], half)
    np.testing.assert_allclose(bands["mean"] - bands["lo"], half)


def test_upper_half_takes_the_largest_n_values_in_any_order():
    assert list(upper_half([256, 512, 1024, 2048, 4096, 8192])) == [3, 4, 5]
    assert list(upper_half([4096, 256, 1024, 512, 2048, 8192, 16384])) == [0, 4, 5, 6]  # the ⌈7/2⌉ = 4 largest
    assert list(upper_half([1, 2, 3])) == [1, 2]


def test_exact_power_law_slope_is_recovered_and_only_upper_half_is_fitted():
    rho = 2.0 * N_VALUES ** -0.3
    fit = loglog_slope(N_VALUES, rho)  # single seed, noise-free: OLS CI of zero width
    assert fit.slope == pytest.approx(-0.3, abs=1e-12)
    assert fit.hi - fit.lo == pytest.approx(0.0, abs=1e-9)
    assert fit.n_fit == tuple(int(v) for v in N_VALUES[4:])
    # a curve that falls steeply in the lower half and is flat in the upper half: slope 0
    bent = np.where(N_VALUES < 2**12, 5.0 * (N_VALUES / 2**12) ** -1.0, 1.0) * 1.7
    assert loglog_slope(N_VALUES, bent).slope == pytest.approx(0.0, abs=1e-12)
    assert loglog_slope(N_VALUES, bent, fit_upper_half=False).slope < -0.5


def test_single_seed_ols_ci_matches_scipy_linregress():
    rng = np.random.default_rng(0)
    rho = np.exp(0.1 - 0.2 * np.log(N_VALUES) + 0.05 * rng.normal(size=N_VALUES.size))
    fit = loglog_slope(N_VALUES, rho, level=0.95)
    x, y = np.log(N_VALUES[4:]), np.log(rho[4:])
    ref = sps.linregress(x, y)
    half = sps.t.ppf(0.975, x.size - 2) * ref.stderr
    assert fit.slope == pytest.approx(ref.slope)
    assert (fit.lo, fit.hi) == pytest.approx((ref.slope - half, ref.slope + half))
    assert fit.method == "OLS (single seed)"


def test_slope_and_excess_cis_have_nominal_coverage():
    """2000 synthetic studies with known truth (slope 0, excess 0.3): the 90% CIs cover ~90%."""
    rng = np.random.default_rng(1)
    reps, cover_slope, cover_excess = 2000, 0, 0
    for _ in range(reps):
        oracle = 1.0 + 0.05 * rng.normal(size=(4, N_VALUES.size))
        learned = oracle + 0.3 + 0.05 * rng.normal(size=(4, N_VALUES.size))
        s = loglog_slope(N_VALUES, learned, level=0.9)
        e = excess_over_oracle(N_VALUES, learned, oracle, level=0.9)
        cover_slope += s.lo <= 0.0 <= s.hi  # the log ρ of a flat curve has slope 0
        cover_excess += e.lo <= 0.3 <= e.hi
    assert 0.87 <= cover_slope / reps <= 0.93
    assert 0.87 <= cover_excess / reps <= 0.93


def test_excess_is_paired_when_shapes_match_and_welch_otherwise():
    rng = np.random.default_rng(2)
    shared = 0.3 * rng.normal(size=(5, N_VALUES.size))  # large per-seed noise shared by both curves
    oracle = 1.0 + shared
    learned = 1.1 + shared + 0.01 * rng.normal(size=(5, N_VALUES.size))
    paired = excess_over_oracle(N_VALUES, learned, oracle)
    assert paired.method.startswith("paired")
    assert paired.mean == pytest.approx(0.1, abs=0.01)
    assert paired.lo > 0.08 and paired.hi < 0.12  # pairing cancels the shared noise
    unpaired = excess_over_oracle(N_VALUES, learned, oracle[:4])
    assert unpaired.method.startswith("unpaired")
    assert unpaired.hi - unpaired.lo > 5 * (paired.hi - paired.lo)
    ma, mb = learned[:, 4:].mean(1), oracle[:4, 4:].mean(1)
    ref = sps.ttest_ind(ma, mb, equal_var=False).confidence_interval(0.95)
    assert (unpaired.lo, unpaired.hi) == pytest.approx((ref.low, ref.high))


# --------------------------------------------------------------------------- verdicts


def test_flat_curve_with_clear_excess_is_constant_error():
    rng = np.random.default_rng(3)
    v = constant_error_verdict(N_VALUES, flat_with_excess(rng), oracle_curve(rng))
    assert v.verdict == "constant error" and v.constant_error and v.reasons == ()
    assert v.slope.lo <= 0 <= v.slope.hi
    assert v.excess.mean == pytest.approx(0.48, abs=0.02) and v.excess.lo > 0.4
    json.dumps(to_jsonable(v.to_dict()))  # JSON-ready


def test_error_decaying_as_n_to_minus_half_is_decreasing():
    rng = np.random.default_rng(4)
    rho = 1.0 + 3.0 * N_VALUES**-0.5 * (1.0 + 0.05 * rng.normal(size=(SEEDS, N_VALUES.size)))
    oracle = 1.0 + 0.001 * rng.normal(size=(SEEDS, N_VALUES.size))
    v = constant_error_verdict(N_VALUES, rho, oracle)
    assert v.verdict == "no constant error"
    assert "error decreasing with n" in v.reasons
    assert v.slope.hi < 0
    # the excess itself decays at the rate put in
    assert v.excess_slope == pytest.approx(-0.5, abs=0.05)


def test_growing_error_is_reported_as_increasing():
    rng = np.random.default_rng(5)
    rho = 1.2 * N_VALUES**0.1 * np.exp(0.01 * rng.normal(size=(SEEDS, N_VALUES.size)))
    v = constant_error_verdict(N_VALUES, rho, oracle_curve(rng))
    assert not v.constant_error and v.reasons == ("error increasing with n",)


def test_feeding_the_oracle_as_learned_flips_the_verdict():
    """Issue 4 acceptance: the verdict is computed; the oracle's own results are not 'constant error'."""
    rng = np.random.default_rng(6)
    learned, oracle = flat_with_excess(rng), oracle_curve(rng)
    assert constant_error_verdict(N_VALUES, learned, oracle).constant_error
    same = constant_error_verdict(N_VALUES, oracle, oracle)
    assert same.verdict == "no constant error"
    assert same.reasons == ("no excess over oracle (CI contains 0)",)
    assert same.excess.mean == 0.0 and same.excess.lo == 0.0 == same.excess.hi
    # an independent replicate of the oracle (other seeds) as "learned": the verdict says
    # "constant error" only at the false-positive rate the 95% excess CI allows (~2.5%)
    wrong = sum(constant_error_verdict(N_VALUES, oracle_curve(rng), oracle_curve(rng)).constant_error
                for _ in range(400))
    assert wrong / 400 <= 0.06


def test_a_curve_below_the_oracle_is_named_as_such():
    rng = np.random.default_rng(7)
    v = constant_error_verdict(N_VALUES, oracle_curve(rng) - 0.5, oracle_curve(rng))
    assert v.reasons == ("error below oracle",)


def test_both_conditions_failing_are_both_reported():
    rng = np.random.default_rng(8)
    oracle = oracle_curve(rng)
    rho = oracle * (N_VALUES / 2**12) ** -0.2  # decreasing, crossing the oracle mid-way up
    v = constant_error_verdict(N_VALUES, rho, oracle)
    assert v.reasons[0] == "error decreasing with n" and len(v.reasons) == 2


@pytest.mark.parametrize(
    "args, exc, word",
    [
        ((N_VALUES, np.ones((3, 4)), np.ones((3, 9))), ValueError, "rho"),
        ((N_VALUES, np.ones((3, 9)), np.ones((3, 8))), ValueError, "rho_oracle"),
        ((N_VALUES, np.full((3, 9), np.nan), np.ones((3, 9))), ValueError, "finite"),
        ((N_VALUES, -np.ones((3, 9)), np.ones((3, 9))), ValueError, "> 0"),
        ((np.ones(9), np.ones((3, 9)), np.ones((3, 9))), ValueError, "distinct"),
        (([256], np.ones((3, 1)), np.ones((3, 1))), ValueError, "n_values"),
        ((N_VALUES, np.ones((2, 3, 9)), np.ones((3, 9))), ValueError, "shape"),
        ((N_VALUES, "abc", np.ones((3, 9))), TypeError, "rho"),
    ],
)
def test_bad_inputs_are_named(args, exc, word):
    with pytest.raises(exc, match=word):
        constant_error_verdict(*args)


def test_bad_level():
    with pytest.raises(ValueError, match="level"):
        mean_ci([1.0, 2.0], level=1.5)
    with pytest.raises(TypeError, match="level"):
        constant_error_verdict(N_VALUES, np.ones((2, 9)), np.ones((2, 9)), level="high")


@pytest.mark.parametrize("df", [1, 2, 3, 4.5, 7, 30, 250])
@pytest.mark.parametrize("p", [0.6, 0.9, 0.95, 0.975, 0.995])
def test_student_t_quantile_matches_scipy(p, df):
    """The library's own t quantile (no scipy at run time) against scipy's."""
    from scipy import stats as sps

    from dsmtheory.stats import student_t_quantile

    assert student_t_quantile(p, df) == pytest.approx(sps.t.ppf(p, df), rel=1e-8, abs=1e-10)
    assert student_t_quantile(1 - p, df) == pytest.approx(sps.t.ppf(1 - p, df), rel=1e-8, abs=1e-10)
