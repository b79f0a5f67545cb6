"""Families with exact noised scores (THEORY §2): exactness, references, validation, jit.

Exactness checks run in float64 (enabled per test by an autouse fixture that restores the
previous setting, so other modules are unaffected); `test_float32_*` switch x64 off.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from dsmtheory.families import (
    Embedded,
    EmpiricalMeasure,
    GaussianMixture,
    GaussianX,
    LinearGaussian,
    MixtureX,
    NonlinearRule,
    UniformX,
    family_from_config,
    get_family,
    get_x_marginal,
)
from dsmtheory.rules import Shadow, Sine
from dsmtheory.schedules import EDM, VE, VPCosine, VPLinear

SCHEDULES = [VPLinear(), VPCosine(), VE(sigma_max=10.0), EDM()]
SCHED_IDS = [s.name for s in SCHEDULES]


@pytest.fixture(autouse=True)
def _x64(request):
    """float64 for every test here, except those that request `float32_mode`."""
    with jax.enable_x64("float32_mode" not in request.fixturenames):
        yield


@pytest.fixture
def float32_mode():
    assert not jax.config.jax_enable_x64


def _random_times(schedule, rng, n, include_t_min=True):
    """n times log-uniform in [t_min, t_max] (first one at t_min)."""
    lo, hi = float(schedule.t_min), float(schedule.t_max)
    t = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    if include_t_min:
        t[0] = lo
    return t


def _noised(family, schedule, t, key):
    """z_t = α z_0 + σ ε for z_0 from the family (points p_t actually produces)."""
    z0 = _jit_sample(family, key, len(t))
    return schedule.perturb(jax.random.fold_in(key, 1), z0, jnp.asarray(t))[0]


def _rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b) / (np.abs(b) + 1e-12 * np.max(np.abs(b))))


# ----------------------------------------------------------------------------------------
# Family builders used across tests (created inside tests so the x64 mode applies)
# ----------------------------------------------------------------------------------------
def _linear_gaussian_2_1():
    return LinearGaussian.create(mu_x=[0.3, -0.5], cov_x=[[1.0, 0.4], [0.4, 0.5]], A=[[1.5, -0.7]], b=[0.2], sigma_r=0.1)


def _nonlinear():
    return NonlinearRule.create(UniformX(-1.0, 1.0), Sine(k=4.0), sigma_r=0.05)


def _gmm():
    return GaussianMixture.create(
        weights=[0.3, 0.7],
        means=[[-1.0, 0.5, 0.0], [1.0, -0.5, 0.3]],
        covs=[np.diag([0.3, 0.2, 0.1]), [[0.5, 0.1, 0.0], [0.1, 0.4, 0.05], [0.0, 0.05, 0.2]]],
        dx=2,
        sigma_r=0.3,
    )


def _empirical():
    base = _nonlinear()
    return EmpiricalMeasure.from_samples(base.sample(jax.random.PRNGKey(3), 40), base, n_max=48)


def _embedded():
    return Embedded.create(NonlinearRule.create(GaussianX(0.0, 1.0), Sine(k=2.0), 0.1), D=6, key=jax.random.PRNGKey(4), sigma_b=0.7)


FAMILY_BUILDERS = {
    "linear_gaussian": _linear_gaussian_2_1,
    "nonlinear": _nonlinear,
    "gmm": _gmm,
    "empirical": _empirical,
    "embedded": _embedded,
}


# ----------------------------------------------------------------------------------------
# 1. exact score == jax.grad of exact log p_t, every family × schedule (float64, 1e-5 rel)
# ----------------------------------------------------------------------------------------
# The families jit their own kernels (compiled once per family type and shape, shared by
# all schedules), so the tests call the public methods directly; explicit jit/vmap
# behaviour is tested in section 8.
def _jit_score(family, schedule, z, t):
    return family.score(z, t, schedule)


def _jit_log_prob_t(family, schedule, z, t):
    return family.log_prob_t(z, t, schedule)


def _jit_log_prob(family, z):
    return family.log_prob(z)


def _jit_sample(family, key, n):
    return family.sample(key, n)


def _score_and_grad(family, schedule, z, t):
    score = family.score(z, t, schedule)
    grad = jax.grad(lambda zz: jnp.sum(family.log_prob_t(zz, t, schedule)))(z)
    return score, grad


@pytest.mark.parametrize("family_name", list(FAMILY_BUILDERS))
@pytest.mark.parametrize("schedule", SCHEDULES, ids=SCHED_IDS)
def test_score_equals_grad_of_log_prob_t(family_name, schedule):
    family = FAMILY_BUILDERS[family_name]()
    rng = np.random.default_rng(0)
    t = _random_times(schedule, rng, 8)
    z = _noised(family, schedule, t, jax.random.PRNGKey(1))
    z = z.at[-1].add(0.3)  # one point off the data
    score, grad = _score_and_grad(family, schedule, z, jnp.asarray(t))
    assert score.dtype == jnp.float64
    err = np.linalg.norm(score - grad, axis=-1) / np.linalg.norm(grad, axis=-1)
    assert np.max(err) < 1e-5, (family_name, err)


# ----------------------------------------------------------------------------------------
# 2. Linear-Gaussian: conditional p_t(y | x) against independent Gaussian conditioning
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dims", [(2, 1), (1, 2)])
def test_linear_gaussian_conditional_matches_numpy_conditioning(dims):
    dx, dy = dims
    rng = np.random.default_rng(1)
    mu = rng.normal(size=dx)
    m_ = rng.normal(size=(dx, dx))
    cov_x = m_ @ m_.T + 0.5 * np.eye(dx)
    A, b, sr = rng.normal(size=(dy, dx)), rng.normal(size=dy), 0.3
    fam = LinearGaussian.create(mu_x=mu, cov_x=cov_x, A=A, b=b, sigma_r=sr)
    # joint of (x, y) written out independently of the library
    C = np.block([[cov_x, cov_x @ A.T], [A @ cov_x, A @ cov_x @ A.T + sr**2 * np.eye(dy)]])
    m = np.concatenate([mu, A @ mu + b])
    for schedule in SCHEDULES:
        t = float(_random_times(schedule, rng, 2, include_t_min=False)[0])
        a, s2 = float(schedule.alpha(t)), float(schedule.sigma_sq(t))
        Ct, mt = a**2 * C + s2 * np.eye(dx + dy), a * m
        x = mt[:dx] + rng.normal(size=dx)
        y = mt[dx:] + rng.normal(size=dy)
        gain = Ct[dx:, :dx] @ np.linalg.inv(Ct[:dx, :dx])
        ref_mean = mt[dx:] + gain @ (x - mt[:dx])
        ref_cov = Ct[dx:, dx:] - gain @ Ct[:dx, dx:]
        mean, cov = fam.conditional_t(jnp.asarray(x), jnp.asarray(t), schedule)
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(cov, ref_cov, rtol=1e-10, atol=1e-12)
        # log p_t(y | x) = log p_t(x, y) − log p_t(x), with scipy densities
        ref_lp = stats.multivariate_normal(mt, Ct).logpdf(np.concatenate([x, y])) - stats.multivariate_normal(
            mt[:dx], Ct[:dx, :dx]
        ).logpdf(x)
        lp = fam.conditional_log_prob_t(jnp.asarray(np.concatenate([x, y])), jnp.asarray(t), schedule)
        np.testing.assert_allclose(lp, ref_lp, rtol=1e-10)
        # and the joint log p_t against scipy
        np.testing.assert_allclose(
            fam.log_prob_t(jnp.asarray(np.concatenate([x, y])), jnp.asarray(t), schedule),
            stats.multivariate_normal(mt, Ct).logpdf(np.concatenate([x, y])),
            rtol=1e-10,
        )


# ----------------------------------------------------------------------------------------
# 3. Nonlinear rule: quadrature score vs an independent scipy.integrate reference
# ----------------------------------------------------------------------------------------
def _reference(px_cfg, f_np, sigma_r, alpha, var, x_t, y_t, n_grid=20001):
    """(log p_t, score) by scipy quad_vec, independent of the library's windowing.

    The integrand of p, ∂p/∂x_t, ∂p/∂y_t is scaled by its maximum M, located on a fine
    grid over the support of p_x intersected with x_t/α ± 60 σ/α (six times wider than the
    library's window and without its y-dependent sizing), integrated over the region where
    it is within e^-60 of M (64 pieces, epsrel 1e-11), and score = ∂p/p."""
    var_y = alpha**2 * sigma_r**2 + var
    s, c = np.sqrt(var) / alpha, x_t / alpha
    if px_cfg["name"] == "uniform":
        lo, hi = px_cfg["lo"], px_cfg["hi"]
        logpx = lambda u: np.full(np.shape(u), -np.log(hi - lo))
        A, B = lo, hi
    else:
        if px_cfg["name"] == "gaussian":
            w, m, sd = np.array([1.0]), np.array([px_cfg["mean"]]), np.array([px_cfg["std"]])
        else:
            w, m, sd = (np.asarray(px_cfg[k], dtype=float) for k in ("weights", "means", "stds"))

        def logpx(u):
            u = np.asarray(u, dtype=float)[..., None]
            comps = np.log(w / (sd * np.sqrt(2 * np.pi))) - 0.5 * ((u - m) / sd) ** 2
            return np.logaddexp.reduce(comps, axis=-1)

        A, B = (m - 14 * sd).min(), (m + 14 * sd).max()
    A, B = max(A, c - 60 * s), min(B, c + 60 * s)
    log_norm = -0.5 * np.log(2 * np.pi * var) - 0.5 * np.log(2 * np.pi * var_y)

    def logg(u):
        return logpx(u) + log_norm - 0.5 * (x_t - alpha * u) ** 2 / var - 0.5 * (y_t - alpha * f_np(u)) ** 2 / var_y

    grid = np.linspace(A, B, n_grid)
    lg = logg(grid)
    M = lg.max()
    keep = np.nonzero(lg > M - 60)[0]
    a, b = grid[max(keep[0] - 3, 0)], grid[min(keep[-1] + 3, n_grid - 1)]

    def vec(u):
        g = np.exp(logg(u) - M)
        return np.array([g, g * (alpha * u - x_t) / var, g * (alpha * f_np(u) - y_t) / var_y])

    val, _ = integrate.quad_vec(vec, a, b, points=np.linspace(a, b, 65)[1:-1], epsrel=1e-11, epsabs=0, limit=4000)
    return M + np.log(val[0]), val[1:] / val[0]


_QUAD_CASES = {
    # (x-marginal, rule, numpy rule, σ_r)
    "gauss_sin8_sr1e-3": (GaussianX(0.0, 1.0), Sine(k=8.0), lambda u: np.sin(8 * u), 1e-3),
    "uniform_shadow_sr1e-3": (UniformX(0.3, 1.3), Shadow(height=1.0), lambda u: np.cos(u) / np.sin(u), 1e-3),
    "uniform_sin8_sr0.05": (UniformX(-1.0, 1.0), Sine(k=8.0), lambda u: np.sin(8 * u), 0.05),
    "mixture_sin3_sr1e-2": (
        MixtureX.create([0.3, 0.7], [-1.0, 1.0], [0.3, 0.5]),
        Sine(k=3.0),
        lambda u: np.sin(3 * u),
        1e-2,
    ),
}


def _score_logp(family, schedule, z, t):
    return family.score(z, t, schedule), family.log_prob_t(z, t, schedule)


@pytest.mark.parametrize("case", list(_QUAD_CASES))
def test_quadrature_score_matches_scipy_reference(case):
    """Every schedule; 2 points at t_min + 2 at random t per schedule, on the data and
    off the rule curve by 4 σ_y; score to 1e-4 relative, log p_t to 1e-6 absolute."""
    px, rule, f_np, sr = _QUAD_CASES[case]
    fam = NonlinearRule.create(px, rule, sr)
    rng = np.random.default_rng(7)
    worst_score, worst_logp = 0.0, 0.0
    for schedule in SCHEDULES:
        t = np.concatenate([[float(schedule.t_min)] * 2, _random_times(schedule, rng, 2, include_t_min=False)])
        z = np.array(_noised(fam, schedule, t, jax.random.PRNGKey(11)))
        a, v = np.asarray(schedule.alpha(jnp.asarray(t))), np.asarray(schedule.sigma_sq(jnp.asarray(t)))
        z[1::2, 1] += 4 * np.sqrt(a[1::2] ** 2 * sr**2 + v[1::2])  # off the curve by 4 σ_y
        score, logp = _score_logp(fam, schedule, jnp.asarray(z), jnp.asarray(t))
        for i in range(len(t)):
            ref_logp, ref_score = _reference(px.to_config(), f_np, sr, a[i], v[i], z[i, 0], z[i, 1])
            worst_score = max(worst_score, np.max(np.abs(score[i] - ref_score)) / np.max(np.abs(ref_score)))
            worst_logp = max(worst_logp, abs(float(logp[i]) - ref_logp))
    assert worst_score < 1e-4, worst_score
    assert worst_logp < 1e-6, worst_logp


def test_quadrature_far_tails_finite_and_pointing_back():
    """Points far off the curve and far outside the support: finite, and the score pulls
    y back towards the curve (and x back towards the support)."""
    fam = NonlinearRule.create(UniformX(0.3, 1.3), Shadow(height=1.0), 1e-3)
    fam_g = NonlinearRule.create(GaussianX(0.0, 1.0), Sine(k=8.0), 1e-3)
    for schedule in SCHEDULES:
        t = jnp.full((4,), schedule.t_min)
        a = float(schedule.alpha(schedule.t_min))
        z = jnp.asarray([[0.8 * a, (1 / math.tan(0.8) + 1.0) * a], [0.8 * a, (1 / math.tan(0.8) - 1.0) * a],
                         [5.0, 0.3], [-50.0, 0.0]])
        for f in (fam, fam_g):
            s = np.asarray(_jit_score(f, schedule, z, t))
            assert np.all(np.isfinite(s)), (schedule.name, s)
        s = np.asarray(_jit_score(fam, schedule, z, t))
        assert s[0, 1] < 0 and s[1, 1] > 0  # y above the curve is pushed down, below pushed up
        assert s[2, 0] < 0 and s[3, 0] > 0  # x beyond the support is pulled back


def test_quadrature_panel_count_static_and_validated():
    fam = NonlinearRule.create(UniformX(-1.0, 1.0), Sine(k=8.0), 1e-3)
    assert fam.n_panels == NonlinearRule.create(UniformX(-1.0, 1.0), Sine(k=8.0), 0.5).n_panels  # no σ_r dependence
    assert NonlinearRule.create(UniformX(-1.0, 1.0), Sine(k=2.0), 1e-3).n_panels < fam.n_panels  # steeper: more
    with pytest.raises(ValueError, match="n_panels"):
        NonlinearRule.create(UniformX(-1.0, 1.0), Sine(k=8.0), 1e-3, n_panels=fam.n_panels - 1)


# ----------------------------------------------------------------------------------------
# 4. Gaussian mixture
# ----------------------------------------------------------------------------------------
def test_gmm_score_matches_finite_differences():
    fam = _gmm()
    rng = np.random.default_rng(2)
    for schedule in SCHEDULES:
        t = _random_times(schedule, rng, 5)
        z = np.asarray(_noised(fam, schedule, t, jax.random.PRNGKey(5)))
        score = np.asarray(_jit_score(fam, schedule, jnp.asarray(z), jnp.asarray(t)))
        h = 1e-5 * np.sqrt(np.asarray(schedule.sigma_sq(jnp.asarray(t))) + 1.0)
        fd = np.zeros_like(z)
        for d in range(z.shape[1]):
            e = np.zeros_like(z)
            e[:, d] = h
            lp = lambda zz: np.asarray(_jit_log_prob_t(fam, schedule, jnp.asarray(zz), jnp.asarray(t)))
            fd[:, d] = (lp(z + e) - lp(z - e)) / (2 * h)
        err = np.linalg.norm(score - fd, axis=-1) / np.linalg.norm(score, axis=-1)
        assert np.max(err) < 1e-6, (schedule.name, err)


def test_gmm_log_prob_matches_scipy_and_rule_is_conditional_mean():
    fam = _gmm()
    z = np.asarray(_jit_sample(fam, jax.random.PRNGKey(0), 5))
    w, m, c = np.asarray(fam.weights), np.asarray(fam.means), np.asarray(fam.covs)
    ref = np.log(sum(w[k] * stats.multivariate_normal(m[k], c[k]).pdf(z) for k in range(2)))
    np.testing.assert_allclose(_jit_log_prob(fam, jnp.asarray(z)), ref, rtol=1e-10)
    # E[y | x] by numerical integration of the joint density over y
    ys = np.linspace(-6, 6, 20001)
    for x in z[:3, :2]:
        zz = np.concatenate([np.broadcast_to(x, (len(ys), 2)), ys[:, None]], axis=1)
        p = np.exp(np.asarray(_jit_log_prob(fam, jnp.asarray(zz))))
        ref_mean = np.trapezoid(ys * p, ys) / np.trapezoid(p, ys)
        np.testing.assert_allclose(fam.rule(jnp.asarray(x)), [ref_mean], rtol=1e-7, atol=1e-9)


def test_gmm_sigma_r_derived_or_rejected():
    fam = GaussianMixture.clustered_rule(np.linspace(-1, 1, 4), Sine(k=2.0), sigma_x=0.1, sigma_r=0.05, local_linear=True)
    assert fam.sigma_r == pytest.approx(0.05)
    auto = GaussianMixture.create(fam.weights, fam.means, fam.covs, dx=1)  # derived: common conditional std
    assert float(auto.sigma_r) == pytest.approx(0.05, rel=1e-6)
    # E[y|x] at a centre follows the rule (tangent-line clusters, well separated)
    np.testing.assert_allclose(fam.rule(jnp.asarray([[1.0 / 3.0]])), np.sin(2.0 / 3.0)[None, None], atol=1e-6)
    with pytest.raises(ValueError, match="sigma_r"):
        GaussianMixture.create([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [np.eye(2), 2 * np.eye(2)], dx=1)


# ----------------------------------------------------------------------------------------
# 5. Empirical measure
# ----------------------------------------------------------------------------------------
def test_empirical_padding_and_memorisation():
    base = _nonlinear()
    pts = _jit_sample(base, jax.random.PRNGKey(0), 30)
    full = EmpiricalMeasure.from_samples(pts, base)
    padded = EmpiricalMeasure.from_samples(pts, base, n_max=64)
    schedule = VPLinear()
    t = jnp.asarray([schedule.t_min, 0.05, 0.5])
    z = jax.random.normal(jax.random.PRNGKey(1), (3, 2))
    np.testing.assert_allclose(_jit_score(padded, schedule, z, t), _jit_score(full, schedule, z, t), rtol=1e-12)
    np.testing.assert_allclose(_jit_log_prob_t(padded, schedule, z, t), _jit_log_prob_t(full, schedule, z, t), rtol=1e-12)
    assert int(padded.n) == 30
    # log p̂_t is the mixture of N(α z_i, σ² I), checked with scipy
    a, s = float(schedule.alpha(0.05)), float(schedule.sigma(0.05))
    ref = np.log(np.mean([stats.multivariate_normal(a * p, s**2 * np.eye(2)).pdf(np.asarray(z[1])) for p in pts]))
    np.testing.assert_allclose(_jit_log_prob_t(full, schedule, z, t)[1], ref, rtol=1e-10)
    # samples are training points
    draws = np.asarray(_jit_sample(padded, jax.random.PRNGKey(2), 100))
    assert np.min(np.abs(draws[:, None, :] - np.asarray(pts)[None]).sum(-1), axis=1).max() == 0.0
    # memorisation: near a training point at t_min the score points at (α z_i − z)
    t0 = schedule.t_min
    a0, s0 = float(schedule.alpha(t0)), float(schedule.sigma(t0))
    d = np.linalg.norm(np.asarray(pts)[:, None] - np.asarray(pts)[None], axis=-1) + np.eye(30) * 1e9
    i_iso = int(np.argmax(d.min(1)))  # the most isolated training point (others > 10 σ away)
    assert d.min(1)[i_iso] > 10 * s0
    zi = np.asarray(pts[i_iso])
    zq = a0 * zi + 0.5 * s0 * np.array([0.6, -0.8])
    sc = np.asarray(_jit_score(full, schedule, jnp.asarray(zq), jnp.asarray(t0)))
    target = (a0 * zi - zq) / s0**2
    np.testing.assert_allclose(sc, target, rtol=1e-6)
    assert int(full.nearest_index(jnp.asarray(zq / a0))) == i_iso


def test_empirical_sweep_over_n_does_not_retrace():
    base = _nonlinear()
    pts = _jit_sample(base, jax.random.PRNGKey(0), 64)
    traces = []

    @jax.jit
    def f(fam, z, t):
        traces.append(1)
        return fam.score(z, t, VPLinear())

    z, t = jnp.zeros((4, 2)), jnp.full((4,), 0.1)
    outs = []
    for n in (8, 16, 64):
        mask = np.arange(64) < n
        outs.append(f(EmpiricalMeasure.from_samples(pts, base, mask=mask), z, t))
    assert len(traces) == 1
    assert not np.allclose(outs[0], outs[2])


# ----------------------------------------------------------------------------------------
# 6. Embedded
# ----------------------------------------------------------------------------------------
def test_embedded_structure_and_background():
    base = LinearGaussian.create(mu_x=[0.5], cov_x=[[0.2]], A=[[2.0]], b=[0.0], sigma_r=0.1)
    emb = Embedded.create(base, D=5, key=jax.random.PRNGKey(0), sigma_b=0.5)
    Q = np.asarray(emb.frame)
    np.testing.assert_allclose(Q.T @ Q, np.eye(2), atol=1e-12)
    v = jnp.asarray([[0.7, 1.2], [1.0, 0.6]])
    x, y = emb.features(emb.embed_features(v))
    np.testing.assert_allclose(np.concatenate([x, y], -1), v, atol=1e-12)
    # log p_t = base log p_t(Qᵀz) + N(P⊥z; 0, (α²σ_b²+σ²) I_3), checked with scipy
    schedule = VPCosine()
    t = 0.2
    z = np.asarray(_jit_sample(emb, jax.random.PRNGKey(1), 3))
    a2, s2 = float(schedule.alpha(t)) ** 2, float(schedule.sigma_sq(t))
    perp = z - (z @ Q) @ Q.T
    basis = np.linalg.svd(np.eye(5) - Q @ Q.T)[0][:, :3]  # orthonormal basis of the complement
    ref = np.asarray(_jit_log_prob_t(base, schedule, jnp.asarray(z @ Q), jnp.asarray(t))) + stats.multivariate_normal(
        np.zeros(3), (a2 * 0.25 + s2) * np.eye(3)
    ).logpdf(perp @ basis)
    np.testing.assert_allclose(_jit_log_prob_t(emb, schedule, jnp.asarray(z), jnp.asarray(t)), ref, rtol=1e-10)
    # samples: features follow the base, background variance σ_b²
    zs = np.asarray(_jit_sample(emb, jax.random.PRNGKey(2), 4000))
    xs, ys = (np.asarray(a)[:, 0] for a in emb.features(jnp.asarray(zs)))
    # 4000 draws: std error of the mean of x ≈ sqrt(0.2/4000) = 0.0071, of the residual std ≈ 0.0011
    assert abs(xs.mean() - 0.5) < 5 * 0.0071
    assert abs((ys - 2 * xs).std() - 0.1) < 5 * 0.0011
    bg = (zs - (zs @ Q) @ Q.T) @ basis
    # per-coordinate variance of 4000 N(0, 0.25) draws: std error 0.25·sqrt(2/4000) ≈ 0.0056
    np.testing.assert_allclose(bg.var(0), 0.25, atol=5 * 0.0056)
    # D = 2: no background; the score is the base score rotated
    emb2 = Embedded.create(base, D=2, frame=np.array([[0.0, 1.0], [1.0, 0.0]]))
    z2 = jnp.asarray([[1.1, 0.8], [0.2, -0.3], [0.0, 1.0]])
    np.testing.assert_allclose(
        _jit_score(emb2, schedule, z2, jnp.asarray(t)), _jit_score(base, schedule, z2[:, ::-1], jnp.asarray(t))[:, ::-1],
        rtol=1e-12,
    )
    # rule_normal is the embedded unit normal of the rule graph
    n = np.asarray(emb.rule_normal(jnp.asarray(zs[:3])))
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, rtol=1e-12)


# ----------------------------------------------------------------------------------------
# 7. Nonlinear rule: clean density and samples
# ----------------------------------------------------------------------------------------
def test_nonlinear_log_prob_and_samples():
    fam = NonlinearRule.create(MixtureX.create([1.0, 3.0], [-1.0, 1.0], [0.2, 0.4]), Sine(k=3.0), 0.1)
    z = np.asarray(_jit_sample(fam, jax.random.PRNGKey(0), 20000))
    x, y = z[:, 0], z[:, 1]
    ref = np.log(0.25 * stats.norm.pdf(x, -1, 0.2) + 0.75 * stats.norm.pdf(x, 1, 0.4)) + stats.norm.logpdf(
        y, np.sin(3 * x), 0.1
    )
    np.testing.assert_allclose(_jit_log_prob(fam, jnp.asarray(z[:10])), ref[:10], rtol=1e-10)
    resid = y - np.sin(3 * x)
    # 20000 draws: std error of the sample std ≈ 0.1/sqrt(40000) = 5e-4, of the mixture weight ≈ 0.003
    assert abs(resid.std() - 0.1) < 5 * 5e-4
    assert abs(np.mean(x < 0) - 0.25) < 5 * 0.0031


# ----------------------------------------------------------------------------------------
# 8. float32 mode, jit, vmap, no recompilation
# ----------------------------------------------------------------------------------------
def _to_float32(tree):
    return jax.tree.map(
        lambda a: jnp.asarray(np.asarray(a), jnp.float32) if np.issubdtype(np.asarray(a).dtype, np.floating) else a, tree
    )


def test_float32_scores_finite_and_close_to_float64(float32_mode):
    """Each family, built in float64 and cast to float32: the float32 score is
    finite and within 1e-2 (relative to ‖s‖ + 1) of the float64 score, t from t_min to 1."""
    schedule = VPLinear()
    for name, builder in FAMILY_BUILDERS.items():
        with jax.enable_x64(True):
            fam64 = builder()
            ts64 = jnp.asarray(np.geomspace(schedule.t_min, 1.0, 8))
            z64 = _noised(fam64, schedule, np.asarray(ts64), jax.random.PRNGKey(0))
            s64 = np.asarray(_jit_score(fam64, schedule, z64, ts64))
        fam32 = _to_float32(fam64)
        s32 = _jit_score(fam32, schedule, jnp.asarray(np.asarray(z64), jnp.float32), jnp.asarray(np.asarray(ts64), jnp.float32))
        assert s32.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(s32))), name
        err = np.linalg.norm(np.asarray(s32, np.float64) - s64, axis=-1) / (np.linalg.norm(s64, axis=-1) + 1.0)
        assert np.max(err) < 1e-2, (name, err)


def test_float32_steep_rule_at_t_min(float32_mode):
    fam = NonlinearRule.create(GaussianX(0.0, 1.0), Sine(k=8.0), 1e-3)
    for schedule in SCHEDULES:
        t = np.full(64, float(schedule.t_min))
        z = _noised(fam, schedule, t, jax.random.PRNGKey(0))
        s = _jit_score(fam, schedule, z, jnp.asarray(t, jnp.float32))
        assert s.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(s))), schedule.name


def test_jit_vmap_and_no_retrace_for_new_parameter_values():
    traces = []

    @jax.jit
    def jitted(fam, z, t):
        traces.append(1)
        return fam.score(z, t, EDM())

    n_panels = NonlinearRule.create(GaussianX(0.0, 1.0), Sine(k=8.0), 0.01).n_panels
    fam_a = NonlinearRule.create(GaussianX(0.0, 1.0), Sine(k=8.0), 0.01, n_panels=n_panels)
    fam_b = NonlinearRule.create(GaussianX(0.5, 0.7), Sine(k=5.0, amplitude=1.5), 0.2, n_panels=n_panels)
    z = fam_a.sample(jax.random.PRNGKey(0), 6)
    t = jnp.linspace(0.01, 2.0, 6)
    out_a = jitted(fam_a, z, t)
    np.testing.assert_allclose(out_a, fam_a.score(z, t, EDM()), rtol=1e-10)
    out_b = jitted(fam_b, z, t)
    assert len(traces) == 1
    np.testing.assert_allclose(out_b, fam_b.score(z, t, EDM()), rtol=1e-10)
    # vmap over points and times equals the batched call
    per_point = jax.vmap(lambda zz, tt: fam_a.score(zz, tt, EDM()))(z, t)
    np.testing.assert_allclose(per_point, out_a, rtol=1e-10)
    # vmap over a stack of families (a parameter sweep in one program)
    stacked = jax.tree.map(lambda u, v: jnp.stack([u, v]), fam_a, fam_b)
    swept = jax.vmap(lambda f: f.score(z, t, EDM()))(stacked)
    np.testing.assert_allclose(swept[1], out_b, rtol=1e-10)
    # the same for the GMM and the embedded family
    traces.clear()
    g1 = _gmm()
    g2 = g1.replace(means=g1.means + 0.3)
    zg = g1.sample(jax.random.PRNGKey(1), 4)
    tg = jnp.full((4,), 0.3)
    jitted(g1, zg, tg)
    jitted(g2, zg, tg)
    assert len(traces) == 1


# ----------------------------------------------------------------------------------------
# 9. configs, registry, validation
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family_name", list(FAMILY_BUILDERS))
def test_config_round_trip(family_name):
    fam = FAMILY_BUILDERS[family_name]()
    rebuilt = family_from_config(fam.to_config())
    assert type(rebuilt) is type(fam)
    z = _jit_sample(fam, jax.random.PRNGKey(0), 3)
    t = jnp.asarray([0.01, 0.1, 0.9])
    np.testing.assert_allclose(_jit_score(rebuilt, VPLinear(), z, t), _jit_score(fam, VPLinear(), z, t), rtol=1e-12)


def test_get_family_by_name():
    fam = get_family("nonlinear", x_marginal={"name": "uniform", "lo": 0.3, "hi": 1.3}, f="shadow",
                     rule_params={"height": 2.0}, sigma_r=0.05)
    assert isinstance(fam, NonlinearRule) and float(fam.f.height) == 2.0
    emb = get_family("embedded", base=fam.to_config(), D=4, key=jax.random.PRNGKey(0))
    assert emb.dim == 4
    assert isinstance(get_family("gmm", weights=[1.0], means=[[0.0, 0.0]], covs=[np.eye(2)]), GaussianMixture)


def test_bad_sigma_r_raises():
    with pytest.raises(ValueError, match="sigma_r"):
        NonlinearRule.create(GaussianX(), Sine(k=1.0), -0.1)
    with pytest.raises(ValueError, match="sigma_r"):
        LinearGaussian.create(sigma_r=-1.0)
    with pytest.raises(ValueError, match="sigma_r"):
        GaussianMixture.create([1.0], [[0.0, 0.0]], [np.eye(2)], sigma_r=0.0)


def test_mismatched_shapes_raise():
    fam = _nonlinear()
    with pytest.raises(ValueError, match="z must have last dimension 2"):
        fam.score(jnp.zeros((3, 3)), jnp.full((3,), 0.1), VPLinear())
    with pytest.raises(ValueError, match="t of shape"):
        fam.score(jnp.zeros((3, 2)), jnp.full((4,), 0.1), VPLinear())
    with pytest.raises(ValueError, match="covs must have shape"):
        GaussianMixture.create([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [np.eye(2)])
    with pytest.raises(ValueError, match="cov_x"):
        LinearGaussian.create(mu_x=[0.0, 0.0], cov_x=np.eye(3))
    with pytest.raises(ValueError, match="frame must have shape"):
        Embedded.create(fam, D=4, frame=np.eye(3)[:, :2])
    with pytest.raises(ValueError, match="orthonormal"):
        Embedded.create(fam, D=3, frame=np.ones((3, 2)))
    with pytest.raises(ValueError, match="points must have shape"):
        EmpiricalMeasure.from_samples(np.zeros((5, 3)), fam)
    with pytest.raises(ValueError, match="weights, means and stds"):
        MixtureX(weights=jnp.ones(2) / 2, means=jnp.zeros(3), stds=jnp.ones(2))


def test_t_outside_schedule_range_raises():
    fam = _gmm()
    z = jnp.zeros((2, 3))
    for schedule in SCHEDULES:
        with pytest.raises(ValueError, match=r"t must lie in"):
            fam.score(z, jnp.asarray([float(schedule.t_min), 2 * float(schedule.t_max)]), schedule)
        with pytest.raises(ValueError, match=r"t must lie in"):
            _nonlinear().log_prob_t(jnp.zeros((1, 2)), jnp.asarray([0.5 * float(schedule.t_min)]), schedule)


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="unknown family name 'nope'"):
        get_family("nope")
    with pytest.raises(ValueError, match="unknown rule name 'nope'"):
        NonlinearRule.create(GaussianX(), "nope", 0.1)
    with pytest.raises(ValueError, match="unknown x-marginal name 'nope'"):
        get_x_marginal("nope")
    with pytest.raises(ValueError, match="lo must be < hi"):
        UniformX(1.0, 0.0)
