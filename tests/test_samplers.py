"""Samplers (dsmtheory/samplers.py): exactness where it is exact, Monte-Carlo agreement where
it is not, compilation re-use, validation.

Monte-Carlo tolerances are stated from the sample count n: a mean has standard error
√(C_ii/n), a covariance entry √((C_ii C_jj + C_ij²)/n), and ρ ≈ 1/√(2n) (dy = 1).
Runs in float32 (the default); nothing here depends on x64.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsmtheory import samplers
from dsmtheory.families.linear_gaussian import LinearGaussian
from dsmtheory.schedules import get_schedule
from dsmtheory.scores import LearnedScore

SCHEDULE_NAMES = ["vp_linear", "vp_cosine", "ve", "edm"]
# two samplers, each with a step count at which its discretisation error is well under
# the tolerances below (measured: |ρ − 1| ≤ 1.5% at σ_r = 0.2, covariance within 1%)
SAMPLER_STEPS = {"euler_maruyama": 400, "pf_heun": 80}
N = 10_000
SIGMA_R = 0.2


def _family():
    # non-zero mean so that the α·m terms of VP schedules and Tweedie's division by α are exercised
    return LinearGaussian.create(mu_x=(0.4,), cov_x=[[1.0]], A=[[0.8]], b=[0.3], sigma_r=SIGMA_R)


def _rho(z, fam):
    r = np.asarray(z[:, 1]) - np.asarray(fam.rule(z[:, :1]))[:, 0]
    return float(np.sqrt(np.mean(r**2)) / fam.sigma_r)


def _exact_prior(fam, schedule, key, n):
    """z ~ p_{t_max} exactly (isolates the integrator's error from the prior mismatch
    of schedule.prior_sample, which assumes mean 0 and unit variance)."""
    mean, cov = fam.noised_moments(jnp.asarray(schedule.t_max), schedule)
    return mean + jax.random.normal(key, (n, fam.dim)) @ jnp.linalg.cholesky(cov).T


def _linear_eps_net(params, z, t):
    _linear_eps_net.calls += 1  # Python side effect: counts traces, not executions
    return z * params["w"] + params["b"]


_linear_eps_net.calls = 0


@pytest.fixture(scope="module")
def oracle_runs():
    """Samples of the exact score for every schedule × sampler, without and with the final
    Tweedie step (computed once; the denoised ones via `tweedie_denoise`, which
    `test_denoise_flag_is_the_tweedie_step` shows is what denoise=True does)."""
    fam = _family()
    out = {}
    for i, name in enumerate(SCHEDULE_NAMES):
        sch = get_schedule(name)
        z0 = _exact_prior(fam, sch, jax.random.PRNGKey(100 + i), N)
        for method, steps in SAMPLER_STEPS.items():
            z = samplers.sample(fam.score_fn(sch), sch, jax.random.PRNGKey(i), None, None, method=method,
                                n_steps=steps, denoise=False, z_init=z0)
            out[(name, method, False)] = np.asarray(z, dtype=np.float64)
            out[(name, method, True)] = np.asarray(samplers.tweedie_denoise(fam.score_fn(sch), sch, z), np.float64)
    return fam, out


def test_denoise_flag_is_the_tweedie_step():
    sch = get_schedule("vp_linear")
    params = {"w": jnp.asarray(0.4), "b": jnp.asarray([0.1, -0.2])}
    score = LearnedScore(_linear_eps_net, params, sch, "eps")
    kw = dict(method="ddim", n_steps=9)
    raw = samplers.sample(score, sch, jax.random.PRNGKey(8), 32, 2, denoise=False, **kw)
    den = samplers.sample(score, sch, jax.random.PRNGKey(8), 32, 2, denoise=True, **kw)
    # by hand: ε-prediction ε̂ = w z + b, x̂0 = (z − σ ε̂)/α at t_min
    a, s = float(sch.alpha(sch.t_min)), float(sch.sigma(sch.t_min))
    raw_np = np.asarray(raw, np.float64)
    by_hand = (raw_np - s * (0.4 * raw_np + np.array([0.1, -0.2]))) / a
    np.testing.assert_allclose(np.asarray(den), by_hand, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(samplers.tweedie_denoise(score, sch, raw)), by_hand, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("method", list(SAMPLER_STEPS))
def test_oracle_reproduces_mean_and_covariance(oracle_runs, name, method):
    fam, runs = oracle_runs
    z = runs[(name, method, True)]
    m, c = np.asarray(fam.joint_mean()), np.asarray(fam.joint_cov())
    se_mean = np.sqrt(np.diag(c) / N)
    se_cov = np.sqrt((np.outer(np.diag(c), np.diag(c)) + c**2) / N)
    # 4.5 standard errors: a false alarm has probability < 1e-4 per entry
    np.testing.assert_array_less(np.abs(z.mean(0) - m), 4.5 * se_mean)
    np.testing.assert_array_less(np.abs(np.cov(z.T) - c), 4.5 * se_cov)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("method", list(SAMPLER_STEPS))
@pytest.mark.parametrize("denoise", [True, False])
def test_oracle_rho_within_3_percent_when_noise_floor_small(oracle_runs, name, method, denoise):
    fam, runs = oracle_runs
    sch = get_schedule(name)
    assert sch.noise_floor() < fam.sigma_r / 10  # the acceptance precondition holds here
    rho = _rho(runs[(name, method, denoise)], fam)
    # MC standard error of ρ is 1/√(2N) = 0.7%; the 3% band is > 4 SE wide
    assert abs(rho - 1.0) < 0.03, (name, method, denoise, rho)


def test_rho_with_default_prior_sample():
    """The realistic pipeline (start from schedule.prior_sample) for the schedule with the
    largest prior mismatch (VE: N(0, 1 + σ_max²) instead of N(m, C + σ_max² I))."""
    fam = _family()
    sch = get_schedule("ve")
    for method, steps in SAMPLER_STEPS.items():
        z = samplers.sample(fam.score_fn(sch), sch, jax.random.PRNGKey(5), N, 2, method=method, n_steps=steps,
                            denoise=False)  # (same compiled program as the fixture's)
        assert abs(_rho(z, fam) - 1.0) < 0.03


def test_noise_floor_visible_without_denoising():
    """With t_min large, z_{t_min} carries noise σ/α ≈ σ_r: ρ² ≈ 1 + (1 + a²)(σ/α)²/σ_r²
    (noise on both x and y, slope a), while the Tweedie step removes most of it."""
    fam = _family()
    sch = get_schedule("edm").with_t_min(SIGMA_R)  # EDM: noise floor σ/α = t_min exactly
    z = samplers.sample(fam.score_fn(sch), sch, jax.random.PRNGKey(3), N, 2, method="pf_heun",
                        n_steps=SAMPLER_STEPS["pf_heun"], denoise=False)
    expected = math.sqrt(1 + (1 + 0.8**2) * sch.noise_floor() ** 2 / SIGMA_R**2)
    assert abs(_rho(z, fam) - expected) < 4 * expected / math.sqrt(2 * N) + 0.01


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_ddpm_and_ddim_exact_for_a_point_mass(name):
    """For data = a point mass at x0 the Tweedie estimate is exact, so DDPM's transitions are
    the exact forward posteriors (final z ~ N(α x0, σ² I) for ANY step count) and DDIM(η=0)
    keeps ε fixed: z_{t_min} = α_min x0 + σ_min (z_T − α_T x0)/σ_T sample by sample."""
    sch = get_schedule(name)
    x0 = jnp.asarray([0.7, -1.3])

    def point_mass_score(z, t):  # a plain callable (not a pytree)
        tt = jnp.asarray(t)[..., None]
        return -(z - sch.alpha(tt) * x0) / sch.sigma_sq(tt)

    t_max, t_min = jnp.asarray(sch.t_max), jnp.asarray(sch.t_min)
    n = 20_000
    z_T = sch.alpha(t_max) * x0 + sch.sigma(t_max) * jax.random.normal(jax.random.PRNGKey(0), (n, 2))
    z = samplers.ddim(point_mass_score, sch, jax.random.PRNGKey(1), z_init=z_T, n_steps=7, denoise=False)
    expected = sch.alpha(t_min) * x0 + sch.sigma(t_min) * (z_T - sch.alpha(t_max) * x0) / sch.sigma(t_max)
    np.testing.assert_allclose(np.asarray(z), np.asarray(expected), rtol=1e-4, atol=1e-4 * float(sch.sigma(t_min)))
    z = samplers.ddpm(point_mass_score, sch, jax.random.PRNGKey(2), z_init=z_T, n_steps=7, denoise=False)
    eps = (np.asarray(z) - float(sch.alpha(t_min)) * np.asarray(x0)) / float(sch.sigma(t_min))
    # standardised noise is N(0, I): mean SE 1/√n, std SE 1/√(2n)
    np.testing.assert_array_less(np.abs(eps.mean(0)), 4.5 / math.sqrt(n))
    np.testing.assert_array_less(np.abs(eps.std(0) - 1.0), 4.5 / math.sqrt(2 * n))
    den = samplers.tweedie_denoise(point_mass_score, sch, z)
    np.testing.assert_allclose(np.asarray(den), np.broadcast_to(np.asarray(x0), den.shape), atol=1e-3)


def test_ddim_eta_one_equals_ddpm():
    sch = get_schedule("vp_linear")
    score = LearnedScore(_linear_eps_net, {"w": jnp.asarray(0.4), "b": jnp.asarray([0.1, -0.2])}, sch, "eps")
    kw = dict(n=32, dim=2, n_steps=9)
    a = samplers.sample(score, sch, jax.random.PRNGKey(4), method="ddim", eta=1.0, **kw)
    b = samplers.sample(score, sch, jax.random.PRNGKey(4), method="ddpm", **kw)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


def test_plain_callable_and_pytree_score_agree():
    fam, sch = _family(), get_schedule("edm")
    pytree = fam.score_fn(sch)
    plain = lambda z, t: fam.score(z, t, sch)  # noqa: E731
    for method in ("euler_maruyama",):  # (plain callables of every method: the point-mass test)
        a = samplers.sample(pytree, sch, jax.random.PRNGKey(6), 64, 2, method=method, n_steps=15)
        b = samplers.sample(plain, sch, jax.random.PRNGKey(6), 64, 2, method=method, n_steps=15)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
        assert a.shape == (64, 2)


def test_new_params_and_t_min_do_not_recompile():
    sch = get_schedule("vp_linear")
    key = jax.random.PRNGKey(0)
    s1 = LearnedScore(_linear_eps_net, {"w": jnp.asarray(0.5), "b": jnp.zeros(2)}, sch, "eps")
    samplers.sample(s1, sch, key, 32, 2, method="ddim", n_steps=9)
    traces, calls = samplers.TRACE_COUNTS["ddim"], _linear_eps_net.calls
    sch2 = sch.with_t_min(3e-3)
    s2 = LearnedScore(_linear_eps_net, {"w": jnp.asarray(0.9), "b": jnp.ones(2)}, sch2, "eps")
    out = samplers.sample(s2, sch2, key, 32, 2, method="ddim", n_steps=9)
    assert samplers.TRACE_COUNTS["ddim"] == traces
    assert _linear_eps_net.calls == calls
    assert np.all(np.isfinite(np.asarray(out)))
    samplers.sample(s2, sch2, key, 32, 2, method="ddim", n_steps=10)  # a new step count does retrace
    assert samplers.TRACE_COUNTS["ddim"] == traces + 1


def test_sample_ensemble_matches_member_runs():
    sch = get_schedule("vp_linear")
    ws = jnp.asarray([0.3, 0.6, 0.9])
    stack = LearnedScore(_linear_eps_net, {"w": ws, "b": jnp.zeros((3, 2))}, sch, "eps")
    kw = dict(method="ddim", n_steps=9)
    out = samplers.sample_ensemble(stack, sch, jax.random.PRNGKey(1), 32, 2, same_noise=True, **kw)
    assert out.shape == (3, 32, 2)
    for i in range(3):
        single = LearnedScore(_linear_eps_net, {"w": ws[i], "b": jnp.zeros(2)}, sch, "eps")
        ref = samplers.sample(single, sch, jax.random.PRNGKey(1), 32, 2, **kw)
        np.testing.assert_allclose(np.asarray(out[i]), np.asarray(ref), rtol=1e-5, atol=1e-5)
    same_w = LearnedScore(_linear_eps_net, {"w": jnp.full(3, 0.5), "b": jnp.zeros((3, 2))}, sch, "eps")
    indep = samplers.sample_ensemble(same_w, sch, jax.random.PRNGKey(1), 32, 2, **kw)
    assert not np.allclose(np.asarray(indep[0]), np.asarray(indep[1]))  # independent prior draws
    bad = LearnedScore(_linear_eps_net, {"w": ws, "b": jnp.zeros((4, 2))}, sch, "eps")
    with pytest.raises(ValueError, match="member count"):
        samplers.sample_ensemble(bad, sch, jax.random.PRNGKey(1), 32, 2, **kw)


def test_validation_errors():
    fam, sch = _family(), get_schedule("vp_linear")
    s, key = fam.score_fn(sch), jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="method"):
        samplers.sample(s, sch, key, 10, 2, method="rk4")
    with pytest.raises(ValueError, match="n "):
        samplers.sample(s, sch, key, 0, 2)
    with pytest.raises(TypeError, match="n_steps"):
        samplers.sample(s, sch, key, 10, 2, n_steps=10.5)
    with pytest.raises(ValueError, match="n_steps"):
        samplers.sample(s, sch, key, 10, 2, n_steps=0)
    with pytest.raises(ValueError, match="dim"):
        samplers.sample(s, sch, key, 10, 0)
    with pytest.raises(ValueError, match="dim=3"):
        samplers.sample(s, sch, key, 10, 3, z_init=jnp.zeros((10, 2)))
    with pytest.raises(ValueError, match="eta"):
        samplers.sample(s, sch, key, 10, 2, method="ddim", eta=1.5)
    with pytest.raises(TypeError, match="score_fn"):
        samplers.sample(3.0, sch, key, 10, 2)
    with pytest.raises(TypeError, match="schedule"):
        samplers.sample(s, "vp_linear", key, 10, 2)


def test_non_finite_output_raises_naming_sampler_steps_schedule():
    sch = get_schedule("vp_cosine")
    blow_up = lambda z, t: z / (jnp.asarray(t)[..., None] - sch.t_min)  # noqa: E731 - inf at t_min
    with pytest.raises(samplers.NonFiniteSamplesError, match=r"'pf_heun'.*n_steps=5.*vp_cosine"):
        samplers.sample(blow_up, sch, jax.random.PRNGKey(0), 8, 2, method="pf_heun", n_steps=5)
    out = samplers.sample(blow_up, sch, jax.random.PRNGKey(0), 8, 2, method="pf_heun", n_steps=5,
                          check_finite=False)
    assert not np.all(np.isfinite(np.asarray(out)))
