"""Tests of the synthetic image tasks (THEORY §7): renderers and analytic extractors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsmtheory.images import TASKS, get_task
from dsmtheory.images.extract import region_mask, windowed_centroid
from dsmtheory.images.render import disc, interval_profile, rect

N = 256
# Pixel noise for the robustness test, in intensity units (images in [0, 1]). The DSM
# data are z = 2·image − 1, so the noise left at t_min of the default VP-linear schedule,
# σ(t_min)/α(t_min) ≈ 0.01 in z, is 0.005 in intensity: 0.01 here is twice that.
PIXEL_NOISE = 0.01


@pytest.fixture(scope="module", params=sorted(TASKS))
def task_batch(request):
    task = get_task(request.param)
    key = jax.random.PRNGKey(7)
    images, x, y, nuisance = task.sample(key, N)
    x_hat, y_hat = task.extract(images)
    noisy = images + PIXEL_NOISE * jax.random.normal(jax.random.PRNGKey(8), images.shape)
    xn_hat, yn_hat = task.extract(noisy)
    as_np = lambda *a: [np.asarray(v, dtype=np.float64) for v in a]  # noqa: E731
    return task, *as_np(images, x, y, nuisance, x_hat, y_hat, xn_hat, yn_hat)


def test_clean_render_features_recovered_below_sigma_r_over_10(task_batch):
    task, images, x, y, _, x_hat, y_hat, _, _ = task_batch
    s = task.sigma_r
    slope = np.asarray(task.rule.derivative(jnp.asarray(x, jnp.float32)), dtype=np.float64)
    # y error directly; x error carried into y units through f' (its effect on the residual)
    assert np.max(np.abs(y_hat - y)) < s / 10
    assert np.max(np.abs(slope * (x_hat - x))) < s / 10
    r_true = y - np.asarray(task.rule.scalar(jnp.asarray(x, jnp.float32)))
    r_hat = y_hat - np.asarray(task.rule.scalar(jnp.asarray(x_hat, jnp.float32)))
    assert np.max(np.abs(r_hat - r_true)) < s / 10
    # the renders really are images of the scene: intensities in [0, ~1], something drawn
    assert images.min() > -1e-4 and images.max() < 1.05
    assert np.all(images.reshape(N, -1).std(axis=1) > 0.05)


def test_extraction_robust_to_pixel_noise_at_t_min_level(task_batch):
    task, _, x, y, _, _, _, xn_hat, yn_hat = task_batch
    s = task.sigma_r
    r_true = y - np.asarray(task.rule.scalar(jnp.asarray(x, jnp.float32)))
    r_noisy = yn_hat - np.asarray(task.rule.scalar(jnp.asarray(xn_hat, jnp.float32)))
    # measurement error adds in quadrature to the rule's own σ_r: an RMS error of 0.32 σ_r
    # inflates ρ by at most √(1 + 0.32²) − 1 < 5%
    assert np.sqrt(np.mean((r_noisy - r_true) ** 2)) < 0.32 * s
    rho_true = np.sqrt(np.mean(r_true**2)) / s
    rho_noisy = np.sqrt(np.mean(r_noisy**2)) / s
    assert abs(rho_noisy / rho_true - 1) < 0.06


def test_rule_violating_render_is_measured_as_violating(task_batch):
    """Renders with y = f(x) ± 5σ_r (first half +, second half −) are measured with
    |r| > 3σ_r, on clean images and with pixel noise."""
    task, _, x, _, nuisance, _, _, _, _ = task_batch
    s = task.sigma_r
    sign = np.where(np.arange(N) < N // 2, 1.0, -1.0)
    x, nuisance = jnp.asarray(x, jnp.float32), jnp.asarray(nuisance, jnp.float32)
    y_bad = task.rule.scalar(x) + jnp.asarray(sign * 5.0 * s, jnp.float32)
    images = task.render(x, y_bad, nuisance)
    noisy = images + PIXEL_NOISE * jax.random.normal(jax.random.PRNGKey(9), images.shape)
    for imgs in (images, noisy):
        x_hat, y_hat = task.extract(imgs)
        r = np.asarray(task.residual(x_hat, y_hat))
        assert np.all(sign * r > 3.0 * s), f"{task.name}: min signed r/σ_r = {np.min(sign * r) / s:.2f}"


def test_family_residual_has_sigma_r_scale():
    for name in sorted(TASKS):
        task = get_task(name)
        x, y, nuis = task.sample_features(jax.random.PRNGKey(1), 4000)
        r = np.asarray(task.residual(x, y))
        assert abs(np.std(r) / task.sigma_r - 1) < 0.05
        lo, hi = task.x_range
        assert np.all((np.asarray(x) >= lo - 1e-6) & (np.asarray(x) <= hi + 1e-6))
        n_lo, n_hi = np.asarray(task.nuisance_ranges).T
        assert np.all((np.asarray(nuis) >= n_lo) & (np.asarray(nuis) <= n_hi))
        # fine-grained: the trend f spans many σ_r over the x range
        f_lo, f_hi = task.f_range
        assert 15 < (f_hi - f_lo) / task.sigma_r < 30


def test_rect_pixel_sum_is_exact_area_and_smooth():
    size = 24
    u0, u1, v0, v1 = 0.213, 0.671, 0.3049, 0.4417

    @jax.jit
    def measured(a):
        area_sum, grad = jax.value_and_grad(lambda b: rect(u0, b, v0, v1, size, 0.5).sum())(a)
        return area_sum, grad, interval_profile(10.3, 10.6, 24, 0.5)

    area_sum, g, p = measured(jnp.asarray(u1))
    np.testing.assert_allclose(float(area_sum), (u1 - u0) * (v1 - v0) * size**2, rtol=2e-5)
    # d(pixel sum)/d(u1) = height in pixels · size (exact, since the sum is the area)
    np.testing.assert_allclose(float(g), (v1 - v0) * size**2, rtol=1e-4)
    # the profile of a sub-pixel interval is spread over neighbouring pixels (anti-aliased)
    p = np.asarray(p)
    assert p.max() < 0.3 and np.sum(p > 0.01) >= 3
    np.testing.assert_allclose(p.sum(), 0.3, rtol=1e-5)


def test_disc_centroid_is_centre_to_sub_millipixel():
    size = 24
    cv = jnp.linspace(0.40, 0.45, 41)
    mask = region_mask(size, (0.0, 1.0), (0.0, 1.0))
    cu_hat, cv_hat, _ = jax.jit(lambda c: windowed_centroid(disc(0.37, c, 0.06, size, 0.5), mask, 0.2))(cv)
    assert float(jnp.max(jnp.abs(cv_hat - cv))) * size < 3e-3
    assert float(jnp.max(jnp.abs(cu_hat - 0.37))) * size < 3e-3


def test_extractor_composed_with_renderer_is_locally_identity():
    """Renderer and extractor are both differentiable; d ŷ / d y = 1 for the exact bar masses."""
    task = get_task("ratio")
    nuis = jnp.asarray([0.1, 0.2])

    def measured_y(y):
        return task.extract(task.render(jnp.asarray(0.5), y, nuis))[1]

    np.testing.assert_allclose(float(jax.grad(measured_y)(jnp.asarray(0.33))), 1.0, rtol=1e-3)


def test_render_and_extract_accept_any_batch_shape(task_batch):
    task, images, x, y, nuisance, x_hat, _, _, _ = task_batch
    shape = (2, N // 2)  # same number of images: re-uses the compiled programs
    batched = task.render(x.reshape(shape), y.reshape(shape), nuisance.reshape(shape + (-1,)))
    assert batched.shape == shape + (task.size, task.size)
    np.testing.assert_allclose(np.asarray(batched).reshape(images.shape), images, atol=1e-6)
    xh, yh = task.extract(batched)
    assert xh.shape == shape and yh.shape == shape
    np.testing.assert_allclose(np.asarray(xh).reshape(-1), x_hat, atol=1e-6)
    # images <-> diffusion data: z = 2·image − 1 in [−1, 1]^P and back
    z = task.to_data(images)
    assert z.shape == (N, task.size**2)
    assert float(z.min()) >= -1.0 - 1e-4 and float(z.max()) <= 1.0 + 0.1
    np.testing.assert_allclose(np.asarray(task.from_data(z)), images, atol=1e-6)


def test_extractor_is_finite_on_blank_and_garbage_images(task_batch):
    task, images, *_ = task_batch
    third = N // 3
    junk = np.array(jax.random.normal(jax.random.PRNGKey(4), images.shape))
    junk[:third] = 0.0
    junk[third:2 * third] = 1.0
    x_hat, y_hat = task.extract(jnp.asarray(junk, jnp.float32))
    assert np.all(np.isfinite(np.asarray(x_hat))) and np.all(np.isfinite(np.asarray(y_hat)))
    assert np.all(np.isfinite(np.asarray(task.residual(x_hat, y_hat))))


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="name"):
        get_task("teapot")
    with pytest.raises(ValueError, match="size"):
        get_task("shadow", size=8)
    with pytest.raises(ValueError, match="sigma_r"):
        get_task("ratio", sigma_r=0.0)
    task = get_task("ratio")
    with pytest.raises(ValueError, match="nuisance"):
        task.render(jnp.zeros(3), jnp.zeros(3), jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match="images"):
        task.extract(jnp.zeros((3, 16, 16)))
    with pytest.raises(ValueError, match="z"):
        task.from_data(jnp.zeros((2, 100)))
    with pytest.raises(TypeError):
        task.sample(jax.random.PRNGKey(0), 2.5)
