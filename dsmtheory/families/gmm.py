"""Gaussian mixture over z = (x, y) (THEORY.md §2.3).

p_0(z) = Σ_k w_k N(z; μ_k, C_k) (full covariances). Under z_t = α z_0 + σ ε every
component stays Gaussian, so

    p_t(z) = Σ_k w_k N(z; α μ_k, α² C_k + σ² I),
    ∇log p_t(z) = Σ_k γ_k(z) · [−(α² C_k + σ² I)⁻¹ (z − α μ_k)],

with responsibilities γ_k = softmax_k(log w_k + log N_k(z)) (logsumexp, so no
underflow far from the components). Each C_k is diagonalised once, C_k = U_k Λ_k U_kᵀ,
and (α² C_k + σ² I)⁻¹ = U_k diag(1/(α² Λ_k + σ²)) U_kᵀ at every t.

The rule of a mixture is its regression function f(x) = E[y | x] under the clean
mixture: Σ_k γ_k(x) (μ_{k,y} + C_{k,yx} C_{k,xx}⁻¹ (x − μ_{k,x})), with γ_k(x) the
responsibilities of the x-marginals. σ_r is the within-component conditional std of
y given x, std of N(y | x, component k) = (C_{k,yy} − C_{k,yx} C_{k,xx}⁻¹ C_{k,xy})^{1/2};
it is computed and checked to be common to all components (and isotropic in y), or
taken as given by the caller (then it is only a label used by the metrics).
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from dsmtheory._pytree import field

from dsmtheory._validation import check_int, check_positive, is_concrete
from dsmtheory.families._noise import noise_levels
from dsmtheory.families.base import Family
from dsmtheory.rules import Rule
from dsmtheory.schedules import Schedule

Array = jax.Array
_LOG_2PI = math.log(2.0 * math.pi)


def conditional_y_std(means: np.ndarray, covs: np.ndarray, dx: int) -> np.ndarray:
    """Per-component conditional covariance of y | x, [K, dy, dy] (numpy, float64)."""
    covs = np.asarray(covs, dtype=np.float64)
    cxx, cxy, cyy = covs[:, :dx, :dx], covs[:, :dx, dx:], covs[:, dx:, dx:]
    return cyy - np.swapaxes(cxy, -1, -2) @ np.linalg.solve(cxx, cxy)


class GaussianMixture(Family):
    """Σ_k w_k N(μ_k, C_k) over z = (x, y) with x = z[..., :dx]. Build with `create`."""

    weights: Array  # [K], normalised
    means: Array  # [K, dim]
    covs: Array  # [K, dim, dim]
    sigma_r: float
    dx: int = field(pytree_node=False, default=1)
    name: ClassVar[str] = "gaussian_mixture"

    def __post_init__(self):
        check_positive("sigma_r", self.sigma_r)
        check_int("dx", self.dx, minimum=1)
        if is_concrete((self.weights, self.means, self.covs)):
            w, m, c = np.asarray(self.weights), np.asarray(self.means), np.asarray(self.covs)
            if w.ndim != 1:
                raise ValueError(f"weights must be 1-D [K], got shape {w.shape}")
            if m.ndim != 2 or m.shape[0] != w.shape[0]:
                raise ValueError(f"means must have shape (K, dim) = ({w.shape[0]}, dim), got {m.shape}")
            if c.shape != (m.shape[0], m.shape[1], m.shape[1]):
                raise ValueError(f"covs must have shape (K, dim, dim) = {(m.shape[0], m.shape[1], m.shape[1])}, got {c.shape}")
            if not 1 <= self.dx < m.shape[1]:
                raise ValueError(f"dx must be in [1, dim - 1] = [1, {m.shape[1] - 1}], got {self.dx}")
            check_positive("weights", w)
            if not np.allclose(c, np.swapaxes(c, -1, -2), rtol=1e-6, atol=1e-9):
                raise ValueError("covs must be symmetric")
            if np.min(np.linalg.eigvalsh(c)) <= 0:
                raise ValueError("covs must be positive definite")

    @classmethod
    def create(cls, weights, means, covs, dx: int = 1, sigma_r: float | None = None, rtol: float = 1e-6):
        """weights [K] (normalised here), means [K, dim], covs [K, dim, dim] (full), x = first dx coords.

        sigma_r: the within-component conditional std of y | x. When None it is computed
        and must be common to all components and isotropic in y (else ValueError naming
        sigma_r: pass it explicitly)."""
        w = np.asarray(weights, dtype=np.float64)
        m = np.asarray(means, dtype=np.float64)
        c = np.asarray(covs, dtype=np.float64)
        check_positive("weights", w)
        if w.ndim != 1:
            raise ValueError(f"weights must be 1-D [K], got shape {w.shape}")
        if m.ndim != 2 or m.shape[0] != w.shape[0]:
            raise ValueError(f"means must have shape (K, dim) = ({w.shape[0]}, dim), got {m.shape}")
        if c.shape != (m.shape[0], m.shape[1], m.shape[1]):
            raise ValueError(f"covs must have shape (K, dim, dim) = {(m.shape[0], m.shape[1], m.shape[1])}, got {c.shape}")
        dx = check_int("dx", dx, minimum=1, maximum=m.shape[1] - 1)
        if sigma_r is None:
            cond = conditional_y_std(m, c, dx)
            dy = m.shape[1] - dx
            var = np.trace(cond, axis1=-2, axis2=-1) / dy
            iso = np.allclose(cond, var[:, None, None] * np.eye(dy), rtol=rtol, atol=rtol * var.max())
            if not (iso and np.allclose(var, var[0], rtol=rtol)):
                raise ValueError(
                    "sigma_r: the conditional covariance of y | x differs between components or is not "
                    f"isotropic (per-component variances {var.tolist()}); pass sigma_r explicitly"
                )
            sigma_r = float(np.sqrt(var[0]))
        check_positive("sigma_r", sigma_r)
        return cls(weights=jnp.asarray(w / w.sum()), means=jnp.asarray(m), covs=jnp.asarray(c), sigma_r=sigma_r, dx=dx)

    @classmethod
    def clustered_rule(
        cls,
        x_centers,
        rule: Rule | Callable,
        sigma_x: float,
        sigma_r: float,
        weights=None,
        local_linear: bool = False,
    ) -> "GaussianMixture":
        """A discrete/clustered rule: K clusters at x_c with y = f(x_c) + σ_r ε inside each.

        x_centers: [K] or [K, dx]; rule: a Rule or callable [..., dx] -> [..., dy].
        Component k is N((x_c, f(x_c)), diag(σ_x² I, σ_r² I)): x and y independent inside a
        cluster, so E[y | x] is a smoothed step function through the points (x_c, f(x_c)).
        With local_linear=True, y = f(x_c) + J_f(x_c)(x − x_c) + σ_r ε inside the cluster
        (the tangent line), so E[y | x] follows the rule's slope too. Either way the
        within-component conditional std of y is σ_r."""
        check_positive("sigma_x", sigma_x)
        check_positive("sigma_r", sigma_r)
        xc = np.asarray(x_centers, dtype=np.float64)
        if xc.ndim == 1:
            xc = xc[:, None]
        if xc.ndim != 2:
            raise ValueError(f"x_centers must have shape (K,) or (K, dx), got {np.shape(x_centers)}")
        if not callable(rule):
            raise TypeError(f"rule must be a Rule or a callable, got {type(rule).__name__}")
        K, dx = xc.shape
        yc = np.asarray(rule(jnp.asarray(xc)), dtype=np.float64).reshape(K, -1)
        dy = yc.shape[1]
        covs = np.zeros((K, dx + dy, dx + dy))
        covs[:, :dx, :dx] = sigma_x**2 * np.eye(dx)
        covs[:, dx:, dx:] = sigma_r**2 * np.eye(dy)
        if local_linear:
            jac = np.asarray(jax.vmap(jax.jacfwd(lambda u: rule(u)))(jnp.asarray(xc))).reshape(K, dy, dx)
            covs[:, dx:, :dx] = sigma_x**2 * jac
            covs[:, :dx, dx:] = sigma_x**2 * np.swapaxes(jac, -1, -2)
            covs[:, dx:, dx:] += sigma_x**2 * jac @ np.swapaxes(jac, -1, -2)
        w = np.ones(K) if weights is None else np.asarray(weights, dtype=np.float64)
        return cls.create(w, np.concatenate([xc, yc], axis=1), covs, dx=dx, sigma_r=float(sigma_r))

    # --- shapes -----------------------------------------------------------------------------
    @property
    def dy(self) -> int:
        return self.means.shape[-1] - self.dx

    @property
    def n_components(self) -> int:
        return self.weights.shape[0]

    # --- the distribution -----------------------------------------------------------------
    def sample(self, key: Array, n: int) -> Array:
        return _gmm_sample(self, key, self.check_n(n, key))

    def _sample(self, key: Array, n: int) -> Array:
        kc, kn = jax.random.split(key)
        comp = jax.random.categorical(kc, jnp.log(self.weights), shape=(n,))
        chol = jnp.linalg.cholesky(self.covs)  # [K, d, d]
        eps = jax.random.normal(kn, (n, self.dim), dtype=self.means.dtype)
        return self.means[comp] + jnp.einsum("nij,nj->ni", chol[comp], eps)

    def _component_terms(self, z: Array, alpha: Array, var: Array):
        """log w_k + log N(z; α μ_k, α² C_k + σ² I) [..., K] and the per-component scores [..., K, d]."""
        lam, U = jnp.linalg.eigh(self.covs)  # [K, d], [K, d, d]
        a = alpha[..., None, None]
        lam_t = a**2 * lam + var[..., None, None]  # [..., K, d]
        r = jnp.einsum("...kd,kde->...ke", z[..., None, :] - a * self.means, U)  # coordinates in eigenbasis
        log_n = -0.5 * (jnp.sum(r**2 / lam_t, -1) + jnp.sum(jnp.log(lam_t), -1) + self.dim * _LOG_2PI)
        comp_scores = -jnp.einsum("...ke,kde->...kd", r / lam_t, U)
        return jnp.log(self.weights) + log_n, comp_scores

    def log_prob(self, z: Array) -> Array:
        self.check_inputs(z)
        one = jnp.ones(z.shape[:-1], z.dtype)
        return _gmm_log_prob(self, z, one, 0.0 * one)

    def log_prob_t(self, z: Array, t: Array, schedule: Schedule) -> Array:
        self.check_inputs(z, t, schedule)
        return _gmm_log_prob(self, z, *noise_levels(schedule, z, t))

    def score(self, z: Array, t: Array, schedule: Schedule) -> Array:
        """Σ_k γ_k(z) · (−(α² C_k + σ² I)⁻¹ (z − α μ_k)) (responsibilities by logsumexp)."""
        self.check_inputs(z, t, schedule)
        return _gmm_score(self, z, *noise_levels(schedule, z, t))

    def _log_prob_noised(self, z: Array, alpha: Array, var: Array) -> Array:
        return jax.nn.logsumexp(self._component_terms(z, alpha, var)[0], axis=-1)

    def _score_noised(self, z: Array, alpha: Array, var: Array) -> Array:
        logits, comp_scores = self._component_terms(z, alpha, var)
        resp = jax.nn.softmax(logits, axis=-1)
        return jnp.einsum("...k,...kd->...d", resp, comp_scores)

    # --- the rule ---------------------------------------------------------------------------
    def rule(self, x: Array) -> Array:
        """E[y | x] under the clean mixture (responsibility-weighted conditional means)."""
        dx = self.dx
        mx, my = self.means[:, :dx], self.means[:, dx:]
        cxx, cyx = self.covs[:, :dx, :dx], self.covs[:, dx:, :dx]
        diff = x[..., None, :] - mx  # [..., K, dx]
        sol = jnp.einsum("kij,...kj->...ki", jnp.linalg.inv(cxx), diff)  # C_xx⁻¹ (x − μ_x), [..., K, dx]
        _, logdet = jnp.linalg.slogdet(cxx)
        log_nx = -0.5 * (jnp.sum(diff * sol, -1) + logdet + dx * _LOG_2PI)
        resp = jax.nn.softmax(jnp.log(self.weights) + log_nx, axis=-1)
        cond_means = my + jnp.einsum("kyx,...kx->...ky", cyx, sol)
        return jnp.einsum("...k,...ky->...y", resp, cond_means)

    def to_config(self) -> dict:
        return {
            "name": self.name,
            "weights": np.asarray(self.weights).tolist(),
            "means": np.asarray(self.means).tolist(),
            "covs": np.asarray(self.covs).tolist(),
            "dx": int(self.dx),
            "sigma_r": float(self.sigma_r),
        }


_gmm_log_prob = jax.jit(GaussianMixture._log_prob_noised)
_gmm_score = jax.jit(GaussianMixture._score_noised)
_gmm_sample = jax.jit(GaussianMixture._sample, static_argnums=2)
