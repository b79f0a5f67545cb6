"""A 2-D rule family embedded in R^D with a Gaussian background (THEORY.md §2.5).

z = Q (x, y) + b, with Q [D, 2] an orthonormal frame (columns: the x and y feature
directions), (x, y) ~ base (any family with dx = dy = 1) and b ~ N(0, σ_b² P⊥),
P⊥ = I − Q Qᵀ, independent of (x, y). Because the frame is orthonormal, the
feature coordinates Qᵀz and the complement P⊥z are independent under p_t too:

    log p_t(z) = log p_t^base(Qᵀz) + log N(P⊥z; 0, (α²σ_b² + σ²) I_{D−2})
    ∇log p_t(z) = Q ∇log p_t^base(Qᵀz) − P⊥z / (α²σ_b² + σ²).

The DSM loss sums over all D directions while the rule lives in two of them: D is the
knob that dilutes the rule's share of the objective. D = 2 (no background) is allowed.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from dsmtheory._validation import check_int, check_positive, is_concrete
from dsmtheory.families.base import Family, ScalarRuleFamily
from dsmtheory.schedules import Schedule

Array = jax.Array
_LOG_2PI = math.log(2.0 * math.pi)


class Embedded(ScalarRuleFamily):
    """base (2-D) placed in R^D by the orthonormal frame `frame` [D, 2] plus N(0, σ_b²) background."""

    base: Family
    frame: Array  # [D, 2], orthonormal columns
    sigma_b: float = 1.0
    name: ClassVar[str] = "embedded"

    def __post_init__(self):
        if not isinstance(self.base, Family):
            raise TypeError(f"base must be a Family, got {type(self.base).__name__}")
        if self.base.dx != 1 or self.base.dy != 1:
            raise ValueError(f"base must be a 2-D (dx = dy = 1) family, got dx={self.base.dx}, dy={self.base.dy}")
        check_positive("sigma_b", self.sigma_b)
        if is_concrete(self.frame):
            q = np.asarray(self.frame, dtype=np.float64)
            if q.ndim != 2 or q.shape[1] != 2 or q.shape[0] < 2:
                raise ValueError(f"frame must have shape (D, 2) with D >= 2, got {q.shape}")
            tol = 1e-5 if np.asarray(self.frame).dtype == np.float32 else 1e-10
            if not np.allclose(q.T @ q, np.eye(2), atol=tol):
                raise ValueError("frame must have orthonormal columns (frameᵀ frame = I)")

    @classmethod
    def create(cls, base: Family, D: int, key: Array | None = None, frame=None, sigma_b: float = 1.0) -> "Embedded":
        """Place `base` in R^D. Give either `frame` [D, 2] (orthonormal) or a PRNG `key`
        (a random frame: QR of a D×2 Gaussian matrix, signs fixed so the frame is unique)."""
        D = check_int("D", D, minimum=2)
        check_positive("sigma_b", sigma_b)
        if frame is None:
            if key is None:
                raise ValueError("give a PRNG key (for a random frame) or an explicit frame")
            q, r = jnp.linalg.qr(jax.random.normal(key, (D, 2)))
            frame = q * jnp.sign(jnp.diagonal(r))  # Haar-distributed, independent of QR's sign convention
        else:
            frame = jnp.asarray(frame)
            if frame.shape != (D, 2):
                raise ValueError(f"frame must have shape (D, 2) = ({D}, 2), got {tuple(frame.shape)}")
        return cls(base=base, frame=frame, sigma_b=sigma_b)

    # --- shapes, features ------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.frame.shape[0]

    @property
    def sigma_r(self):
        return self.base.sigma_r

    def rule(self, x: Array) -> Array:
        return self.base.rule(x)

    def features(self, z: Array):
        v = z @ self.frame
        return v[..., 0:1], v[..., 1:2]

    def embed_features(self, v: Array) -> Array:
        return v @ self.frame.T

    def _split(self, z: Array) -> tuple[Array, Array]:
        """(Qᵀz [..., 2], ‖P⊥z‖² [...]); the complement is formed directly (no cancellation)."""
        v = z @ self.frame
        perp = z - v @ self.frame.T
        return v, jnp.sum(perp**2, axis=-1)

    # --- the distribution -------------------------------------------------------------------
    def sample(self, key: Array, n: int) -> Array:
        return _embedded_sample(self, key, self.check_n(n, key))

    def _sample(self, key: Array, n: int) -> Array:
        kb, kn = jax.random.split(key)
        v = self.base.sample(kb, n)
        eps = jax.random.normal(kn, (n, self.dim), dtype=v.dtype)
        background = self.sigma_b * (eps - (eps @ self.frame) @ self.frame.T)
        return v @ self.frame.T + background

    def _log_background(self, perp2: Array, var: Array) -> Array:
        k = self.dim - 2
        return -0.5 * (perp2 / var + k * (jnp.log(var) + _LOG_2PI))

    def log_prob(self, z: Array) -> Array:
        self.check_inputs(z)
        v, perp2 = self._split(z)
        var_b = jnp.asarray(self.sigma_b, z.dtype) ** 2
        return self.base.log_prob(v) + self._log_background(perp2, var_b)

    def _background_var(self, z, t, schedule):
        t = jnp.broadcast_to(jnp.asarray(t, z.dtype), z.shape[:-1])
        return t, schedule.alpha(t) ** 2 * jnp.asarray(self.sigma_b, z.dtype) ** 2 + schedule.sigma_sq(t)

    def log_prob_t(self, z: Array, t: Array, schedule: Schedule) -> Array:
        self.check_inputs(z, t, schedule)
        t, var_b = self._background_var(z, t, schedule)
        v, perp2 = self._split(z)
        return self.base.log_prob_t(v, t, schedule) + self._log_background(perp2, var_b)

    def score(self, z: Array, t: Array, schedule: Schedule) -> Array:
        """Q s_base(Qᵀz) − P⊥z/(α²σ_b² + σ²)."""
        self.check_inputs(z, t, schedule)
        t, var_b = self._background_var(z, t, schedule)
        v = z @ self.frame
        perp = z - v @ self.frame.T
        return self.base.score(v, t, schedule) @ self.frame.T - perp / var_b[..., None]

    def to_config(self) -> dict:
        return {
            "name": self.name,
            "base": self.base.to_config(),
            "D": int(self.dim),
            "frame": np.asarray(self.frame).tolist(),
            "sigma_b": float(self.sigma_b),
        }


_embedded_sample = jax.jit(Embedded._sample, static_argnums=2)
