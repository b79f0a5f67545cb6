"""Samplers that turn any score function into samples (THEORY.md §1).

A sampler takes a score function `score_fn(z [..., D], t [...]) -> [..., D]`
and a schedule and nothing else: it cannot tell an exact score
(`family.score_fn(schedule)`) from a learned (`LearnedScore`) or a guided one
(`GuidedScore`). Four integrators of the reverse process are provided, all on
the schedule's own time grid `schedule.time_grid(n_steps)` (descending
t_max → t_min; EDM gives its ρ-grid):

- `euler_maruyama`: the reverse SDE dz = [f z − g² s] dt + g dw̄ (THEORY §1),
  Euler–Maruyama with noise on every step.
- `pf_heun`: the probability-flow ODE dz/dt = f z − ½ g² s, Heun's method
  (2nd order: an Euler predictor and a trapezoidal corrector, as in EDM).
- `ddpm`: ancestral sampling. Between grid times s < t the Gaussian posterior
  of the forward process, q(z_s | z_t, x0) with x0 replaced by the Tweedie
  estimate x̂0 = (z_t + σ_t² s(z_t, t)) / α_t, for general (α, σ):

      α_{t|s} = α_t / α_s,   σ²_{t|s} = σ_t² − α_{t|s}² σ_s²,
      mean    = (α_{t|s} σ_s² / σ_t²) z_t + (α_s σ²_{t|s} / σ_t²) x̂0,
      var     = σ²_{t|s} σ_s² / σ_t².

- `ddim`: z_s = α_s x̂0 + √(σ_s² − σ_η²) ε̂ + σ_η ξ with ε̂ = (z_t − α_t x̂0)/σ_t
  and σ_η = η·√var (var the DDPM posterior variance above). η = 0 (default) is the
  deterministic DDIM; η = 1 coincides with `ddpm`.

Every sampler starts from `schedule.prior_sample` (or a given `z_init`), runs the
steps with `lax.scan`, and optionally ends with one Tweedie denoising step at
t_min, x̂0 = (z + σ² s(z, t_min)) / α(t_min) (`denoise=True`). Without it the
output is z_{t_min} itself, whose noise σ(t_min)/α(t_min) (`schedule.noise_floor()`)
is a floor under any rule error.

Compilation. The compiled programs take the score function, the schedule and the
time grid as ARGUMENTS (pytrees/arrays, not closed over), with only (method, denoise)
static, so new network parameters, a new t_min, or another grid of the same length
re-use the compiled sampler (a new n_steps changes the grid's length and recompiles;
`padded_time_grid` avoids that for step-count sweeps). `sample_core` is the unchecked,
jitted core for use inside a caller's own `jit`/`vmap` (e.g. vmapped over a batch of
schedules with different t_min and their grids).

Non-finite output. The public functions raise `NonFiniteSamplesError` (a
ValueError naming the sampler, the step count and the schedule) when any output
is NaN/inf: NaN is never returned silently. `check_finite=False` turns the check
off (e.g. to look at a diverging sampler); the check also cannot run when these
functions are called inside a user's `jit`/`vmap` (the output is a tracer there),
in which case call `check_samples_finite` on the concrete result. `sample_ensemble`
vmaps over a stack of score functions and checks the concrete result itself.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from dsmtheory._pytree import PyTreeNode, field

from dsmtheory._validation import check_choice, check_in_range, check_int, check_key, is_concrete
from dsmtheory.schedules import Schedule

Array = jax.Array

METHODS = ("euler_maruyama", "pf_heun", "ddpm", "ddim")
_METHOD_ALIASES = {"em": "euler_maruyama", "sde": "euler_maruyama", "heun": "pf_heun", "ode": "pf_heun"}


class NonFiniteSamplesError(ValueError):
    """A sampler produced NaN or ±inf (the message names sampler, steps and schedule)."""


# ----------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------
def _canonical_method(method: str) -> str:
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, one of {list(METHODS)}, got {type(method).__name__}")
    key = _METHOD_ALIASES.get(method.lower(), method.lower())
    check_choice("method", key, METHODS)
    return key


def _check_score_and_schedule(score_fn: Any, schedule: Any) -> None:
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(z, t), got {type(score_fn).__name__}")
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a dsmtheory Schedule, got {type(schedule).__name__}")


class _StaticScore(PyTreeNode):
    """Wraps a plain callable (no pytree leaves) so that it can be passed to the jitted core.

    The callable is a static field: the compiled sampler is cached per callable object, so
    re-creating a closure recompiles. Score pytrees (dsmtheory.scores) avoid that."""

    fn: Callable = field(pytree_node=False)

    def __call__(self, z, t):
        return self.fn(z, t)


def as_pytree_score(score_fn: Any) -> Any:
    """Return `score_fn` itself if it is a pytree with leaves (a ScoreFunction, a
    jax.tree_util.Partial, ...), else wrap the plain callable as a static pytree."""
    leaves, treedef = jax.tree_util.tree_flatten(score_fn)
    if treedef.num_nodes == 1 and len(leaves) == 1 and leaves[0] is score_fn:
        return _StaticScore(score_fn)
    return score_fn


def _default_float():
    # float32 unless jax_enable_x64 is on
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _schedule_label(schedule: Schedule) -> str:
    try:
        t_min = float(schedule.t_min)
        return f"{schedule.name} (t_min={t_min:g}, noise floor σ/α={schedule.noise_floor():.3g})"
    except Exception:  # noqa: BLE001 - traced schedule: the name is all we can show
        return schedule.name


def check_samples_finite(samples: Array, *, method: str, n_steps: int, schedule: Schedule) -> Array:
    """Raise NonFiniteSamplesError if a concrete `samples` array holds NaN/inf; returns it."""
    if is_concrete(samples):
        arr = np.asarray(samples)
        bad = ~np.isfinite(arr)
        if bad.any():
            rows = int(np.any(bad.reshape(-1, arr.shape[-1]), axis=-1).sum())
            raise NonFiniteSamplesError(
                f"sampler {method!r} with n_steps={n_steps} under schedule {_schedule_label(schedule)} "
                f"produced non-finite values in {rows} of {arr.reshape(-1, arr.shape[-1]).shape[0]} samples; "
                "try more steps, a larger t_min, or check the score function"
            )
    return samples


# ----------------------------------------------------------------------------------
# one step of each integrator: (z, t, t_next, key) -> z_next   (t_next < t)
# ----------------------------------------------------------------------------------
def _bcast_t(t: Array, z: Array) -> Array:
    """t as an array of shape z.shape[:-1] (every score function accepts that)."""
    return jnp.broadcast_to(jnp.asarray(t, z.dtype), z.shape[:-1])


def tweedie_x0(score_fn, schedule: Schedule, z: Array, t: Array) -> Array:
    """E[z0 | z_t] = (z_t + σ_t² ∇log p_t(z_t)) / α_t (Tweedie), at a scalar time t; no checks
    (usable under jit/vmap; `tweedie_denoise` is the checked version at t_min)."""
    tb = _bcast_t(t, z)
    return (z + schedule.sigma_sq(t) * score_fn(z, tb)) / schedule.alpha(t)


def _step_euler_maruyama(score_fn, schedule, z, t, t_next, key, eta):
    del eta
    dt = t_next - t  # negative: integrating the reverse SDE backwards in time
    tb = _bcast_t(t, z)
    drift = schedule.reverse_sde_drift(z, tb, score_fn(z, tb))
    g = jnp.sqrt(schedule.diffusion_sq(t))
    noise = jax.random.normal(key, z.shape, z.dtype)
    return z + drift * dt + g * jnp.sqrt(-dt) * noise


def _step_pf_heun(score_fn, schedule, z, t, t_next, key, eta):
    del key, eta
    dt = t_next - t
    tb, tb_next = _bcast_t(t, z), _bcast_t(t_next, z)
    d1 = schedule.pf_ode_drift(z, tb, score_fn(z, tb))
    z_euler = z + dt * d1
    d2 = schedule.pf_ode_drift(z_euler, tb_next, score_fn(z_euler, tb_next))
    return z + 0.5 * dt * (d1 + d2)


def _posterior_coefficients(schedule: Schedule, t: Array, s: Array):
    """Coefficients of q(z_s | z_t, x0) = N(c_z z_t + c_x x0, var) for s < t (module docstring)."""
    a_t, a_s = schedule.alpha(t), schedule.alpha(s)
    s2_t, s2_s = schedule.sigma_sq(t), schedule.sigma_sq(s)
    a_ts = a_t / a_s
    s2_ts = s2_t - a_ts**2 * s2_s
    c_z = a_ts * s2_s / s2_t
    c_x = a_s * s2_ts / s2_t
    var = s2_ts * s2_s / s2_t
    return c_z, c_x, jnp.maximum(var, 0.0)


def _step_ddpm(score_fn, schedule, z, t, t_next, key, eta):
    del eta
    x0 = tweedie_x0(score_fn, schedule, z, t)
    c_z, c_x, var = _posterior_coefficients(schedule, t, t_next)
    noise = jax.random.normal(key, z.shape, z.dtype)
    return c_z * z + c_x * x0 + jnp.sqrt(var) * noise


def _step_ddim(score_fn, schedule, z, t, t_next, key, eta):
    x0 = tweedie_x0(score_fn, schedule, z, t)
    eps_hat = (z - schedule.alpha(t) * x0) / schedule.sigma(t)
    _, _, var = _posterior_coefficients(schedule, t, t_next)
    s2_eta = eta**2 * var
    noise = jax.random.normal(key, z.shape, z.dtype)
    dir_scale = jnp.sqrt(jnp.maximum(schedule.sigma_sq(t_next) - s2_eta, 0.0))
    return schedule.alpha(t_next) * x0 + dir_scale * eps_hat + jnp.sqrt(s2_eta) * noise


_STEPS: dict[str, Callable] = {
    "euler_maruyama": _step_euler_maruyama,
    "pf_heun": _step_pf_heun,
    "ddpm": _step_ddpm,
    "ddim": _step_ddim,
}

# Number of times each compiled sampler has been traced, keyed by method (tests use it
# to check that new parameters with equal shapes do not retrace).
TRACE_COUNTS: dict[str, int] = {m: 0 for m in METHODS}


@functools.partial(jax.jit, static_argnames=("method", "denoise"))
def _run(score_fn, schedule, key, z_init, eta, grid, *, method: str, denoise: bool):
    """The compiled sampler core: scan over the (descending) time grid (no checks).

    The grid is an argument: a new t_min, or a grid of the same length, re-uses the
    compilation. Repeated grid points are exact identity steps for every method
    (dt = 0; for DDPM/DDIM α_{t|t} = 1, σ²_{t|t} = 0), which `padded_time_grid` uses to run
    different step counts through one compiled program."""
    TRACE_COUNTS[method] += 1  # Python side effect: runs only while tracing
    step = _STEPS[method]
    grid = grid.astype(z_init.dtype)
    keys = jax.random.split(key, grid.shape[0] - 1)

    def body(z, inputs):
        t, t_next, k = inputs
        return step(score_fn, schedule, z, t, t_next, k, eta), None

    z, _ = jax.lax.scan(body, z_init, (grid[:-1], grid[1:], keys))
    if denoise:
        z = tweedie_x0(score_fn, schedule, z, grid[-1])
    return z


def sample_core(score_fn, schedule: Schedule, key: Array, z_init: Array, time_grid: Array, *,
                method: str = "euler_maruyama", denoise: bool = True, eta: float = 0.0) -> Array:
    """The jitted sampler core with no argument checks and no finiteness check (safe under a
    caller's jit/vmap): integrate from z_init along `time_grid` (descending). `score_fn` must
    be a pytree score (wrap plain callables with `as_pytree_score`). The caller is responsible
    for checking the output with `check_samples_finite`."""
    return _run(score_fn, schedule, key, z_init, jnp.asarray(eta, z_init.dtype), time_grid,
                method=_canonical_method(method), denoise=denoise)


def padded_time_grid(schedule: Schedule, n_steps: int, n_total: int) -> Array:
    """`schedule.time_grid(n_steps)` followed by n_total − n_steps copies of t_min: the same
    samples as n_steps steps for the deterministic samplers (the padding steps are
    identities), in a grid of fixed length n_total + 1 so that step-count sweeps share one
    compilation. (Stochastic samplers draw their per-step keys from a split of n_total
    keys, so their noise differs from an unpadded run's, not their distribution.)"""
    n_steps = check_int("n_steps", n_steps, minimum=1)
    n_total = check_int("n_total", n_total, minimum=n_steps)
    grid = schedule.time_grid(n_steps)
    return jnp.concatenate([grid, jnp.full((n_total - n_steps,), grid[-1], grid.dtype)])


def _check_grid(grid: Any, schedule: Schedule) -> Array:
    grid = jnp.asarray(grid)
    if grid.ndim != 1 or grid.shape[0] < 2:
        raise ValueError(f"time_grid must be a 1-D array of at least 2 times, got shape {grid.shape}")
    if is_concrete(grid):
        g = np.asarray(grid, dtype=np.float64)
        if not np.all(np.isfinite(g)) or np.any(np.diff(g) > 0):
            raise ValueError("time_grid must be finite and non-increasing (t_max ... t_min)")
        schedule.check_t(g, name="time_grid")
    return grid


# ----------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------
@jax.jit
def _denoise_jit(score_fn, schedule, z):
    t_min = jnp.asarray(schedule.t_min, z.dtype)
    return tweedie_x0(score_fn, schedule, z, t_min)


def tweedie_denoise(score_fn: Callable, schedule: Schedule, z: Array, *, check_finite: bool = True) -> Array:
    """The final denoising step alone: x̂0 = (z + σ² s(z, t_min)) / α at t = schedule.t_min
    (what `sample(..., denoise=True)` applies to z_{t_min})."""
    _check_score_and_schedule(score_fn, schedule)
    z = jnp.asarray(z)
    if z.ndim < 1:
        raise ValueError(f"z must have shape [..., dim], got shape {z.shape}")
    out = _denoise_jit(as_pytree_score(score_fn), schedule, z)
    if check_finite:
        check_samples_finite(out, method="tweedie_denoise", n_steps=0, schedule=schedule)
    return out


def _prepare(score_fn, schedule, key, n, dim, z_init, method, n_steps, eta):
    _check_score_and_schedule(score_fn, schedule)
    check_key("key", key)
    method = _canonical_method(method)
    n_steps = check_int("n_steps", n_steps, minimum=1)
    check_in_range("eta", eta, 0.0, 1.0)
    if z_init is None:
        n = check_int("n", n, minimum=1)
        dim = check_int("dim", dim, minimum=1)
        z_init = schedule.prior_sample(jax.random.fold_in(key, 0), (n, dim), dtype=_default_float())
    else:
        z_init = jnp.asarray(z_init)
        if z_init.ndim < 1:
            raise ValueError(f"z_init must have shape [..., dim], got shape {z_init.shape}")
        if n is not None and z_init.ndim == 2 and z_init.shape[0] != n:
            raise ValueError(f"z_init has {z_init.shape[0]} rows but n={n}")
        if dim is not None and z_init.shape[-1] != dim:
            raise ValueError(f"z_init must have last dimension dim={dim}, got shape {z_init.shape}")
        if not jnp.issubdtype(z_init.dtype, jnp.floating):
            z_init = z_init.astype(_default_float())
    return method, n_steps, z_init


def sample(
    score_fn: Callable,
    schedule: Schedule,
    key: Array,
    n: int | None,
    dim: int | None,
    *,
    method: str = "euler_maruyama",
    n_steps: int = 500,
    denoise: bool = True,
    z_init: Array | None = None,
    eta: float = 0.0,
    time_grid: Array | None = None,
    check_finite: bool = True,
) -> Array:
    """Draw n samples [n, dim] by integrating the reverse process of `schedule` with `score_fn`.

    method: 'euler_maruyama' (reverse SDE), 'pf_heun' (probability-flow ODE, Heun),
    'ddpm' (ancestral), 'ddim' (η = `eta`, 0 = deterministic). Aliases: em/sde, heun/ode.
    n_steps: number of steps on `schedule.time_grid(n_steps)`. denoise: end with the
    Tweedie step at t_min. z_init: start here instead of `schedule.prior_sample` (then
    n, dim may be None; any leading batch shape is allowed). time_grid: an explicit
    descending grid (then n_steps is ignored; e.g. `padded_time_grid`); the final
    denoising step is taken at its last time. Raises NonFiniteSamplesError on NaN/inf
    output unless check_finite=False.
    """
    if not isinstance(denoise, bool):
        raise TypeError(f"denoise must be a bool, got {type(denoise).__name__}")
    method, n_steps, z_init = _prepare(score_fn, schedule, key, n, dim, z_init, method, n_steps, eta)
    grid = schedule.time_grid(n_steps) if time_grid is None else _check_grid(time_grid, schedule)
    n_steps = int(grid.shape[0]) - 1
    eta_arr = jnp.asarray(eta, z_init.dtype)
    out = _run(as_pytree_score(score_fn), schedule, jax.random.fold_in(key, 1), z_init, eta_arr, grid,
               method=method, denoise=denoise)
    if check_finite:
        check_samples_finite(out, method=method, n_steps=n_steps, schedule=schedule)
    return out


def euler_maruyama(score_fn, schedule, key, n=None, dim=None, *, n_steps=500, denoise=True, z_init=None,
                   check_finite=True) -> Array:
    """Reverse-SDE Euler–Maruyama; see `sample`."""
    return sample(score_fn, schedule, key, n, dim, method="euler_maruyama", n_steps=n_steps, denoise=denoise,
                  z_init=z_init, check_finite=check_finite)


def pf_heun(score_fn, schedule, key, n=None, dim=None, *, n_steps=100, denoise=True, z_init=None,
            check_finite=True) -> Array:
    """Probability-flow ODE with Heun's 2nd-order method (2 score evaluations per step); see `sample`."""
    return sample(score_fn, schedule, key, n, dim, method="pf_heun", n_steps=n_steps, denoise=denoise,
                  z_init=z_init, check_finite=check_finite)


def ddpm(score_fn, schedule, key, n=None, dim=None, *, n_steps=500, denoise=True, z_init=None,
         check_finite=True) -> Array:
    """DDPM ancestral sampling with the general-(α, σ) posterior; see `sample`."""
    return sample(score_fn, schedule, key, n, dim, method="ddpm", n_steps=n_steps, denoise=denoise,
                  z_init=z_init, check_finite=check_finite)


def ddim(score_fn, schedule, key, n=None, dim=None, *, n_steps=100, denoise=True, z_init=None, eta=0.0,
         check_finite=True) -> Array:
    """DDIM (η = 0: deterministic; η = 1: equals DDPM); see `sample`."""
    return sample(score_fn, schedule, key, n, dim, method="ddim", n_steps=n_steps, denoise=denoise,
                  z_init=z_init, eta=eta, check_finite=check_finite)


SAMPLERS: dict[str, Callable] = {
    "euler_maruyama": euler_maruyama,
    "pf_heun": pf_heun,
    "ddpm": ddpm,
    "ddim": ddim,
}


def default_member_axes(score_fns: Any) -> Any:
    """in_axes for `sample_ensemble`: for a `LearnedScore` its params are stacked (axis 0) and
    its schedule is shared; a `GuidedScore` over a LearnedScore maps the base's params only.
    Other score pytrees have no default (pass `member_axes`)."""
    from dsmtheory.scores import GuidedScore, LearnedScore

    if isinstance(score_fns, LearnedScore):
        return score_fns.replace(params=0, schedule=None)
    if isinstance(score_fns, GuidedScore) and isinstance(score_fns.base, LearnedScore):
        none_classifier = jax.tree_util.tree_map(lambda _: None, score_fns.log_classifier)
        return score_fns.replace(base=default_member_axes(score_fns.base), log_classifier=none_classifier,
                                 weight=None)
    raise ValueError(
        f"no default member_axes for {type(score_fns).__name__}; pass member_axes, a pytree prefix of "
        "score_fns with 0 on stacked leaves and None on shared ones (as for jax.vmap in_axes)"
    )


@functools.partial(jax.jit, static_argnames=("method", "denoise", "n", "dim", "n_members", "axes_def",
                                             "axes_leaves"))
def _run_ensemble(score_fns, schedule, key, eta, same_noise, grid, *, method, denoise, n, dim, n_members,
                  axes_def, axes_leaves):
    """vmap of the sampler core over the members (one compilation per configuration)."""
    axes = jax.tree_util.tree_unflatten(axes_def, axes_leaves)
    dtype = _default_float()
    keys = jax.lax.cond(same_noise, lambda: jnp.stack([key] * n_members), lambda: jax.random.split(key, n_members))
    z_inits = jax.vmap(lambda k: schedule.prior_sample(jax.random.fold_in(k, 0), (n, dim), dtype=dtype))(keys)
    run_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    return jax.vmap(
        lambda s, k, z0: _run(s, schedule, k, z0, eta, grid, method=method, denoise=denoise),
        in_axes=(axes, 0, 0),
    )(score_fns, run_keys, z_inits)


def _member_count(axes: Any, score_fns: Any) -> int:
    """The common size of the mapped axes of `score_fns` (ValueError if they differ)."""
    sizes: set[int] = set()

    def collect(ax, subtree):
        if ax is not None:
            for leaf in jax.tree_util.tree_leaves(subtree):
                shape = jnp.shape(leaf)
                if len(shape) <= ax:
                    raise ValueError(f"a leaf of score_fns mapped on axis {ax} has shape {shape}")
                sizes.add(int(shape[ax]))
        return None

    try:
        jax.tree_util.tree_map(collect, axes, score_fns, is_leaf=lambda x: x is None)
    except ValueError as err:
        if "mapped on axis" in str(err):
            raise
        raise ValueError(f"member_axes must be a pytree prefix of score_fns: {err}") from err
    if len(sizes) != 1:
        raise ValueError(f"stacked leaves of score_fns must share one leading member count, got sizes {sorted(sizes)}")
    return sizes.pop()


def sample_ensemble(
    score_fns: Any,
    schedule: Schedule,
    key: Array,
    n: int,
    dim: int,
    *,
    method: str = "euler_maruyama",
    n_steps: int = 500,
    denoise: bool = True,
    member_axes: Any = None,
    eta: float = 0.0,
    same_noise: bool = False,
    check_finite: bool = True,
) -> Array:
    """Sample from a stack of score functions at once: returns [n_members, n, dim].

    `score_fns` is one score pytree whose stacked leaves carry a leading member axis, e.g. a
    `LearnedScore` whose params come from a vmapped training run. `member_axes` is the vmap
    in_axes prefix for it (default: `default_member_axes`). Members get independent noise
    (keys split from `key`) unless same_noise=True (common random numbers: the same prior
    draw and noise for every member, which reduces the variance of between-member contrasts).
    One compilation serves the whole ensemble.
    """
    _check_score_and_schedule(score_fns, schedule)
    if not isinstance(denoise, bool):
        raise TypeError(f"denoise must be a bool, got {type(denoise).__name__}")
    axes = default_member_axes(score_fns) if member_axes is None else member_axes
    n = check_int("n", n, minimum=1)
    dim = check_int("dim", dim, minimum=1)
    method = _canonical_method(method)
    n_steps = check_int("n_steps", n_steps, minimum=1)
    check_in_range("eta", eta, 0.0, 1.0)
    n_members = _member_count(axes, score_fns)
    axes_leaves, axes_def = jax.tree_util.tree_flatten(axes, is_leaf=lambda x: x is None)
    out = _run_ensemble(score_fns, schedule, key, jnp.asarray(eta, _default_float()), jnp.asarray(bool(same_noise)),
                        schedule.time_grid(n_steps), method=method, denoise=denoise, n=n, dim=dim,
                        n_members=n_members, axes_def=axes_def, axes_leaves=tuple(axes_leaves))
    if check_finite:
        check_samples_finite(out, method=method, n_steps=n_steps, schedule=schedule)
    return out
