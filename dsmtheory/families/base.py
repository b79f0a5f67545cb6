"""The interface every jointly-dependent (x, y) family implements (THEORY.md §2).

A family is an immutable pytree: its parameters are leaves, so families pass
through `jit`/`vmap` and sweeping a parameter re-uses a compilation.

Conventions (shared by every module of dsmtheory):
- a data point z has shape [..., dim]; `features(z)` splits it into the cause
  x [..., dx] and the effect y [..., dy] (for the embedded family this is a
  projection onto the feature frame, not a slice);
- t broadcasts against z's batch dimensions z.shape[:-1];
- `score(z, t, schedule)` is the exact ∇_z log p_t(z). The default takes
  `jax.grad` of `log_prob_t`; families with a closed form override it;
- `score_fn(schedule)` returns the `score_fn(z, t) -> array` callable pytree that
  samplers and metrics consume, the same signature a learned model has.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
from dsmtheory._pytree import PyTreeNode

from dsmtheory._validation import check_int, check_key, check_last_dim
from dsmtheory.schedules import Schedule

Array = jax.Array


class Family(PyTreeNode):
    """Base class: subclasses implement `sample`, `log_prob`, `log_prob_t`, `rule`,
    and the properties `dx`, `dy`, `sigma_r`. Override `score` when a closed form exists."""

    name: ClassVar[str] = "abstract"

    # Required of every subclass, as dataclass fields or properties (not declared here,
    # since a property on the base would become the default of a subclass's field):
    #   dx: int, dy: int      dimensions of the cause x and the effect y
    #   sigma_r: float        the rule's noise scale (y = f(x) + σ_r ε)

    # --- shape information ------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Dimension of z (dx + dy, or the ambient D for the embedded family)."""
        return self.dx + self.dy

    # --- the distribution -------------------------------------------------------------
    def sample(self, key: Array, n: int) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_prob(self, z: Array) -> Array:  # pragma: no cover - abstract
        """log p_0(z) of the clean data, shape z.shape[:-1]."""
        raise NotImplementedError

    def log_prob_t(self, z: Array, t: Array, schedule: Schedule) -> Array:  # pragma: no cover
        """Exact log p_t(z) of the noised marginal, shape z.shape[:-1]."""
        raise NotImplementedError

    def score(self, z: Array, t: Array, schedule: Schedule) -> Array:
        """Exact ∇_z log p_t(z) (default: autodiff of `log_prob_t`)."""
        self.check_inputs(z, t, schedule)
        t = jnp.broadcast_to(jnp.asarray(t, z.dtype), z.shape[:-1])
        return jax.grad(lambda zz: jnp.sum(self.log_prob_t(zz, t, schedule)))(z)

    def score_fn(self, schedule: Schedule) -> "ExactScore":
        """The exact score as a callable pytree `score_fn(z, t)` (the oracle for samplers)."""
        from dsmtheory.scores import ExactScore  # scores.py does not import families

        return ExactScore(self, schedule)

    def conditional_score(self, z: Array, t: Array, schedule: Schedule) -> Array:
        """∇_y log p_t(y | x) in feature coordinates, [..., dy].

        p_t(x) does not depend on y, so this is the y-part of the joint score
        (projected onto the y-directions of the frame for embedded families)."""
        s = self.score(z, t, schedule)
        return self.features(s)[1]

    # --- the rule -----------------------------------------------------------------
    def rule(self, x: Array) -> Array:  # pragma: no cover - abstract
        """f(x): [..., dx] -> [..., dy]."""
        raise NotImplementedError

    def features(self, z: Array) -> tuple[Array, Array]:
        """(x, y) = the cause and effect coordinates of z."""
        return z[..., : self.dx], z[..., self.dx : self.dx + self.dy]

    def rule_normal(self, z: Array) -> Array:
        """Unit vector(s) in z-space normal to the rule's graph y = f(x) at z's x, [..., dim].

        For dx = dy = 1 this is (−f'(x), 1)/‖·‖ (THEORY §4, score-level split).
        For dy > 1 or dx > 1 it is not a single vector; families with such shapes
        override or leave this undefined."""
        if self.dx != 1 or self.dy != 1:
            raise NotImplementedError(f"rule_normal needs dx = dy = 1, got dx={self.dx}, dy={self.dy}")
        x, _ = self.features(z)
        slope = jax.vmap(jax.grad(lambda u: self.rule(u[None])[0]))(x.reshape(-1)).reshape(x.shape)
        v = jnp.concatenate([-slope, jnp.ones_like(slope)], axis=-1)
        v = v / jnp.linalg.norm(v, axis=-1, keepdims=True)
        return self.embed_features(v)

    def embed_features(self, v: Array) -> Array:
        """Map a vector in (x, y) feature coordinates [..., dx+dy] into z-space [..., dim]."""
        return v

    # --- checks ---------------------------------------------------------------------
    def check_inputs(self, z: Array, t: Array | None = None, schedule: Schedule | None = None) -> None:
        check_last_dim("z", z, self.dim)
        if t is not None:
            t_shape = jnp.shape(t)
            batch = z.shape[:-1]
            try:
                jnp.broadcast_shapes(t_shape, batch)
            except ValueError as err:
                raise ValueError(
                    f"t of shape {t_shape} does not broadcast against z's batch shape {batch}"
                ) from err
            if schedule is not None:
                if not isinstance(schedule, Schedule):
                    raise TypeError(
                        f"schedule must be a dsmtheory Schedule (e.g. get_schedule('vp_linear')), "
                        f"got {type(schedule).__name__} {schedule!r}"
                    )
                schedule.check_t(t)

    def check_n(self, n, key=None) -> int:
        """Validate `n` (and the PRNG `key`, when given) for `sample`."""
        if key is not None:
            check_key("key", key)
        return check_int("n", n, minimum=1)

    def to_config(self) -> dict:  # pragma: no cover - subclasses fill in
        return {"name": self.name}


class ScalarRuleFamily(Family):
    """A family whose cause and effect are scalars (dx = dy = 1): the nonlinear rule and
    the embedded rule."""

    @property
    def dx(self) -> int:
        return 1

    @property
    def dy(self) -> int:
        return 1
