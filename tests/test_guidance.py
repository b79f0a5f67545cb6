"""Tests of dsmtheory.guidance: negatives, the exact classifier, AUC, the learned classifier,
guided scores and filtering (THEORY §6). Small sizes: the learned-classifier tests share
one compiled training program (same shapes and config; the label-shuffle flag is traced)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from dsmtheory import guidance as G
from dsmtheory.families.linear_gaussian import LinearGaussian
from dsmtheory.samplers import sample
from dsmtheory.schedules import get_schedule
from dsmtheory.scores import ExactScore, GuidedScore

SCHED = get_schedule("vp_linear")


def fam1d(sigma_r=0.1):
    return LinearGaussian.create(mu_x=(0.0,), cov_x=[[1.0]], A=[[1.0]], sigma_r=sigma_r)


# --------------------------------------------------------------------------------------
# negatives
# --------------------------------------------------------------------------------------
def test_negatives_coarse_and_fine():
    fam = LinearGaussian.create(mu_x=(0.0, 0.5), cov_x=[[1.0, 0.3], [0.3, 1.0]], A=[[1.0, -1.0], [0.5, 2.0]],
                                sigma_r=0.2)
    z = fam.sample(jax.random.PRNGKey(0), 500)
    x, y = fam.features(z)
    zc = G.make_negatives(jax.random.PRNGKey(1), fam, z, "coarse")
    xc, yc = fam.features(zc)
    np.testing.assert_array_equal(np.asarray(xc), np.asarray(x))
    # every coarse y is another row's y, never the row's own
    match = np.all(np.isclose(np.asarray(yc)[:, None, :], np.asarray(y)[None, :, :], atol=1e-5), axis=-1)
    assert np.all(match.sum(1) >= 1)
    assert not np.any(np.diag(match))
    for s in (1.0, 4.0):
        zf = G.make_negatives(jax.random.PRNGKey(2), fam, z, f"fine:{s:g}")
        xf, yf = fam.features(zf)
        np.testing.assert_array_equal(np.asarray(xf), np.asarray(x))
        np.testing.assert_allclose(np.abs(np.asarray(yf - y)), s * 0.2, rtol=1e-5)
        signs = np.sign(np.asarray(yf - y))
        assert 0.4 < (signs > 0).mean() < 0.6  # random sign, 1000 draws: ±5 sd
    with pytest.raises(ValueError, match="kind"):
        G.make_negatives(jax.random.PRNGKey(1), fam, z, "medium")
    with pytest.raises(ValueError, match="fine scale"):
        G.make_negatives(jax.random.PRNGKey(1), fam, z, "fine:-1")


def test_negative_spec_validation():
    spec = G.NegativeSpec(coarse_weight=0.25, fine_scales=[1, 2])
    assert spec.kinds == ("coarse", "fine:1", "fine:2")
    np.testing.assert_allclose(spec.weights, [0.25, 0.375, 0.375])
    with pytest.raises(ValueError, match="coarse_weight"):
        G.NegativeSpec(coarse_weight=1.5)
    with pytest.raises(ValueError, match="fine_kind"):
        G.NegativeSpec(fine_kind="uniform")
    with pytest.raises(ValueError, match="fine_scales"):
        G.NegativeSpec(fine_scales=(0.0,))


# --------------------------------------------------------------------------------------
# exact classifier
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fine_kind", ["sign", "gaussian"])
def test_exact_classifier_matches_direct_bayes(fine_kind):
    """log P(+|z_t) against a direct float64 evaluation with scipy densities of the same mixture."""
    fam = LinearGaussian.create(mu_x=(0.3,), cov_x=[[1.5]], A=[[-0.7]], b=[0.2], sigma_r=0.3)
    spec = G.NegativeSpec(coarse_weight=0.4, fine_scales=(1.0, 3.0), fine_kind=fine_kind)
    clf = G.exact_linear_gaussian_classifier(fam, SCHED, spec)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 2)) * 1.5
    for t in (0.01, 0.5):
        a, s2 = float(SCHED.alpha(t)), float(SCHED.sigma_sq(t))
        m, C = np.asarray(fam.joint_mean(), np.float64), np.asarray(fam.joint_cov(), np.float64)
        ppos = multivariate_normal(a * m, a * a * C + s2 * np.eye(2)).pdf(z)
        Cc = np.diag(np.diag(C))  # x and y independent with the same marginals (dx = dy = 1)
        pneg = 0.4 * multivariate_normal(a * m, a * a * Cc + s2 * np.eye(2)).pdf(z)
        for sc in (1.0, 3.0):
            d = sc * 0.3
            if fine_kind == "sign":
                for sgn in (-1, 1):
                    pneg += 0.3 * 0.5 * multivariate_normal(a * (m + [0, sgn * d]), a * a * C + s2 * np.eye(2)).pdf(z)
            else:
                pneg += 0.3 * multivariate_normal(a * m, a * a * (C + np.diag([0, d * d])) + s2 * np.eye(2)).pdf(z)
        expected = np.log(ppos / (ppos + pneg))
        got = np.asarray(jax.jit(clf.__call__)(jnp.asarray(z, jnp.float32), jnp.full((50,), t)))
        np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)


def test_exact_classifier_auc_shape_and_null():
    """Exact classifier: AUC falls with t; at t_max (no signal left: α(1) ≈ e⁻⁵) it is 0.5
    within 4 null sd of the held-out sample (n = 2000 per class: sd = 0.0091)."""
    fam = fam1d(0.1)
    clf = G.exact_linear_gaussian_classifier(fam, SCHED)
    out = G.heldout_auc(jax.random.PRNGKey(3), clf, fam, SCHED, [0.01, 0.1, 0.3, 1.0], ["coarse", "fine:4"], n=2000)
    tol = 4 * out["null_std"]
    assert out["null_std"] == pytest.approx(math.sqrt(4001 / (12 * 2000 * 2000)))
    for kind in ("coarse", "fine:4"):
        a = np.asarray(out["auc"][kind])
        assert a[0] > 0.9, (kind, a)
        assert abs(a[-1] - 0.5) < tol, (kind, a)
        assert a[0] > a[1] > a[2], (kind, a)


# --------------------------------------------------------------------------------------
# AUC
# --------------------------------------------------------------------------------------
def test_auc_matches_pairwise_with_ties():
    rng = np.random.default_rng(1)
    p = rng.integers(0, 6, size=300).astype(np.float32)  # many ties
    q = rng.integers(0, 5, size=200).astype(np.float32)
    brute = ((p[:, None] > q[None, :]) + 0.5 * (p[:, None] == q[None, :])).mean()
    assert float(G.auc(jnp.asarray(p), jnp.asarray(q))) == pytest.approx(brute, abs=1e-6)
    assert float(G.auc(jnp.ones(10), jnp.ones(7))) == 0.5
    assert float(G.auc(jnp.arange(5.0) + 10, jnp.arange(5.0))) == 1.0


def test_auc_null_std_matches_simulation():
    keys = jax.random.split(jax.random.PRNGKey(4), 2000)
    aucs = jax.vmap(lambda k: G.auc(jax.random.normal(k, (60,)), jax.random.normal(jax.random.fold_in(k, 1), (40,))))(keys)
    sd = float(np.std(np.asarray(aucs)))
    # sd of a sample sd from 2000 draws is ≈ 1.6 %; allow 10 %
    assert sd == pytest.approx(G.auc_null_std(60, 40), rel=0.1)
    assert abs(float(np.mean(aucs)) - 0.5) < 4 * G.auc_null_std(60, 40) / math.sqrt(2000)


# --------------------------------------------------------------------------------------
# learned classifier (one compiled training program for both tests)
# --------------------------------------------------------------------------------------
CFG = G.ClassifierConfig(hidden=32, depth=2, n_steps=400, batch_size=128, learning_rate=3e-3)
N_SEEDS = 8


@pytest.fixture(scope="module")
def trained():
    fam = fam1d(0.1)
    data = fam.sample(jax.random.PRNGKey(10), 2048)
    real = G.train_classifier(jax.random.PRNGKey(11), fam, data, SCHED, CFG, n_seeds=N_SEEDS)
    null = G.train_classifier(jax.random.PRNGKey(11), fam, data, SCHED, CFG.replace(shuffle_labels=True),
                              n_seeds=N_SEEDS)
    return fam, real, null


def _member_aucs(fit, fam, t, kind, n=1000, seed=20):
    """Held-out AUC of every member (vmapped over the stacked params, fresh pairs)."""
    r = G.heldout_auc_members(jax.random.PRNGKey(seed), fit, fam, SCHED, [t], [kind], n=n)
    return np.asarray(r["auc"][kind])[:, 0], r["null_std"]


def test_learned_classifier_learns_and_shuffled_labels_give_chance(trained):
    """Held-out AUC (fresh pairs) at t = 0.01 against coarse negatives.

    True labels: every seed well above chance (exact classifier: 0.95; require > 0.5 + 10 null sd).
    Shuffled labels: a trained network is still *some* function of z, and positives and coarse
    negatives differ in distribution, so one member's AUC is not 0.5 up to held-out noise alone
    (measured spread between seeds ≈ 0.1). By the symmetry f → −f of the initialisation and of
    balanced shuffled labels its *expected* AUC is exactly 0.5, so the test is on the mean over
    8 independently trained seeds with tolerance 4 standard errors of that mean (the between-seed
    sd / √8, which includes the held-out sampling sd 0.0129 of n = 1000 per class)."""
    fam, real, null = trained
    assert real.losses.shape == (N_SEEDS, CFG.n_steps)
    a_real, null_sd = _member_aucs(real, fam, 0.01, "coarse")
    assert np.all(a_real > 0.5 + 10 * null_sd), a_real
    a_null, _ = _member_aucs(null, fam, 0.01, "coarse")
    se = max(np.std(a_null, ddof=1), null_sd) / math.sqrt(N_SEEDS)
    assert abs(a_null.mean() - 0.5) < 4 * se, (a_null, se)
    assert abs(a_null.mean() - 0.5) < 0.12  # and not because the spread is huge
    # the shuffled-label loss stays at chance (log 2) while the real one drops below it
    # (only slightly: at most t the forward noise has erased the signal)
    null_loss, real_loss = float(np.mean(null.losses[:, -100:])), float(np.mean(real.losses[:, -100:]))
    assert null_loss > math.log(2) - 0.005
    assert real_loss < null_loss - 0.005


def test_learned_classifier_pytree_and_ensemble(trained):
    fam, real, _ = trained
    z = fam.sample(jax.random.PRNGKey(5), 7)
    t = jnp.full((7,), 0.05)
    m0 = real.member(0)
    lp = m0(z, t)
    assert lp.shape == (7,) and bool(jnp.all(lp <= 0))
    np.testing.assert_allclose(np.exp(np.asarray(lp)), np.asarray(m0.prob(z, t)), rtol=1e-5)
    ens = real.ensemble().logit(z, t)
    mean = np.mean([np.asarray(real.member(i).logit(z, t)) for i in range(N_SEEDS)], axis=0)
    np.testing.assert_allclose(np.asarray(ens), mean, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="i must be"):
        real.member(N_SEEDS)


def test_train_classifier_rejects_bad_input():
    fam = fam1d()
    with pytest.raises(ValueError, match="data"):
        G.train_classifier(jax.random.PRNGKey(0), fam, jnp.zeros((10, 3)), SCHED, CFG)
    with pytest.raises(ValueError, match="n_steps"):
        G.ClassifierConfig(n_steps=0)
    with pytest.raises(TypeError, match="config"):
        G.train_classifier(jax.random.PRNGKey(0), fam, jnp.zeros((10, 2)), SCHED, {"n_steps": 3})


# --------------------------------------------------------------------------------------
# guided score
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("w", [-1.0, float("nan"), float("inf")])
def test_bad_guidance_weight_rejected(w):
    fam = fam1d()
    clf = G.exact_linear_gaussian_classifier(fam, SCHED)
    with pytest.raises(ValueError, match="w"):
        G.guided_score(ExactScore(fam, SCHED), clf, w)
    with pytest.raises(ValueError, match="weight"):
        GuidedScore(ExactScore(fam, SCHED), clf, w)


def test_guided_score_is_base_plus_w_grad_and_clip():
    fam = fam1d(0.1)
    clf = G.exact_linear_gaussian_classifier(fam, SCHED)
    base = ExactScore(fam.replace(sigma_r=0.3), SCHED)
    z = fam.sample(jax.random.PRNGKey(1), 64) + 0.2
    t = jnp.full((64,), 0.05)
    grad = jax.jit(jax.vmap(jax.grad(lambda zz, tt: clf(zz, tt))))(z, t)
    call = jax.jit(lambda f, z, t: f(z, t))  # one compilation per score structure
    g = G.guided_score(base, clf, 2.5)
    np.testing.assert_allclose(np.asarray(call(g, z, t)), np.asarray(call(base, z, t) + 2.5 * grad),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda f, z, t: f.guidance_norm(z, t))(g, z, t)),
                               2.5 * np.linalg.norm(np.asarray(grad), axis=-1), rtol=1e-4)
    gc = G.guided_score(base, clf, 1e6, max_guidance_norm=3.0)
    term = np.asarray(call(gc, z, t) - call(base, z, t))
    assert np.all(np.linalg.norm(term, axis=-1) <= 3.0 * (1 + 1e-4))


def test_large_w_guided_sampling_stays_finite_and_reports_clip():
    """w = 1e4 with the norm clip: samples are finite (the sampler raises on NaN) and the
    profile reports that the clip was active; w = 0 equals the base sampler."""
    fam = fam1d(0.1)
    clf = G.exact_linear_gaussian_classifier(fam, SCHED)
    base = ExactScore(fam.replace(sigma_r=0.3), SCHED)
    key = jax.random.PRNGKey(7)
    g = G.guided_score(base, clf, 1e4, max_guidance_norm=50.0)
    z = sample(g, SCHED, key, 256, 2, method="euler_maruyama", n_steps=50)
    assert bool(jnp.all(jnp.isfinite(z)))
    prof = G.guidance_norm_profile(jax.random.PRNGKey(8), g, SCHED, z, [0.01, 0.1, 0.5])
    assert prof["max_norm_overall"] > 50.0 and 0 < prof["clip_fraction_overall"] <= 1
    z0 = sample(G.guided_score(base, clf, 0.0, max_guidance_norm=50.0), SCHED, key, 256, 2,
                method="euler_maruyama", n_steps=50)
    zb = sample(base, SCHED, key, 256, 2, method="euler_maruyama", n_steps=50)
    np.testing.assert_allclose(np.asarray(z0), np.asarray(zb), rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------
# filtering
# --------------------------------------------------------------------------------------
def test_oracle_and_classifier_detectors():
    fam = fam1d(0.1)
    z = fam.sample(jax.random.PRNGKey(9), 4000)
    kept, rate = G.filter_samples(z, G.OracleDetector(fam, c=1.0))
    # P(|N(0,1)| < 1) = 0.6827; binomial sd at n = 4000 is 0.0074 -> 4 sd
    assert rate == pytest.approx(0.6827, abs=0.03)
    x, y = fam.features(kept)
    assert bool(jnp.all(jnp.abs(y - fam.rule(x)) < 0.1))
    # coarse negatives are mostly rejected by both detectors, positives mostly accepted
    neg = G.make_negatives(jax.random.PRNGKey(10), fam, z, "coarse")
    clf = G.exact_linear_gaussian_classifier(fam, SCHED)
    det = G.ClassifierDetector(clf, t=SCHED.t_min)
    assert G.filter_samples(z, det)[1] > 0.9
    assert G.filter_samples(neg, det)[1] < 0.2
    assert G.filter_samples(neg, G.OracleDetector(fam, c=3.0))[1] < 0.2
    with pytest.raises(ValueError, match="threshold"):
        G.ClassifierDetector(clf, t=0.01, threshold=1.0)
    with pytest.raises(ValueError, match="c must"):
        G.OracleDetector(fam, c=0.0)
