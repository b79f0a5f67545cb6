"""Shared plumbing for the families: noise levels at t, and jitted kernels.

Every family's noised density depends on the schedule only through α(t) and σ²(t).
The public methods (`score`, `log_prob_t`) validate their inputs, evaluate
(α, σ²) with one small jitted program per schedule type, and call a jitted kernel
of the family that takes (z, α, σ²). The kernel is compiled once per family type
and shape, whatever the schedule, and eager calls (outside any `jit`) do not pay
op-by-op dispatch. Inside an outer `jit` the nested `jit`s are inlined.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dsmtheory.schedules import Schedule

Array = jax.Array


@jax.jit
def _alpha_var(schedule: Schedule, t: Array) -> tuple[Array, Array]:
    return schedule.alpha(t), schedule.sigma_sq(t)


def noise_levels(schedule: Schedule, z: Array, t: Array) -> tuple[Array, Array]:
    """(α(t), σ²(t)) with t broadcast to z's batch shape z.shape[:-1], in z's dtype."""
    t = jnp.broadcast_to(jnp.asarray(t, z.dtype), z.shape[:-1])
    return _alpha_var(schedule, t)
