"""Empirical measure of a training set (THEORY.md §2.4).

p̂ = (1/n) Σ_i δ_{z_i}. Its noised marginal is p̂_t(z) = (1/n) Σ_i N(z; α z_i, σ² I) and

    ∇log p̂_t(z) = (α Σ_i γ_i(z) z_i − z)/σ²,   γ_i = softmax_i(log w_i − ‖z − α z_i‖²/(2σ²)),

the exact minimiser of the empirical DSM objective (the "infinite-capacity,
perfectly-optimised" score). Sampling with it reproduces training points as
t_min → 0 (memorisation).

Training sets of different sizes n share one shape: `points` is [n_max, dim] and
`log_weights` holds log(1/n) for the n real rows and −inf for padding, so sweeping n
with a fixed n_max re-uses one compilation. The generating family (`base`) is carried
for its rule f, σ_r and feature map, which the metrics need.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from dsmtheory._validation import check_int, is_concrete
from dsmtheory.families._noise import noise_levels
from dsmtheory.families.base import Family
from dsmtheory.schedules import Schedule

Array = jax.Array
_LOG_2PI = math.log(2.0 * math.pi)


class EmpiricalMeasure(Family):
    """(1/n) Σ δ_{z_i} over a (padded) training set. Build with `from_samples`."""

    points: Array  # [n_max, dim]
    log_weights: Array  # [n_max]; log(1/n) for real rows, −inf for padding
    base: Family
    name: ClassVar[str] = "empirical"

    def __post_init__(self):
        if not isinstance(self.base, Family):
            raise TypeError(f"base must be a Family (the generating family), got {type(self.base).__name__}")
        if is_concrete((self.points, self.log_weights)):
            p, lw = np.shape(self.points), np.shape(self.log_weights)
            if len(p) != 2 or p[1] != self.base.dim:
                raise ValueError(f"points must have shape (n_max, dim={self.base.dim}), got {p}")
            if lw != (p[0],):
                raise ValueError(f"log_weights must have shape ({p[0]},) to match points, got {lw}")
            if not np.any(np.isfinite(np.asarray(self.log_weights))):
                raise ValueError("mask: at least one training point must be kept")

    @classmethod
    def from_samples(cls, points, base_family: Family, mask=None, n_max: int | None = None) -> "EmpiricalMeasure":
        """points [n, dim] from `base_family`; mask [n] (bool) keeps rows (default all);
        n_max >= n pads with zero-weight rows so that sets of different size share a shape."""
        if not isinstance(base_family, Family):
            raise TypeError(f"base_family must be a Family, got {type(base_family).__name__}")
        points = jnp.asarray(points)
        if points.ndim != 2 or points.shape[1] != base_family.dim:
            raise ValueError(f"points must have shape (n, dim={base_family.dim}), got {tuple(points.shape)}")
        n = points.shape[0]
        if mask is None:
            mask = np.ones(n, bool)
        mask = np.asarray(mask)
        if mask.shape != (n,) or mask.dtype != bool:
            raise ValueError(f"mask must be a boolean array of shape ({n},), got {mask.dtype} {mask.shape}")
        if n_max is not None:
            n_max = check_int("n_max", n_max, minimum=n)
            pad = n_max - n
            points = jnp.concatenate([points, jnp.zeros((pad, points.shape[1]), points.dtype)])
            mask = np.concatenate([mask, np.zeros(pad, bool)])
        n_kept = int(mask.sum())
        if n_kept == 0:
            raise ValueError("mask: at least one training point must be kept")
        log_w = np.where(mask, -math.log(n_kept), -np.inf)
        return cls(points=points, log_weights=jnp.asarray(log_w, dtype=points.dtype), base=base_family)

    # --- shapes and the rule (from the generating family) --------------------------------
    @property
    def dx(self) -> int:
        return self.base.dx

    @property
    def dy(self) -> int:
        return self.base.dy

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def sigma_r(self):
        return self.base.sigma_r

    @property
    def mask(self) -> Array:
        return jnp.isfinite(self.log_weights)

    @property
    def n(self) -> Array:
        """Number of real (unpadded) training points."""
        return jnp.sum(self.mask)

    def rule(self, x: Array) -> Array:
        return self.base.rule(x)

    def features(self, z: Array):
        return self.base.features(z)

    def embed_features(self, v: Array) -> Array:
        return self.base.embed_features(v)

    # --- the distribution ----------------------------------------------------------------
    def sample(self, key: Array, n: int) -> Array:
        """n draws from p̂: training points chosen uniformly (with replacement)."""
        n = self.check_n(n, key)
        idx = jax.random.categorical(key, self.log_weights, shape=(n,))
        return self.points[idx]

    def log_prob(self, z: Array) -> Array:
        raise NotImplementedError(
            "an empirical measure (sum of point masses) has no density at t = 0; use log_prob_t at t >= t_min"
        )

    def _logits(self, z: Array, alpha: Array, var: Array) -> Array:
        # ‖z − α z_i‖² by direct differences (not the matmul expansion, which loses
        # precision in float32 when σ is small), [..., n_max].
        d2 = jnp.sum((z[..., None, :] - alpha[..., None, None] * self.points) ** 2, axis=-1)
        return self.log_weights - 0.5 * d2 / var[..., None]

    def log_prob_t(self, z: Array, t: Array, schedule: Schedule) -> Array:
        """log (1/n) Σ_i N(z; α z_i, σ² I)."""
        self.check_inputs(z, t, schedule)
        return _empirical_log_prob(self, z, *noise_levels(schedule, z, t))

    def score(self, z: Array, t: Array, schedule: Schedule) -> Array:
        """(α Σ_i γ_i z_i − z)/σ² with γ = softmax of the log-weighted Gaussian kernels."""
        self.check_inputs(z, t, schedule)
        return _empirical_score(self, z, *noise_levels(schedule, z, t))

    def _log_prob_noised(self, z: Array, alpha: Array, var: Array) -> Array:
        return jax.nn.logsumexp(self._logits(z, alpha, var), axis=-1) - 0.5 * self.dim * (jnp.log(var) + _LOG_2PI)

    def _score_noised(self, z: Array, alpha: Array, var: Array) -> Array:
        resp = jax.nn.softmax(self._logits(z, alpha, var), axis=-1)
        denoised = resp @ self.points  # E[z_0 | z_t] under p̂ (Tweedie)
        return (alpha[..., None] * denoised - z) / var[..., None]

    def nearest_index(self, z: Array) -> Array:
        """Index of the nearest real training point to each z (for memorisation checks)."""
        d2 = jnp.sum((z[..., None, :] - self.points) ** 2, axis=-1)
        return jnp.argmin(jnp.where(self.mask, d2, jnp.inf), axis=-1)

    def to_config(self) -> dict:
        return {
            "name": self.name,
            "points": np.asarray(self.points).tolist(),
            "mask": np.asarray(self.mask).tolist(),
            "base": self.base.to_config(),
        }


_empirical_log_prob = jax.jit(EmpiricalMeasure._log_prob_noised)
_empirical_score = jax.jit(EmpiricalMeasure._score_noised)
