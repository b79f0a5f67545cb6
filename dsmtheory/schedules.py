"""Forward noising processes z_t = α(t)·z_0 + σ(t)·ε  (THEORY.md §1).

A schedule is an immutable pytree (flax.struct) holding its parameters, so it
passes through `jit`/`vmap` and a sweep over, say, t_min re-uses one
compilation. Each schedule defines only log α(t) and σ²(t); everything else is
derived once, here, from those two (THEORY §1):

    f(t)  = d log α / dt                       (drift coefficient)
    g²(t) = dσ²/dt − 2 f(t) σ²(t)              (squared diffusion)
    reverse SDE:  dz = [f z − g² ∇log p_t] dt + g dw̄
    PF ODE:       dz/dt = f z − ½ g² ∇log p_t

The derivatives are taken by forward-mode autodiff (`jax.jvp`) of the closed
forms, so they are exact, and a new schedule needs two formulas and nothing else.

Every schedule carries its sampling interval [t_min, t_max]. The noise left at
t_min, σ(t_min)/α(t_min), is a floor on any rule error and is reported with
every result (`Schedule.noise_floor`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from dsmtheory._pytree import PyTreeNode

from dsmtheory._validation import check_in_range, check_int, check_positive, is_concrete

Array = jax.Array


class Schedule(PyTreeNode):
    """Base class. Subclasses define `log_alpha(t)`, `sigma_sq(t)` and the fields
    `t_min`, `t_max`; everything else comes from those."""

    name: ClassVar[str] = "abstract"

    # --- the two closed forms a subclass provides ---------------------------------
    def log_alpha(self, t: Array) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def sigma_sq(self, t: Array) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- derived quantities (THEORY §1) ---------------------------------------------
    def alpha(self, t: Array) -> Array:
        return jnp.exp(self.log_alpha(jnp.asarray(t)))

    def sigma(self, t: Array) -> Array:
        return jnp.sqrt(self.sigma_sq(jnp.asarray(t)))

    def noise_to_signal(self, t: Array) -> Array:
        """σ(t)/α(t): the standard deviation of the noise in data units."""
        return self.sigma(t) / self.alpha(t)

    def drift_coef(self, t: Array) -> Array:
        """f(t) = d log α / dt (exact, by forward-mode autodiff of log α)."""
        t = jnp.asarray(t, dtype=jnp.result_type(t, jnp.float32))
        return jax.jvp(self.log_alpha, (t,), (jnp.ones_like(t),))[1]

    def diffusion_sq(self, t: Array) -> Array:
        """g²(t) = dσ²/dt − 2 f(t) σ²(t)."""
        t = jnp.asarray(t, dtype=jnp.result_type(t, jnp.float32))
        s2, ds2 = jax.jvp(self.sigma_sq, (t,), (jnp.ones_like(t),))
        return ds2 - 2.0 * self.drift_coef(t) * s2

    def reverse_sde_drift(self, z: Array, t: Array, score: Array) -> Array:
        """Drift of the reverse SDE, f z − g² ∇log p_t, with t broadcast over z's batch dims."""
        t = jnp.asarray(t)[..., None]
        return self.drift_coef(t) * z - self.diffusion_sq(t) * score

    def pf_ode_drift(self, z: Array, t: Array, score: Array) -> Array:
        """Velocity of the probability-flow ODE, f z − ½ g² ∇log p_t."""
        t = jnp.asarray(t)[..., None]
        return self.drift_coef(t) * z - 0.5 * self.diffusion_sq(t) * score

    # --- forward process ------------------------------------------------------------
    def perturb(self, key: Array, z0: Array, t: Array) -> tuple[Array, Array]:
        """Draw z_t ~ p(z_t | z_0). Returns (z_t, ε) with z_t = α z_0 + σ ε."""
        eps = jax.random.normal(key, z0.shape, dtype=z0.dtype)
        t = jnp.asarray(t)[..., None]
        return self.alpha(t) * z0 + self.sigma(t) * eps, eps

    def prior_std(self) -> Array:
        """Std of the Gaussian the samplers start from at t_max.

        p_{t_max} ≈ N(0, α² Var(z_0) + σ²); we take Var(z_0) = 1 (the families are
        built at unit scale), which is exact for VP's N(0, I) and ≈ σ_max for VE/EDM.
        """
        return jnp.sqrt(self.alpha(self.t_max) ** 2 + self.sigma_sq(self.t_max))

    def prior_sample(self, key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
        return self.prior_std().astype(dtype) * jax.random.normal(key, shape, dtype=dtype)

    def time_grid(self, n_steps: int) -> Array:
        """Descending grid of n_steps + 1 times from t_max to t_min (uniform in t)."""
        n_steps = check_int("n_steps", n_steps, minimum=1)
        return jnp.linspace(self.t_max, self.t_min, n_steps + 1)

    def sample_training_times(self, key: Array, shape: tuple[int, ...]) -> Array:
        """t for DSM training: uniform on [t_min, t_max] unless the schedule says otherwise."""
        return jax.random.uniform(key, shape, minval=self.t_min, maxval=self.t_max)

    # --- bookkeeping ----------------------------------------------------------------
    def noise_floor(self) -> float:
        """σ(t_min)/α(t_min): noise (in data units) left where sampling stops."""
        return float(self.noise_to_signal(jnp.asarray(self.t_min, jnp.float32)))

    def check_t(self, t: Any, name: str = "t") -> None:
        """Raise ValueError if a concrete t lies outside [t_min, t_max]."""
        if is_concrete(t) and is_concrete(self.t_min):
            lo, hi = float(self.t_min), float(self.t_max)
            # a relative slack of 1e-6 accepts the float32 rounding of t_min/t_max themselves
            check_in_range(name, t, lo * (1 - 1e-6), hi * (1 + 1e-6))

    def with_t_min(self, t_min: float) -> "Schedule":
        return self.replace(t_min=t_min)

    def to_config(self) -> dict:
        cfg = {"name": self.name}
        for f in (fld.name for fld in dataclasses.fields(self)):
            v = getattr(self, f)
            cfg[f] = float(v) if np.ndim(v) == 0 else np.asarray(v).tolist()
        cfg["noise_floor"] = self.noise_floor() if is_concrete(self.t_min) else None
        return cfg

    def _check_interval(self) -> None:
        check_positive("t_min", self.t_min)
        check_positive("t_max", self.t_max)
        if is_concrete((self.t_min, self.t_max)) and np.any(np.asarray(self.t_min) >= np.asarray(self.t_max)):
            raise ValueError(f"t_min must be < t_max, got t_min={self.t_min}, t_max={self.t_max}")


class VPLinear(Schedule):
    """Variance-preserving, linear β (DDPM / score_sde VP-SDE).

    α(t) = exp(−½ ∫₀ᵗ β), β(t) = β0 + t(β1 − β0), σ = √(1 − α²).  Then f = −½β, g² = β.
    """

    beta0: float = 0.1
    beta1: float = 20.0
    t_min: float = 1e-3
    t_max: float = 1.0
    name: ClassVar[str] = "vp_linear"

    def __post_init__(self):
        check_positive("beta0", self.beta0)
        check_positive("beta1", self.beta1)
        self._check_interval()
        check_in_range("t_max", self.t_max, 0.0, 1.0)

    def log_alpha(self, t):
        return -0.5 * (self.beta0 * t + 0.5 * (self.beta1 - self.beta0) * t**2)

    def sigma_sq(self, t):
        # −expm1(2 log α) keeps σ² accurate near t = 0 where 1 − α² cancels.
        return -jnp.expm1(2.0 * self.log_alpha(t))


class VPCosine(Schedule):
    """Variance-preserving cosine schedule (Nichol & Dhariwal).

    α(t) = cos(((t+s)/(1+s))·π/2) / cos((s/(1+s))·π/2), σ = √(1 − α²).
    t_max < 1 because α(1) = 0 (log α = −∞ and f diverges there).
    """

    s: float = 0.008
    t_min: float = 1e-3
    t_max: float = 0.995
    name: ClassVar[str] = "vp_cosine"

    def __post_init__(self):
        check_positive("s", self.s)
        self._check_interval()
        check_in_range("t_max", self.t_max, 0.0, 1.0, inclusive=False)

    def log_alpha(self, t):
        half_pi = 0.5 * math.pi
        return jnp.log(jnp.cos((t + self.s) / (1 + self.s) * half_pi)) - jnp.log(
            jnp.cos(self.s / (1 + self.s) * half_pi)
        )

    def sigma_sq(self, t):
        return -jnp.expm1(2.0 * self.log_alpha(t))


class VE(Schedule):
    """Variance-exploding (SMLD): α = 1, σ(t) = σ_min (σ_max/σ_min)^t, t ∈ [t_min, 1].

    σ_max should be at least the largest pairwise distance in the data
    (Song & Ermon 2020); `VE.for_data` sets it that way.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_min: float = 1e-5
    t_max: float = 1.0
    name: ClassVar[str] = "ve"

    def __post_init__(self):
        check_positive("sigma_min", self.sigma_min)
        check_positive("sigma_max", self.sigma_max)
        if is_concrete((self.sigma_min, self.sigma_max)) and np.any(
            np.asarray(self.sigma_min) >= np.asarray(self.sigma_max)
        ):
            raise ValueError(f"sigma_min must be < sigma_max, got {self.sigma_min} >= {self.sigma_max}")
        self._check_interval()
        check_in_range("t_max", self.t_max, 0.0, 1.0)

    @classmethod
    def for_data(cls, data, **kwargs) -> "VE":
        """σ_max = the largest pairwise distance in (a subsample of) the data."""
        data = np.asarray(data, dtype=np.float64)
        sub = data[: min(len(data), 2000)]
        d2 = np.sum((sub[:, None, :] - sub[None, :, :]) ** 2, axis=-1)
        return cls(sigma_max=float(max(np.sqrt(d2.max()), 1.0)), **kwargs)

    def log_alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(t, jnp.float32)))

    def sigma_sq(self, t):
        return (self.sigma_min * (self.sigma_max / self.sigma_min) ** t) ** 2


class EDM(Schedule):
    """Karras et al. (2022): α = 1, σ(t) = t, so t *is* the noise level.

    Training noise levels σ ~ logNormal(p_mean, p_std) (clipped to [t_min, t_max]);
    sampling on the ρ-grid σ_i = (σ_max^{1/ρ} + i/N (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ.
    """

    t_min: float = 0.002
    t_max: float = 80.0
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2
    name: ClassVar[str] = "edm"

    def __post_init__(self):
        self._check_interval()
        check_positive("rho", self.rho)
        check_positive("p_std", self.p_std)

    def log_alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(t, jnp.float32)))

    def sigma_sq(self, t):
        return jnp.asarray(t) ** 2

    def time_grid(self, n_steps: int) -> Array:
        n_steps = check_int("n_steps", n_steps, minimum=1)
        i = jnp.arange(n_steps + 1) / n_steps
        inv = 1.0 / self.rho
        return (self.t_max**inv + i * (self.t_min**inv - self.t_max**inv)) ** self.rho

    def sample_training_times(self, key, shape):
        log_sigma = self.p_mean + self.p_std * jax.random.normal(key, shape)
        return jnp.clip(jnp.exp(log_sigma), self.t_min, self.t_max)


SCHEDULES: dict[str, type[Schedule]] = {
    "vp_linear": VPLinear,
    "vp_cosine": VPCosine,
    "ve": VE,
    "edm": EDM,
}
_ALIASES = {"vp": "vp_linear", "ddpm": "vp_linear", "cosine": "vp_cosine", "smld": "ve", "karras": "edm"}


def get_schedule(name: str, **params) -> Schedule:
    """Build a schedule by name ('vp_linear', 'vp_cosine', 've', 'edm'; aliases vp, ddpm,
    cosine, smld, karras). Unknown names raise ValueError listing the choices."""
    if not isinstance(name, str):
        raise TypeError(f"schedule name must be a string, got {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in SCHEDULES:
        raise ValueError(f"unknown schedule name {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[key](**params)


def schedule_from_config(cfg: dict) -> Schedule:
    cfg = dict(cfg)
    cfg.pop("noise_floor", None)
    return get_schedule(cfg.pop("name"), **cfg)


ScoreFn = Callable[[Array, Array], Array]
