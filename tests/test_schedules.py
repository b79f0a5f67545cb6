"""Schedules (THEORY §1): closed forms, derived f and g², grids, validation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsmtheory.schedules import EDM, SCHEDULES, VE, VPCosine, VPLinear, get_schedule, schedule_from_config

ALL = [VPLinear(), VPCosine(), VE(), EDM()]
IDS = [s.name for s in ALL]


def _times(s, n=7):
    return np.linspace(s.t_min, s.t_max, n)[1:-1]


@pytest.mark.parametrize("s", ALL, ids=IDS)
def test_drift_and_diffusion_match_finite_differences(s):
    """f = dlogα/dt and g² = dσ²/dt − 2fσ², checked against central differences
    of the closed forms (independent of the autodiff used in the library)."""
    t = _times(s)
    h = 1e-4 * (s.t_max - s.t_min)
    la = lambda u: np.asarray(s.log_alpha(jnp.asarray(u, jnp.float32)), np.float64)
    s2 = lambda u: np.asarray(s.sigma_sq(jnp.asarray(u, jnp.float32)), np.float64)
    f_fd = (la(t + h) - la(t - h)) / (2 * h)
    g2_fd = (s2(t + h) - s2(t - h)) / (2 * h) - 2 * f_fd * s2(t)
    np.testing.assert_allclose(np.asarray(s.drift_coef(jnp.asarray(t, jnp.float32))), f_fd, rtol=2e-2, atol=1e-3)
    np.testing.assert_allclose(np.asarray(s.diffusion_sq(jnp.asarray(t, jnp.float32))), g2_fd, rtol=2e-2, atol=1e-3)


def test_vp_linear_closed_forms():
    s = VPLinear(beta0=0.1, beta1=20.0)
    t = jnp.asarray([0.01, 0.3, 0.9])
    beta = 0.1 + t * (20.0 - 0.1)
    np.testing.assert_allclose(s.diffusion_sq(t), beta, rtol=1e-5)  # g² = β for VP
    np.testing.assert_allclose(s.drift_coef(t), -0.5 * beta, rtol=1e-5)  # f = −β/2
    np.testing.assert_allclose(s.alpha(t) ** 2 + s.sigma(t) ** 2, 1.0, rtol=1e-6)
    # α(t) = exp(−½∫β) computed independently
    integral = 0.1 * np.asarray(t) + 0.5 * (20.0 - 0.1) * np.asarray(t) ** 2
    np.testing.assert_allclose(s.alpha(t), np.exp(-0.5 * integral), rtol=1e-6)


def test_vp_cosine_closed_forms():
    s = VPCosine(s=0.008)
    t = np.asarray([0.0, 0.2, 0.7])
    expected = np.cos((t + 0.008) / 1.008 * np.pi / 2) / np.cos(0.008 / 1.008 * np.pi / 2)
    np.testing.assert_allclose(s.alpha(jnp.asarray(t)), expected, rtol=1e-6)
    np.testing.assert_allclose(s.alpha(jnp.asarray(t)) ** 2 + s.sigma_sq(jnp.asarray(t)), 1.0, rtol=1e-6)


def test_ve_and_edm_closed_forms():
    ve = VE(sigma_min=0.01, sigma_max=50.0)
    t = jnp.asarray([0.0 + 1e-5, 0.5, 1.0])
    np.testing.assert_allclose(ve.sigma(t), 0.01 * (5000.0 ** np.asarray(t)), rtol=1e-5)
    np.testing.assert_allclose(ve.alpha(t), 1.0)
    np.testing.assert_allclose(ve.diffusion_sq(t), 2 * ve.sigma_sq(t) * math.log(5000.0), rtol=1e-4)
    edm = EDM()
    t = jnp.asarray([0.01, 1.0, 50.0])
    np.testing.assert_allclose(edm.sigma(t), t)
    np.testing.assert_allclose(edm.diffusion_sq(t), 2 * t, rtol=1e-6)


def test_edm_rho_grid():
    s = EDM(t_min=0.002, t_max=80.0, rho=7.0)
    grid = np.asarray(s.time_grid(10))
    i = np.arange(11) / 10
    expected = (80 ** (1 / 7) + i * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(grid, expected, rtol=1e-5)
    assert grid[0] == pytest.approx(80.0) and grid[-1] == pytest.approx(0.002)


@pytest.mark.parametrize("s", ALL, ids=IDS)
def test_time_grid_and_training_times_stay_in_range(s):
    grid = np.asarray(s.time_grid(25))
    assert grid.shape == (26,)
    assert np.all(np.diff(grid) < 0)
    np.testing.assert_allclose([grid[0], grid[-1]], [s.t_max, s.t_min], rtol=1e-5)
    t = np.asarray(s.sample_training_times(jax.random.PRNGKey(0), (4096,)))
    assert t.min() >= s.t_min * (1 - 1e-6) and t.max() <= s.t_max * (1 + 1e-6)


@pytest.mark.parametrize("s", ALL, ids=IDS)
def test_perturb_has_the_stated_moments(s):
    t = float(_times(s, 5)[1])
    z0 = jnp.full((20000, 2), 0.7)
    zt, eps = s.perturb(jax.random.PRNGKey(1), z0, jnp.full((20000,), t))
    a, sig = float(s.alpha(t)), float(s.sigma(t))
    np.testing.assert_allclose(np.asarray(zt), a * 0.7 + sig * np.asarray(eps), rtol=1e-5, atol=1e-5)
    # mean within 5 standard errors of α·z0
    assert abs(float(zt.mean()) - a * 0.7) < 5 * sig / math.sqrt(40000)


def test_schedule_is_a_pytree_that_jits_and_vmaps_without_retracing():
    traces = []

    @jax.jit
    def noise(s, t):
        traces.append(1)
        return s.sigma(t)

    noise(VPLinear(t_min=1e-3), 0.5)
    noise(VPLinear(t_min=1e-2), 0.5)  # same structure, other value: no new trace
    assert len(traces) == 1
    floors = jax.vmap(lambda tm: VPLinear(t_min=tm).noise_to_signal(tm))(jnp.asarray([1e-3, 1e-2]))
    assert floors.shape == (2,) and float(floors[1]) > float(floors[0])


def test_config_round_trip():
    for s in ALL:
        s2 = schedule_from_config(s.to_config())
        assert type(s2) is type(s)
        assert s2.to_config() == s.to_config()


@pytest.mark.parametrize(
    "build, param",
    [
        (lambda: get_schedule("not_a_schedule"), "schedule name"),
        (lambda: VPLinear(t_min=-0.1), "t_min"),
        (lambda: VPLinear(t_min=0.5, t_max=0.1), "t_min"),
        (lambda: VPLinear(beta1=float("nan")), "beta1"),
        (lambda: VE(sigma_min=1.0, sigma_max=0.5), "sigma_min"),
        (lambda: VPCosine(t_max=1.0), "t_max"),
        (lambda: EDM(rho=0.0), "rho"),
        (lambda: VPLinear().time_grid(0), "n_steps"),
        (lambda: VPLinear().time_grid(2.5), "n_steps"),
        (lambda: VPLinear().check_t(1.5), "t"),
        (lambda: EDM().check_t(jnp.asarray([0.001, 1.0])), "t"),
    ],
)
def test_bad_schedule_input_names_the_parameter(build, param):
    with pytest.raises((ValueError, TypeError)) as err:
        build()
    assert param in str(err.value)


def test_all_schedules_registered_with_aliases():
    assert set(SCHEDULES) == {"vp_linear", "vp_cosine", "ve", "edm"}
    assert isinstance(get_schedule("ddpm"), VPLinear)
    assert isinstance(get_schedule("karras"), EDM)
    with pytest.raises(TypeError, match="beta9"):
        get_schedule("vp", beta9=1.0)


def test_noise_floor_reports_sigma_over_alpha_at_t_min():
    s = VPLinear(t_min=1e-3)
    assert s.noise_floor() == pytest.approx(float(s.sigma(1e-3) / s.alpha(1e-3)), rel=1e-6)
    assert VE(sigma_min=0.01, t_min=1e-5).noise_floor() == pytest.approx(0.01, rel=1e-3)
