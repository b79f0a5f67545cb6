"""Score functions behind one signature: `score(z, t) -> ∇_z log p_t(z)`.

Samplers, metrics and diagnostics take a *score function* and nothing else:
they cannot tell an exact score from a learned or a guided one. Score
functions here are callable pytrees (flax.struct), not closures, so a jitted
sampler receives them as ordinary arguments: a new set of trained parameters
with the same shapes re-uses the compiled sampler instead of re-tracing it.

- `ExactScore(family, schedule)`: the family's closed-form / quadrature score
  (the oracle; with an `EmpiricalMeasure` family it is the empirical-optimal
  score, THEORY §2.4).
- `LearnedScore(apply_fn, params, schedule, parameterisation)`: a network's
  output turned into a score (THEORY §3): ε-prediction s = −ε̂/σ, x0-prediction
  s = (α x̂0 − z)/σ², score-prediction s = output.
- `GuidedScore(base, guidance, weight)`: s + w·∇_z log c(z, t) (THEORY §6).
- `ScaledNetworkScore` etc. can be added the same way.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from dsmtheory._pytree import PyTreeNode, field

from dsmtheory._validation import check_choice, check_finite, check_positive
from dsmtheory.schedules import Schedule

Array = jax.Array

PARAMETERISATIONS = ("eps", "x0", "score")


class ScoreFunction(PyTreeNode):
    """Callable pytree: `self(z [..., D], t [...]) -> [..., D]`."""

    def __call__(self, z: Array, t: Array) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError


class ExactScore(ScoreFunction):
    """∇log p_t of a family under a schedule, exactly (THEORY §2)."""

    family: Any
    schedule: Schedule

    def __call__(self, z, t):
        return self.family.score(z, t, self.schedule)


def output_to_score(output: Array, z: Array, t: Array, schedule: Schedule, parameterisation: str) -> Array:
    """Convert a network output to a score (THEORY §3), with t broadcast over z's batch dims."""
    tt = jnp.asarray(t)[..., None]
    if parameterisation == "eps":  # z = α z0 + σ ε  ⇒  ∇log p(z|z0) = −ε/σ
        return -output / schedule.sigma(tt)
    if parameterisation == "x0":  # Tweedie: E[z0|z] = (z + σ² s)/α  ⇒  s = (α x̂0 − z)/σ²
        return (schedule.alpha(tt) * output - z) / schedule.sigma_sq(tt)
    if parameterisation == "score":
        return output
    raise ValueError(f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}")


def score_to_output(score: Array, z: Array, t: Array, schedule: Schedule, parameterisation: str) -> Array:
    """Inverse of `output_to_score`: the network output that represents a given score."""
    tt = jnp.asarray(t)[..., None]
    if parameterisation == "eps":
        return -schedule.sigma(tt) * score
    if parameterisation == "x0":
        return (z + schedule.sigma_sq(tt) * score) / schedule.alpha(tt)
    if parameterisation == "score":
        return score
    raise ValueError(f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}")


class LearnedScore(ScoreFunction):
    """A trained network as a score function.

    `apply_fn(params, z, t) -> output` is static (a flax Module's `apply` is hashable
    by the module's configuration), `params` are pytree leaves.
    """

    apply_fn: Callable = field(pytree_node=False)
    params: Any
    schedule: Schedule
    parameterisation: str = field(pytree_node=False, default="eps")

    def __post_init__(self):
        check_choice("parameterisation", self.parameterisation, PARAMETERISATIONS)

    def __call__(self, z, t):
        t = jnp.broadcast_to(jnp.asarray(t, z.dtype), z.shape[:-1])
        out = self.apply_fn(self.params, z, t)
        return output_to_score(out, z, t, self.schedule, self.parameterisation)


class GuidedScore(ScoreFunction):
    """s(z, t) + w · ∇_z log c(z, t) (classifier guidance, THEORY §6).

    `log_classifier(z, t) -> [...]` is a callable pytree (or static function) giving
    log P(conforms | z_t); its gradient is taken here. `max_guidance_norm`, when set,
    clips the norm of the added term w · ∇_z log c per sample, so that no w, however
    large, can make the guided score (and hence a sampler step) blow up; `guidance_norm`
    gives the unclipped norm, for reporting how often the clip is active
    (`dsmtheory.guidance.guidance_norm_profile`). w must be finite and >= 0."""

    base: Any
    log_classifier: Any
    weight: float
    max_guidance_norm: float | None = field(pytree_node=False, default=None)

    def __post_init__(self):
        check_finite("weight", self.weight)
        check_positive("weight", self.weight, allow_zero=True)
        if self.max_guidance_norm is not None:
            check_positive("max_guidance_norm", self.max_guidance_norm)

    def classifier_gradient(self, z, t):
        """∇_z log c(z, t), unweighted and unclipped."""
        t = jnp.broadcast_to(jnp.asarray(t, z.dtype), z.shape[:-1])
        return jax.grad(lambda zz: jnp.sum(self.log_classifier(zz, t)))(z)

    def guidance_norm(self, z, t):
        """‖w · ∇_z log c(z, t)‖ per point, before any clipping, [...]."""
        return self.weight * jnp.linalg.norm(self.classifier_gradient(z, t), axis=-1)

    def guidance_term(self, z, t):
        """w · ∇_z log c(z, t), with its norm clipped to max_guidance_norm when set."""
        term = self.weight * self.classifier_gradient(z, t)
        if self.max_guidance_norm is not None:
            norm = jnp.linalg.norm(term, axis=-1, keepdims=True)
            term = term * jnp.minimum(1.0, self.max_guidance_norm / jnp.maximum(norm, 1e-30))
        return term

    def __call__(self, z, t):
        return self.base(z, t) + self.guidance_term(z, t)


def as_score_function(score: Any) -> Callable:
    """Accept a ScoreFunction pytree or any plain callable score(z, t)."""
    if not callable(score):
        raise TypeError(f"score_fn must be callable as score_fn(z, t), got {type(score).__name__}")
    return score
