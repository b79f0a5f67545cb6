"""Linear-Gaussian rule (THEORY.md §2.1).

x ~ N(μ, Σx), y = A x + b + σ_r ε. The joint z = (x, y) is N(m, C) with

    m = [μ, Aμ + b],   C = [[Σx, Σx Aᵀ], [A Σx, A Σx Aᵀ + σ_r² I]],

so p_t = N(α m, α² C + σ² I) and ∇log p_t(z) = −(α² C + σ² I)⁻¹ (z − α m).
The inverse is applied through the eigendecomposition C = U Λ Uᵀ, which is
shared by all t: (α² C + σ² I)⁻¹ = U diag(1/(α² λ + σ²)) Uᵀ.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from dsmtheory._validation import check_finite, check_last_dim, check_positive, is_concrete
from dsmtheory.families.base import Family
from dsmtheory.schedules import Schedule

Array = jax.Array


class LinearGaussian(Family):
    """x ~ N(mu_x, cov_x), y = A x + b + sigma_r ε. Build with `LinearGaussian.create`."""

    mu_x: Array
    cov_x: Array
    A: Array
    b: Array
    sigma_r: float
    name: ClassVar[str] = "linear_gaussian"

    def __post_init__(self):
        check_positive("sigma_r", self.sigma_r)
        for name in ("mu_x", "cov_x", "A", "b"):
            check_finite(name, getattr(self, name))
        if is_concrete(self.cov_x):
            cov = np.asarray(self.cov_x)
            dx = np.shape(self.mu_x)[-1]
            if cov.shape[-2:] != (dx, dx):
                raise ValueError(f"cov_x must have shape ({dx}, {dx}) to match mu_x, got {cov.shape}")
            if np.asarray(self.A).shape[-1] != dx or np.asarray(self.A).shape[-2] != np.shape(self.b)[-1]:
                raise ValueError(
                    f"A must have shape (dy, dx) = ({np.shape(self.b)[-1]}, {dx}), got {np.asarray(self.A).shape}"
                )
            if cov.ndim == 2 and np.min(np.linalg.eigvalsh(0.5 * (cov + cov.T))) <= 0:
                raise ValueError("cov_x must be symmetric positive definite")

    @classmethod
    def create(cls, mu_x=(0.0,), cov_x=None, A=None, b=None, sigma_r: float = 0.1) -> "LinearGaussian":
        """Defaults: dx = len(mu_x), Σx = I, A = ones(1, dx), b = 0 (so y = Σ x_i + noise)."""
        mu_x = jnp.atleast_1d(jnp.asarray(mu_x, dtype=float))
        dx = mu_x.shape[-1]
        cov_x = jnp.eye(dx) if cov_x is None else jnp.atleast_2d(jnp.asarray(cov_x, dtype=float))
        A = jnp.ones((1, dx)) if A is None else jnp.atleast_2d(jnp.asarray(A, dtype=float))
        b = jnp.zeros((A.shape[0],)) if b is None else jnp.atleast_1d(jnp.asarray(b, dtype=float))
        return cls(mu_x=mu_x, cov_x=cov_x, A=A, b=b, sigma_r=sigma_r)

    # --- shapes -----------------------------------------------------------------------
    @property
    def dx(self) -> int:
        return self.mu_x.shape[-1]

    @property
    def dy(self) -> int:
        return self.b.shape[-1]

    # --- joint Gaussian (THEORY §2.1) -------------------------------------------------
    def joint_mean(self) -> Array:
        return jnp.concatenate([self.mu_x, self.A @ self.mu_x + self.b])

    def joint_cov(self) -> Array:
        sxa = self.cov_x @ self.A.T
        cyy = self.A @ sxa + self.sigma_r**2 * jnp.eye(self.dy)
        return jnp.block([[self.cov_x, sxa], [sxa.T, cyy]])

    def noised_moments(self, t: Array, schedule: Schedule) -> tuple[Array, Array]:
        """(mean, cov) of p_t: (α m, α² C + σ² I), batched over t's shape."""
        t = jnp.asarray(t)[..., None, None]
        a, s2 = schedule.alpha(t), schedule.sigma_sq(t)
        return a[..., 0] * self.joint_mean(), a**2 * self.joint_cov() + s2 * jnp.eye(self.dim)

    def _eig(self):
        return jnp.linalg.eigh(self.joint_cov())

    # --- the distribution ---------------------------------------------------------------
    def sample(self, key: Array, n: int) -> Array:
        n = self.check_n(n, key)
        kx, ky = jax.random.split(key)
        chol = jnp.linalg.cholesky(self.cov_x)
        x = self.mu_x + jax.random.normal(kx, (n, self.dx)) @ chol.T
        y = self.rule(x) + self.sigma_r * jax.random.normal(ky, (n, self.dy))
        return jnp.concatenate([x, y], axis=-1)

    def rule(self, x: Array) -> Array:
        return x @ self.A.T + self.b

    def log_prob(self, z: Array) -> Array:
        self.check_inputs(z)
        return _gauss_logpdf_eig(z, self.joint_mean(), *self._eig())

    def log_prob_t(self, z: Array, t: Array, schedule: Schedule) -> Array:
        self.check_inputs(z, t, schedule)
        lam, U = self._eig()
        t = jnp.asarray(t)[..., None]
        a, s2 = schedule.alpha(t), schedule.sigma_sq(t)
        return _gauss_logpdf_eig(z, a * self.joint_mean(), a**2 * lam + s2, U)

    def score(self, z: Array, t: Array, schedule: Schedule) -> Array:
        """Closed form −(α²C + σ²I)⁻¹ (z − α m), via the eigenbasis of C."""
        self.check_inputs(z, t, schedule)
        lam, U = self._eig()
        t = jnp.asarray(t)[..., None]
        a, s2 = schedule.alpha(t), schedule.sigma_sq(t)
        r = (z - a * self.joint_mean()) @ U
        return -(r / (a**2 * lam + s2)) @ U.T

    # --- conditional p_t(y | x) -----------------------------------------------------------
    def conditional_t(self, x: Array, t: Array, schedule: Schedule) -> tuple[Array, Array]:
        """Mean [..., dy] and covariance [..., dy, dy] of p_t(y_t | x_t) (Gaussian conditioning
        of N(α m, α²C + σ²I))."""
        check_last_dim("x", x, self.dx)
        schedule.check_t(t)
        mean, cov = self.noised_moments(t, schedule)
        dx = self.dx
        cxx, cxy, cyy = cov[..., :dx, :dx], cov[..., :dx, dx:], cov[..., dx:, dx:]
        gain = jnp.swapaxes(jnp.linalg.solve(cxx, cxy), -1, -2)  # C_yx C_xx⁻¹
        cond_mean = mean[..., dx:] + jnp.einsum("...ij,...j->...i", gain, x - mean[..., :dx])
        cond_cov = cyy - gain @ cxy
        return cond_mean, cond_cov

    def conditional_log_prob_t(self, z: Array, t: Array, schedule: Schedule) -> Array:
        x, y = self.features(z)
        m, c = self.conditional_t(x, t, schedule)
        lam, U = jnp.linalg.eigh(c)
        return _gauss_logpdf_eig(y, m, lam, U)

    def to_config(self) -> dict:
        return {
            "name": self.name,
            "mu_x": np.asarray(self.mu_x).tolist(),
            "cov_x": np.asarray(self.cov_x).tolist(),
            "A": np.asarray(self.A).tolist(),
            "b": np.asarray(self.b).tolist(),
            "sigma_r": float(self.sigma_r),
        }


def _gauss_logpdf_eig(z: Array, mean: Array, lam: Array, U: Array) -> Array:
    """log N(z; mean, U diag(lam) Uᵀ), batched over z/mean/lam leading dims."""
    r = jnp.einsum("...i,...ij->...j", z - mean, U)
    d = z.shape[-1]
    return -0.5 * (jnp.sum(r**2 / lam, -1) + jnp.sum(jnp.log(lam), -1) + d * math.log(2 * math.pi))
