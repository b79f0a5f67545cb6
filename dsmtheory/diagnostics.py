"""Score-level diagnostics: where the learned score is wrong (THEORY.md §4, last paragraph).

For a score s (exact, learned, guided: any `score(z, t)`), the error against the
exact score of a family, δ(z, t) = s(z, t) − ∇log p_t(z), is measured on
z_t ~ p_t (family samples z0, perturbed: z_t = α z0 + σ ε):

    Fisher divergence   F(t) = E‖δ‖²
    rule-normal part    F_⊥(t) = E⟨δ, n(z_t)⟩²
    the rest            F_∥(t) = E‖δ − ⟨δ, n⟩ n‖²        (F = F_⊥ + F_∥ exactly, n a unit vector)

n is the unit normal to the rule's graph, `family.rule_normal`: (−f'(x), 1)/‖·‖
(embedded into z-space for embedded families). At noise level t the noised
graph is {(α x, α f(x))}, whose normal at z_t is the data-space normal at the
data-space point z_t/α; so n(z_t) = family.rule_normal(z_t / α(t)). (For a
linear rule the normal is the same everywhere.) rule_normal needs dx = dy = 1.

The DSM excess loss is L − L* = E_t λ(t) F(t) with t from the training law
(THEORY §3, `dsmtheory.dsm`). `rule_normal_share` estimates E_t λ F_⊥ / E_t λ F
by Monte Carlo over the training law of t (exactly the share of the excess
carried by the rule-normal direction). For reference, an isotropic error would
give a share of 1/D; a share ≫ 1/D means the error concentrates across the
rule. `fisher_profile` gives F, F_⊥, F_∥ on a t-grid (same z0, ε at every t:
common random numbers across t) and a grid version of the share (λ-weighted
trapezoid in t, i.e. for t uniform on the grid's range).

Ensembles: pass `member_axes` (e.g. `dsmtheory.dsm.ensemble_axes(score)`) and the
score's stacked members are evaluated at once (vmap) on the SAME draws; every
output then has a leading member axis.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dsmtheory._validation import check_choice, check_int
from dsmtheory.dsm import WEIGHTINGS, loss_weight
from dsmtheory.samplers import as_pytree_score
from dsmtheory.schedules import Schedule

Array = jax.Array


def fisher_terms(score_fn, family, schedule: Schedule, z_t: Array, t: Array) -> tuple[Array, Array, Array]:
    """Per-point (‖δ‖², ⟨δ, n⟩², ‖δ − ⟨δ,n⟩n‖²) with δ = s − ∇log p_t, shapes z_t.shape[:-1]."""
    t = jnp.broadcast_to(jnp.asarray(t, z_t.dtype), z_t.shape[:-1])
    delta = score_fn(z_t, t) - family.score(z_t, t, schedule)
    normal = family.rule_normal(z_t / schedule.alpha(t)[..., None])
    along = jnp.sum(delta * normal, axis=-1)
    rest = delta - along[..., None] * normal
    return jnp.sum(delta**2, -1), along**2, jnp.sum(rest**2, -1)


def _draw(key, family, schedule, t, n):
    k0, ke = jax.random.split(key)
    z0 = jnp.asarray(family.sample(k0, n))
    eps = jax.random.normal(ke, z0.shape, z0.dtype)
    return z0, eps


@functools.partial(jax.jit, static_argnames=("n_per_t", "member_axes_def", "member_axes_leaves"))
def _profile(key, score_fn, family, schedule, t_grid, n_per_t, member_axes_def, member_axes_leaves):
    z0, eps = _draw(key, family, schedule, t_grid, n_per_t)

    def one_score(s):
        def at_t(t):
            z_t = schedule.alpha(t) * z0 + schedule.sigma(t) * eps
            return tuple(jnp.mean(v) for v in fisher_terms(s, family, schedule, z_t, t))

        return jax.lax.map(at_t, t_grid)

    if member_axes_def is None:
        return one_score(score_fn)
    axes = jax.tree_util.tree_unflatten(member_axes_def, member_axes_leaves)
    return jax.vmap(one_score, in_axes=(axes,))(score_fn)


@functools.partial(jax.jit, static_argnames=("n", "weighting", "member_axes_def", "member_axes_leaves"))
def _share(key, score_fn, family, schedule, n, weighting, sigma_data, member_axes_def, member_axes_leaves):
    kt, kd = jax.random.split(key)
    t = schedule.sample_training_times(kt, (n,))
    z0, eps = _draw(kd, family, schedule, t, n)
    z_t = schedule.alpha(t)[:, None] * z0 + schedule.sigma(t)[:, None] * eps
    w = loss_weight(t, schedule, weighting, sigma_data)

    def one_score(s):
        return tuple(jnp.mean(w * v) for v in fisher_terms(s, family, schedule, z_t, t))

    if member_axes_def is None:
        return one_score(score_fn)
    axes = jax.tree_util.tree_unflatten(member_axes_def, member_axes_leaves)
    return jax.vmap(one_score, in_axes=(axes,))(score_fn)


def _split_axes(member_axes):
    if member_axes is None:
        return None, ()
    leaves, treedef = jax.tree_util.tree_flatten(member_axes, is_leaf=lambda x: x is None)
    return treedef, tuple(leaves)


def _safe_ratio(num, den):
    """num/den, defined as 0 where den = 0 (the exact score has no error to share out)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _check_family(family, schedule):
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a dsmtheory Schedule, got {type(schedule).__name__}")
    if getattr(family, "dx", None) != 1 or getattr(family, "dy", None) != 1:
        raise ValueError(
            "the rule-normal split needs a family with dx = dy = 1 (one rule-normal direction), "
            f"got dx={getattr(family, 'dx', None)}, dy={getattr(family, 'dy', None)}"
        )


def fisher_profile(key, score_fn, family, schedule: Schedule, t_grid=None, *, n_t: int = 16,
                   n_per_t: int = 2048, weighting: str = "sigma_sq", sigma_data: float = 1.0,
                   member_axes: Any = None) -> dict:
    """F(t), F_⊥(t), F_∥(t) on a t-grid (default: `n_t` points geometric in t on
    [t_min, t_max]), from `n_per_t` draws of z_t ~ p_t (same z0, ε for every t).

    Returns NumPy arrays: 't' [T], 'total', 'normal', 'rest' ([T] or [E, T]),
    'weight' λ(t) [T], 'normal_share_grid' (scalar or [E]): Σ λ F_⊥ Δt / Σ λ F Δt
    (trapezoid in t), 0 when F ≡ 0."""
    _check_family(family, schedule)
    check_choice("weighting", weighting, WEIGHTINGS)
    n_per_t = check_int("n_per_t", n_per_t, minimum=2)
    if t_grid is None:
        n_t = check_int("n_t", n_t, minimum=2)
        t_grid = jnp.geomspace(float(schedule.t_min), float(schedule.t_max), n_t)
    t_grid = jnp.asarray(t_grid, jnp.float32)
    if t_grid.ndim != 1 or t_grid.shape[0] < 1:
        raise ValueError(f"t_grid must be a 1-D array of times, got shape {t_grid.shape}")
    schedule.check_t(np.asarray(t_grid), "t_grid")
    treedef, leaves = _split_axes(member_axes)
    total, normal, rest = _profile(key, as_pytree_score(score_fn), family, schedule, t_grid, n_per_t,
                                   treedef, leaves)
    total, normal, rest = (np.asarray(v, np.float64) for v in (total, normal, rest))
    t_np = np.asarray(t_grid, np.float64)
    lam = np.asarray(loss_weight(t_grid, schedule, weighting, sigma_data), np.float64)
    if len(t_np) > 1:
        dt = np.zeros_like(t_np)
        gaps = np.diff(t_np)
        dt[:-1] += 0.5 * gaps
        dt[1:] += 0.5 * gaps
        dt = np.abs(dt)
    else:
        dt = np.ones_like(t_np)
    share = _safe_ratio(np.sum(lam * dt * normal, -1), np.sum(lam * dt * total, -1))
    for name, v in (("total", total), ("normal", normal), ("rest", rest)):
        if not np.all(np.isfinite(v)):
            raise FloatingPointError(f"Fisher divergence '{name}' is not finite; the score returned NaN/inf")
    return {"t": t_np, "total": total, "normal": normal, "rest": rest, "weight": lam,
            "normal_share_grid": share}


def rule_normal_share(key, score_fn, family, schedule: Schedule, *, weighting: str = "sigma_sq",
                      sigma_data: float = 1.0, n: int = 8192, member_axes: Any = None) -> dict:
    """Share of the DSM excess E_t λ‖δ‖² carried by the rule-normal direction, t from the
    training law (Monte Carlo, n draws). Returns floats (or [E] arrays): 'excess' = E λ F,
    'normal' = E λ F_⊥, 'rest' = E λ F_∥, 'normal_share' = normal/excess (0 if excess = 0),
    'isotropic_share' = 1/D (what an error with no preferred direction would give)."""
    _check_family(family, schedule)
    check_choice("weighting", weighting, WEIGHTINGS)
    n = check_int("n", n, minimum=2)
    treedef, leaves = _split_axes(member_axes)
    total, normal, rest = _share(key, as_pytree_score(score_fn), family, schedule, n, weighting, sigma_data,
                                 treedef, leaves)
    total, normal, rest = (np.asarray(v, np.float64) for v in (total, normal, rest))
    if not (np.all(np.isfinite(total)) and np.all(np.isfinite(normal))):
        raise FloatingPointError("the Fisher excess is not finite; the score returned NaN/inf")
    scalar = lambda v: float(v) if np.ndim(v) == 0 else v  # noqa: E731
    return {"excess": scalar(total), "normal": scalar(normal), "rest": scalar(rest),
            "normal_share": scalar(_safe_ratio(normal, total)), "isotropic_share": 1.0 / family.dim}
