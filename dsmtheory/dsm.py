"""Denoising score matching: the loss, its irreducible part, and training (THEORY.md §3).

API summary
-----------
    cfg = TrainConfig(network=network_config("mlp", dim=2, width=64), n_steps=2000,
                      batch_size=128, lr=1e-3, parameterisation="eps", weighting="sigma_sq")
    res = train(key, data [n, D], schedule, cfg, family=fam, quiet=True)       # one model
    ens = train_ensemble(keys [E, 2], data [E, n_max, D] | [n_max, D], schedule, cfg,
                         n_valid=[E] | None, family=fam)                       # E models, one program
    s = learned_score(res)             # dsmtheory.scores.LearnedScore: s(z, t) -> [..., D]
    s_e = learned_score(ens)           # stacked LearnedScore (params with leading E axis);
    jax.vmap(f, in_axes=(ensemble_axes(s_e),))(s_e)   # run f(score) for every member at once
    s_3 = learned_score(index_ensemble(ens, 3))         # one member as a plain TrainResult
    excess_loss(key, s, fam, schedule, weighting=...)   # fresh-sample L, L*, L − L*, E w‖s−∇log p_t‖²

- `TrainResult`: params, ema_params (or None), history (dict of NumPy arrays, one
  entry per chunk of `log_every` steps; ensemble arrays have a leading E axis,
  'step' is shared), config, model, schedule, n_valid. `result.score_params` are
  the params a score uses (the EMA ones when EMA is on).
- Any flax module (or object with a hashable `apply(params, z, t)`) can be
  trained: pass `model=`; `config.network` may then be None.
- `TrainingDivergedError(ValueError)`: raised when the loss becomes non-finite,
  exceeds `divergence_factor` × its initial value, or the parameters become
  non-finite; the message names the step, the ensemble member and the config.
  No NaN is ever returned.

The loss (THEORY §3). With z_t = α z0 + σ ε and the conditional score
∇log p(z_t|z0) = −ε/σ,

    L(θ)  = E_t λ(t) E‖s_θ(z_t, t) + ε/σ‖²,     L* = E_t λ(t) E‖∇log p_t(z_t) + ε/σ‖²,
    L − L* = E_t λ(t) E‖s_θ − ∇log p_t‖²   (the excess; the cross term has mean 0).

‖·‖² sums over the D coordinates; E over the batch. Weightings λ(t):
  'sigma_sq' λ = σ²                   (the standard "ε-loss": σ²‖s + ε/σ‖² = ‖ε̂ − ε‖²)
  'uniform'  λ = 1
  'edm'      λ = σ² (1 + (σ/α)²/σ_data²): Karras et al.'s λ(σ̃) = (σ̃² + σ_data²)/(σ̃ σ_data)²
             on the x0-error, with σ̃ = σ/α, rewritten as a weight on the score error
             (x̂0 − x0 = (σ²/α)(s − ∇log p(z_t|z0))).
t is drawn by `schedule.sample_training_times` (uniform on [t_min, t_max], lognormal for EDM).

Excess during training. If `family` is given, a fixed evaluation set of
`eval_size` fresh family samples with fixed (t, ε) draws is made once; L* on it
is computed once from the exact score, and after every chunk L(θ) is evaluated
on the SAME draws (common random numbers), so `excess = L − L*` varies only
through θ. `fisher_excess = E λ‖s_θ − ∇log p_t‖²` on the same draws (the
excess's expectation without the zero-mean cross term; always ≥ 0) is
reported too. Minibatch training losses are on the training set.

Execution. A chunk of `log_every` steps is one jitted `lax.scan`; the Python
loop runs over chunks only (progress line, divergence check). The train state
is donated to each chunk. The ensemble is `vmap` of the single-model step over
a state with a leading E axis (params stacked), so XLA sees batched dot_generals.
Data, n_valid, the schedule, the evaluation set and the numeric hyperparameters
(`Hyper`: lr, warmup, n_steps, final_lr_frac, weight_decay, grad_clip value, EMA
decay, σ_data) are traced arguments: a sweep over n with one padded shape
[E, n_max, D], over t_min or over lr / n_steps reuses one compilation
(`compile_count()` reports how many chunk programs were compiled). A final chunk
shorter than `log_every` (n_steps not a multiple of it) compiles once more.
Training runs in float32 (data are cast), also under jax_enable_x64.

Minibatches: 'replacement' draws indices uniformly from [0, n_valid) every step;
'epoch' walks a random permutation of [0, n_valid) in floor(n_valid/B) batches
per epoch (the remainder of an epoch is dropped, as drop_last) and reshuffles each
epoch. Per-step randomness is `fold_in(train_key, step)`, so a model trained
alone and the same key inside an ensemble see identical batches.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dsmtheory._validation import check_choice, check_in_range, check_int, check_key, check_positive
from dsmtheory.networks import ModuleApply, NetworkConfig, network_config  # noqa: F401 (re-export)
from dsmtheory.schedules import Schedule
from dsmtheory.scores import PARAMETERISATIONS, LearnedScore, output_to_score

Array = jax.Array

WEIGHTINGS = ("sigma_sq", "uniform", "edm")
LR_SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("adam", "adamw")
SAMPLING = ("replacement", "epoch")


class TrainingDivergedError(ValueError):
    """Training produced a non-finite or exploding loss (or non-finite parameters)."""


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a DSM training run except the data, keys and schedule."""

    network: NetworkConfig | None = None
    parameterisation: str = "eps"
    weighting: str = "sigma_sq"
    sigma_data: float = 1.0  # EDM weighting only
    n_steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 100
    lr_schedule: str = "cosine"
    final_lr_frac: float = 0.01  # cosine decays to lr · final_lr_frac
    optimizer: str = "adam"
    weight_decay: float = 0.0  # adamw only
    grad_clip: float | None = 1.0  # global-norm clip; None = off
    ema_decay: float | None = None  # e.g. 0.999; None = no EMA
    sampling: str = "replacement"
    log_every: int = 500
    eval_size: int = 2048
    divergence_factor: float = 1e6

    def __post_init__(self):
        if self.network is not None and not isinstance(self.network, NetworkConfig):
            raise TypeError(f"network must be a NetworkConfig or None, got {type(self.network).__name__}")
        check_choice("parameterisation", self.parameterisation, PARAMETERISATIONS)
        check_choice("weighting", self.weighting, WEIGHTINGS)
        check_positive("sigma_data", self.sigma_data)
        check_int("n_steps", self.n_steps, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_positive("lr", self.lr)
        check_int("warmup", self.warmup, minimum=0)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_in_range("final_lr_frac", self.final_lr_frac, 0.0, 1.0)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        if self.grad_clip is not None:
            check_positive("grad_clip", self.grad_clip)
        if self.ema_decay is not None:
            check_in_range("ema_decay", self.ema_decay, 0.0, 1.0, inclusive=False)
        check_choice("sampling", self.sampling, SAMPLING)
        check_int("log_every", self.log_every, minimum=1)
        check_int("eval_size", self.eval_size, minimum=1)
        check_positive("divergence_factor", self.divergence_factor)
        if self.divergence_factor <= 1:
            raise ValueError(f"divergence_factor must be > 1, got {self.divergence_factor}")

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["network"] = None if self.network is None else self.network.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {sorted(unknown)}; known: {sorted(known)}")
        if d.get("network") is not None:
            d["network"] = NetworkConfig.from_dict(d["network"])
        return cls(**d)


# --------------------------------------------------------------------------------------
# The loss (THEORY §3)
# --------------------------------------------------------------------------------------
def loss_weight(t: Array, schedule: Schedule, weighting: str, sigma_data: float = 1.0) -> Array:
    """λ(t) of the DSM loss in score space (see module docstring)."""
    s2 = schedule.sigma_sq(t)
    if weighting == "sigma_sq":
        return s2
    if weighting == "uniform":
        return jnp.ones_like(s2)
    if weighting == "edm":
        nsr2 = s2 * jnp.exp(-2.0 * schedule.log_alpha(t))  # (σ/α)²
        return s2 * (1.0 + nsr2 / sigma_data**2)
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def conditional_score(eps: Array, t: Array, schedule: Schedule) -> Array:
    """∇log p(z_t | z0) = −ε/σ(t) for z_t = α z0 + σ ε."""
    return -eps / schedule.sigma(jnp.asarray(t))[..., None]


def dsm_loss_terms(apply_fn, params, z0, t, eps, schedule, parameterisation, weighting, sigma_data=1.0):
    """Per-example weighted DSM loss λ(t)‖s_θ(z_t,t) + ε/σ‖², shape z0.shape[:-1]."""
    tt = jnp.asarray(t)[..., None]
    z_t = schedule.alpha(tt) * z0 + schedule.sigma(tt) * eps
    s = output_to_score(apply_fn(params, z_t, t), z_t, t, schedule, parameterisation)
    err = s - conditional_score(eps, t, schedule)
    return loss_weight(t, schedule, weighting, sigma_data) * jnp.sum(err**2, axis=-1)


class EvalSet(NamedTuple):
    """Fixed draws for the excess loss: z_t, t, ∇log p(z_t|z0), exact ∇log p_t, λ(t)."""

    z_t: Array
    t: Array
    target: Array
    exact: Array
    weight: Array


# One-shot programs (init, evaluation draws) are compiled without LLVM's expensive
# optimisations: on CPU that cuts their compile time several-fold, and they run once.
QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def make_eval_set(key, family, schedule: Schedule, size: int, weighting: str, sigma_data: float = 1.0) -> EvalSet:
    """Draw z0 ~ family, t ~ training law, ε ~ N(0, I) once; store both score targets (jitted)."""
    return _make_eval_set_jit(key, family, schedule, size, weighting, sigma_data)


def _make_eval_set(key, family, schedule: Schedule, size: int, weighting: str, sigma_data: float = 1.0) -> EvalSet:
    k0, kt, ke = jax.random.split(key, 3)
    z0 = jnp.asarray(family.sample(k0, size), jnp.float32)
    t = schedule.sample_training_times(kt, (size,)).astype(jnp.float32)
    eps = jax.random.normal(ke, z0.shape, jnp.float32)
    tt = t[:, None]
    z_t = schedule.alpha(tt) * z0 + schedule.sigma(tt) * eps
    exact = family.score(z_t, t, schedule).astype(jnp.float32)
    return EvalSet(z_t, t, conditional_score(eps, t, schedule), exact, loss_weight(t, schedule, weighting, sigma_data))


_make_eval_set_jit = jax.jit(_make_eval_set, static_argnames=("size", "weighting"), compiler_options=QUICK_COMPILE)


def eval_losses(score_values: Array, ev: EvalSet) -> dict:
    """L, L*, L − L* and E λ‖s − ∇log p_t‖² of score values on the eval draws (CRN)."""
    loss = jnp.mean(ev.weight * jnp.sum((score_values - ev.target) ** 2, -1))
    loss_star = jnp.mean(ev.weight * jnp.sum((ev.exact - ev.target) ** 2, -1))
    fisher = jnp.mean(ev.weight * jnp.sum((score_values - ev.exact) ** 2, -1))
    return {"eval_loss": loss, "loss_star": loss_star, "excess": loss - loss_star, "fisher_excess": fisher}


@functools.partial(jax.jit, static_argnames=("n", "weighting"), compiler_options=QUICK_COMPILE)
def _excess_terms(key, score_fn, family, schedule, n, weighting, sigma_data):
    ev = _make_eval_set(key, family, schedule, n, weighting, sigma_data)
    s = score_fn(ev.z_t, ev.t)
    loss = ev.weight * jnp.sum((s - ev.target) ** 2, -1)
    loss_star = ev.weight * jnp.sum((ev.exact - ev.target) ** 2, -1)
    fisher = ev.weight * jnp.sum((s - ev.exact) ** 2, -1)
    return {"loss": loss, "loss_star": loss_star, "fisher_excess": fisher, "excess": loss - loss_star}


def excess_loss(key, score_fn, family, schedule: Schedule, *, weighting: str = "sigma_sq",
                sigma_data: float = 1.0, n: int = 8192) -> dict:
    """Fresh-sample estimate of L, L*, L − L* (common random numbers) and the Fisher
    excess E λ‖s − ∇log p_t‖² for any score function; with standard errors. Floats."""
    from dsmtheory.samplers import as_pytree_score  # lets plain callables through jit

    check_choice("weighting", weighting, WEIGHTINGS)
    n = check_int("n", n, minimum=2)
    per = _excess_terms(key, as_pytree_score(score_fn), family, schedule, n, weighting, sigma_data)
    out = {}
    for k, v in per.items():
        v = np.asarray(v, np.float64)
        if not np.all(np.isfinite(v)):
            raise FloatingPointError(f"excess_loss: '{k}' is not finite (the score returned NaN/inf)")
        out[k] = float(v.mean())
        out[k + "_stderr"] = float(v.std(ddof=1) / math.sqrt(len(v)))
    return out


# --------------------------------------------------------------------------------------
# Optimiser
# --------------------------------------------------------------------------------------
class Hyper(NamedTuple):
    """The numeric hyperparameters, passed to the compiled program as TRACED values, so a
    sweep over lr, n_steps, warmup, weight decay, clip, EMA decay or σ_data reuses one
    compilation (only the choices — optimiser, schedule kind, clip/EMA on or off,
    weighting, sampling, batch size, network — are compiled in)."""

    lr: Any
    warmup: Any
    n_steps: Any
    final_lr_frac: Any
    weight_decay: Any
    grad_clip: Any
    ema_decay: Any
    sigma_data: Any

    @classmethod
    def of(cls, config: "TrainConfig") -> "Hyper":
        f = lambda v: jnp.asarray(0.0 if v is None else v, jnp.float32)  # noqa: E731
        return cls(f(config.lr), f(config.warmup), f(config.n_steps), f(config.final_lr_frac),
                   f(config.weight_decay), f(config.grad_clip), f(config.ema_decay), f(config.sigma_data))


def _static_part(config: "TrainConfig") -> "TrainConfig":
    """The config with every `Hyper` field replaced by a placeholder (what the compiled
    program may depend on statically: None-ness of grad_clip / ema_decay, not values).
    The network config is dropped too: the compiled program holds the module itself."""
    return config.replace(network=None, lr=1.0, warmup=0, n_steps=1, final_lr_frac=0.0, weight_decay=0.0,
                          grad_clip=None if config.grad_clip is None else 1.0,
                          ema_decay=None if config.ema_decay is None else 0.5, sigma_data=1.0,
                          log_every=1, eval_size=1, divergence_factor=2.0)


def learning_rate_fn(config: TrainConfig, hyper: Hyper | None = None):
    """step -> lr: linear warmup over `warmup` steps, then constant or cosine decay to
    lr · final_lr_frac at n_steps."""
    h = Hyper.of(config) if hyper is None else hyper

    def fn(count):
        count = jnp.asarray(count, jnp.float32)
        ramp = jnp.where(h.warmup > 0, jnp.minimum(1.0, (count + 1.0) / jnp.maximum(h.warmup, 1.0)), 1.0)
        if config.lr_schedule == "constant":
            return h.lr * ramp
        progress = jnp.clip((count - h.warmup) / jnp.maximum(h.n_steps - h.warmup, 1.0), 0.0, 1.0)
        decay = h.final_lr_frac + (1 - h.final_lr_frac) * 0.5 * (1 + jnp.cos(jnp.pi * progress))
        return h.lr * ramp * decay

    return fn


def make_optimizer(config: TrainConfig, hyper: Hyper | None = None) -> optax.GradientTransformation:
    h = Hyper.of(config) if hyper is None else hyper
    lr = learning_rate_fn(config, h)
    opt = optax.adam(lr) if config.optimizer == "adam" else optax.adamw(lr, weight_decay=h.weight_decay)
    if config.grad_clip is not None:
        opt = optax.chain(optax.clip_by_global_norm(h.grad_clip), opt)
    return opt


# --------------------------------------------------------------------------------------
# The training step and chunk (single model; the ensemble is its vmap)
# --------------------------------------------------------------------------------------
class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    ema_params: Any  # () when EMA is off
    step: Array  # int32 scalar
    key: Array  # the model's training key; per-step keys are fold_in(key, step)
    perm: Array  # current epoch permutation ('epoch' sampling), else a dummy [1]


@dataclasses.dataclass(frozen=True)
class _Spec:
    """Static (hashed) part of the compiled chunk."""

    apply: ModuleApply
    config: TrainConfig
    ensemble: bool
    shared_data: bool
    with_eval: bool


def _batch_indices(state: TrainState, n_valid, n_max: int, config: TrainConfig, key):
    b = config.batch_size
    if config.sampling == "replacement":
        return jax.random.randint(key, (b,), 0, n_valid), state.perm
    per_epoch = jnp.maximum(n_valid // b, 1)
    epoch, pos = state.step // per_epoch, state.step % per_epoch

    def reshuffle(_):
        u = jax.random.uniform(jax.random.fold_in(state.key, -1 - epoch), (n_max,))
        u = jnp.where(jnp.arange(n_max) < n_valid, u, 2.0)  # padding sorts last
        return jnp.argsort(u).astype(jnp.int32)

    perm = jax.lax.cond(pos == 0, reshuffle, lambda _: state.perm, None)
    return jax.lax.dynamic_slice(perm, (pos * b,), (b,)), perm


def _train_step(state: TrainState, data, n_valid, schedule, hyper: Hyper, spec: _Spec):
    cfg = spec.config
    key = jax.random.fold_in(state.key, state.step)
    k_idx, k_t, k_eps = jax.random.split(key, 3)
    idx, perm = _batch_indices(state, n_valid, data.shape[0], cfg, k_idx)
    z0 = data[idx]
    t = schedule.sample_training_times(k_t, (cfg.batch_size,)).astype(data.dtype)
    eps = jax.random.normal(k_eps, z0.shape, data.dtype)

    def loss_fn(p):
        return jnp.mean(dsm_loss_terms(spec.apply, p, z0, t, eps, schedule, cfg.parameterisation,
                                       cfg.weighting, hyper.sigma_data))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = make_optimizer(cfg, hyper).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if cfg.ema_decay is not None:
        d = hyper.ema_decay
        ema = jax.tree_util.tree_map(lambda e, p: d * e + (1 - d) * p, ema, params)
    return TrainState(params, opt_state, ema, state.step + 1, state.key, perm), loss


# Scan unrolling for vmapped ensembles: measured on 2 CPU cores (issue 7, width 128, batch 32,
# E = 16) unroll=4 cuts the ensemble's per-step time by ~12% (2.24 -> 1.96 ms), while for a
# single model it costs ~15% (0.18 -> 0.21 ms), so only ensembles unroll. Same ops, same order.
ENSEMBLE_SCAN_UNROLL = 4


def _chunk_single(state, data, n_valid, schedule, eval_set, hyper, *, spec: _Spec, length: int):
    unroll = min(ENSEMBLE_SCAN_UNROLL, length) if spec.ensemble else 1
    state, losses = jax.lax.scan(lambda s, _: _train_step(s, data, n_valid, schedule, hyper, spec), state, None,
                                 length=length, unroll=unroll)
    p = state.ema_params if spec.config.ema_decay is not None else state.params
    finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(state.params)]))
    metrics = {"params_finite": finite}
    if spec.with_eval:
        s = output_to_score(spec.apply(p, eval_set.z_t, eval_set.t), eval_set.z_t, eval_set.t, schedule,
                            spec.config.parameterisation)
        metrics.update(eval_losses(s, eval_set))
    return state, losses, metrics


_COMPILES = {"count": 0}


def _run_chunk_impl(state, data, n_valid, schedule, eval_set, hyper, *, spec: _Spec, length: int):
    _COMPILES["count"] += 1  # runs at trace time only: counts compilations
    fn = functools.partial(_chunk_single, spec=spec, length=length)
    if spec.ensemble:
        fn = jax.vmap(fn, in_axes=(0, None if spec.shared_data else 0, 0, None, None, None))
    return fn(state, data, n_valid, schedule, eval_set, hyper)


_run_chunk = jax.jit(_run_chunk_impl, static_argnames=("spec", "length"), donate_argnums=(0,))


def compile_count() -> int:
    """How many chunk programs have been traced/compiled in this process."""
    return _COMPILES["count"]


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrainResult:
    params: Any
    ema_params: Any
    history: dict
    config: TrainConfig
    model: Any
    schedule: Schedule
    n_valid: Any  # int, or [E] array for an ensemble
    ensemble_size: int | None = None  # None for a single model

    @property
    def score_params(self):
        """The params a score should use: EMA params when EMA was on."""
        return self.ema_params if self.ema_params is not None else self.params

    @property
    def final(self) -> dict:
        """Last history entry of every recorded quantity (per model for an ensemble)."""
        return {k: np.asarray(v)[..., -1] for k, v in self.history.items()}


def index_ensemble(result: TrainResult, i: int) -> TrainResult:
    """Member i of an ensemble result, as a single-model TrainResult."""
    if result.ensemble_size is None:
        raise ValueError("index_ensemble needs an ensemble result (from train_ensemble)")
    i = check_int("i", i, minimum=0, maximum=result.ensemble_size - 1)
    take = lambda tree: None if tree is None else jax.tree_util.tree_map(lambda x: x[i], tree)  # noqa: E731
    hist = {k: (v if k == "step" else np.asarray(v)[i]) for k, v in result.history.items()}
    return dataclasses.replace(result, params=take(result.params), ema_params=take(result.ema_params),
                               history=hist, n_valid=int(np.asarray(result.n_valid)[i]), ensemble_size=None)


def learned_score(result, schedule: Schedule | None = None, parameterisation: str | None = None, *,
                  use_ema: bool = True) -> LearnedScore:
    """A trained model as a `LearnedScore`.

    `result` is a TrainResult (schedule/parameterisation default to the training ones)
    or a (model, params) pair (then both are required). For an ensemble the params
    keep their leading E axis: vmap over members with `ensemble_axes(score)`."""
    if isinstance(result, TrainResult):
        params = result.score_params if use_ema else result.params
        schedule = result.schedule if schedule is None else schedule
        parameterisation = result.config.parameterisation if parameterisation is None else parameterisation
        model = result.model
    else:
        try:
            model, params = result
        except (TypeError, ValueError) as err:
            raise TypeError("learned_score takes a TrainResult or a (model, params) pair") from err
        if schedule is None or parameterisation is None:
            raise ValueError("with a (model, params) pair, schedule and parameterisation are required")
    apply = model if isinstance(model, ModuleApply) else ModuleApply(model)
    return LearnedScore(apply_fn=apply, params=params, schedule=schedule, parameterisation=parameterisation)


def ensemble_axes(score: LearnedScore) -> LearnedScore:
    """`in_axes` for jax.vmap over the members of a stacked LearnedScore (params axis 0)."""
    # None as a prefix marks the whole schedule subtree unbatched
    return score.replace(params=jax.tree_util.tree_map(lambda _: 0, score.params), schedule=None)


# --------------------------------------------------------------------------------------
# Training drivers
# --------------------------------------------------------------------------------------
def _resolve_model(model, config: TrainConfig, schedule: Schedule, dim: int):
    if model is None:
        if config.network is None:
            raise ValueError("give either config.network (a NetworkConfig) or model= (a flax module)")
        if config.network.dim != dim:
            raise ValueError(f"config.network.dim = {config.network.dim} but the data have dimension {dim}")
        model = config.network.build(schedule)
    return model


def _check_data(data, n_valid, config: TrainConfig, ensemble: bool):
    data = jnp.asarray(data)
    if not jnp.issubdtype(data.dtype, jnp.floating):
        raise TypeError(f"data must be a float array, got dtype {data.dtype}")
    data = data.astype(jnp.float32)  # training runs in float32 (also under jax_enable_x64)
    if data.ndim not in ((2, 3) if ensemble else (2,)):
        raise ValueError(f"data must have shape {'[E, n_max, D] or [n_max, D]' if ensemble else '[n, D]'}, "
                         f"got {data.shape}")
    if not np.all(np.isfinite(np.asarray(data))):
        raise ValueError("data contain NaN or infinite values")
    n_max = data.shape[-2]
    n_valid = np.asarray(n_max if n_valid is None else n_valid)
    if not np.issubdtype(n_valid.dtype, np.integer):
        raise TypeError(f"n_valid must be integers, got {n_valid.dtype}")
    if np.any(n_valid < 1) or np.any(n_valid > n_max):
        raise ValueError(f"n_valid must lie in [1, {n_max}] (the padded training-set size), got {n_valid}")
    if config.sampling == "epoch" and np.any(n_valid < config.batch_size):
        raise ValueError(f"epoch sampling needs n_valid >= batch_size = {config.batch_size}, got {n_valid}")
    return data, n_valid


@functools.partial(jax.jit, static_argnames=("model", "config", "n_max", "n_models"), compiler_options=QUICK_COMPILE)
def _init_states(keys, model, data_one, schedule, config: TrainConfig, n_max: int, n_models: int | None):
    """Initial train state(s), jitted (eager flax init dispatches hundreds of small ops)."""
    init = functools.partial(_init_state, model=model, data_one=data_one, schedule=schedule, config=config,
                             n_max=n_max)
    return init(keys) if n_models is None else jax.vmap(init)(keys)


def _init_state(key, model, data_one, schedule, config: TrainConfig, n_max: int):
    k_init, k_train = jax.random.split(key)
    z1 = data_one[:1]
    t1 = jnp.full((1,), schedule.t_max, z1.dtype)
    params = model.module.init(k_init, z1, t1)
    opt_state = make_optimizer(config).init(params)
    # a copy: the state is donated to each chunk and must not hold one buffer twice
    ema = jax.tree_util.tree_map(jnp.copy, params) if config.ema_decay is not None else ()
    perm = jnp.zeros((n_max if config.sampling == "epoch" else 1,), jnp.int32)
    return TrainState(params, opt_state, ema, jnp.zeros((), jnp.int32), k_train, perm)


def place_ensemble(state, data, n_valid, eval_set=None):
    """The inputs of an ensemble chunk placed for the member axis over all devices
    (`dsmtheory.distributed`): the state and n_valid [E] sharded by member, the data
    sharded if it has one training set per member ([E, n_max, D]) and replicated if
    shared ([n_max, D]), the evaluation set replicated. Identity on one device."""
    from dsmtheory import distributed

    mesh = distributed.ensemble_mesh()
    state = distributed.shard_ensemble(state, mesh)
    data = distributed.replicate(data, mesh) if data.ndim == 2 else distributed.shard_ensemble(data, mesh)
    n_valid = distributed.shard_ensemble(n_valid, mesh)
    if eval_set is not None:
        eval_set = distributed.replicate(eval_set, mesh)
    return state, data, n_valid, eval_set


def _check_divergence(losses, metrics, step0, ref, config: TrainConfig, ensemble: bool):
    losses = np.asarray(losses).reshape(-1, np.shape(losses)[-1])  # [E or 1, length]
    bad = ~np.isfinite(losses) | (np.abs(losses) > config.divergence_factor * ref[:, None])
    pfin = np.asarray(metrics["params_finite"]).reshape(-1)
    for m in range(losses.shape[0]):
        if bad[m].any() or not pfin[m]:
            j = int(np.argmax(bad[m])) if bad[m].any() else losses.shape[1] - 1
            who = f" (ensemble member {m})" if ensemble else ""
            why = ("non-finite parameters" if not bad[m].any()
                   else f"loss = {losses[m, j]:.4g} (initial loss {ref[m]:.4g}, "
                        f"divergence_factor {config.divergence_factor:g})")
            raise TrainingDivergedError(
                f"DSM training diverged at step {step0 + j + 1}{who}: {why}. config: {config.to_dict()}")


def _train_impl(keys, data, n_valid, schedule, config, model, family, quiet, ensemble, eval_key, shard=False):
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a dsmtheory Schedule, got {type(schedule).__name__}")
    data, n_valid_np = _check_data(data, n_valid, config, ensemble)
    dim, n_max = data.shape[-1], data.shape[-2]
    model = _resolve_model(model, config, schedule, dim)
    apply = ModuleApply(model)
    shared = ensemble and data.ndim == 2
    if family is not None and family.dim != dim:
        raise ValueError(f"family.dim = {family.dim} but the data have dimension {dim}")

    data_one = data if (not ensemble or shared) else data[0]
    if ensemble:
        keys = jnp.asarray(keys)
        if keys.ndim != 2 and not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
            raise ValueError(f"keys must have shape [E, 2] (one PRNG key per member), got {keys.shape}")
        n_models = keys.shape[0]
        if not shared and data.shape[0] != n_models:
            raise ValueError(f"data has {data.shape[0]} training sets but {n_models} keys were given")
        n_valid_np = np.broadcast_to(n_valid_np, (n_models,)).astype(np.int32)
        if n_valid_np.shape != (n_models,):
            raise ValueError(f"n_valid must have shape [E] = [{n_models}], got {n_valid_np.shape}")
        state = _init_states(keys, apply, data_one, schedule, _static_part(config), n_max, n_models)
        if shard is None:
            shard = jax.device_count() > 1
    else:
        n_models = None
        if n_valid_np.ndim != 0:
            raise ValueError(f"n_valid must be a single integer for train(), got shape {n_valid_np.shape}")
        state = _init_states(keys, apply, data, schedule, _static_part(config), n_max, None)
    n_valid_arr = jnp.asarray(n_valid_np, jnp.int32)
    eval_set = None
    if family is not None:
        eval_set = make_eval_set(eval_key, family, schedule, config.eval_size, config.weighting, config.sigma_data)
    if ensemble and shard:
        state, data, n_valid_arr, eval_set = place_ensemble(state, data, n_valid_arr, eval_set)

    spec = _Spec(apply, _static_part(config), ensemble, shared, eval_set is not None)
    hyper = Hyper.of(config)
    history: dict[str, list] = {"step": [], "loss": []}
    ref = None
    done, last_print, t_start = 0, -math.inf, time.perf_counter()
    while done < config.n_steps:
        length = min(config.log_every, config.n_steps - done)
        t0 = time.perf_counter()
        state, losses, metrics = _run_chunk(state, data, n_valid_arr, schedule, eval_set, hyper,
                                             spec=spec, length=length)
        losses = np.asarray(losses)
        dt = time.perf_counter() - t0
        if ref is None:  # the first step's loss, per member: the scale a divergence is measured against
            ref = np.abs(losses.reshape(-1, length)[:, 0])
            ref = np.where(np.isfinite(ref), np.maximum(ref, 1e-12), np.inf)  # a non-finite loss is caught anyway
        _check_divergence(losses, metrics, done, ref, config, ensemble)
        done += length
        history["step"].append(done)
        history["loss"].append(losses.mean(axis=-1))
        for k, v in metrics.items():
            if k != "params_finite":
                history.setdefault(k, []).append(np.asarray(v))
        now = time.perf_counter()
        if not quiet and (now - last_print > 2.0 or done == config.n_steps):
            last_print = now
            line = f"step {done:>7d}/{config.n_steps}  loss {float(np.mean(losses)):.4g}"
            if eval_set is not None:
                line += (f"  excess {float(np.mean(metrics['excess'])):.3g}"
                         f" (L* {float(np.mean(metrics['loss_star'])):.3g})")
            line += f"  {length / dt:.0f} steps/s" + (f" x{n_models} models" if ensemble else "")
            print(line, flush=True)
    if not quiet:
        print(f"trained {config.n_steps} steps in {time.perf_counter() - t_start:.1f} s", flush=True)

    hist = {}
    for k, v in history.items():
        arr = np.stack([np.asarray(x) for x in v], axis=-1) if k != "step" else np.asarray(v)
        hist[k] = arr
    ema = state.ema_params if config.ema_decay is not None else None
    return TrainResult(params=state.params, ema_params=ema, history=hist, config=config, model=model,
                       schedule=schedule, n_valid=(n_valid_np if ensemble else int(n_valid_np)),
                       ensemble_size=n_models)


def train(key, data, schedule: Schedule, config: TrainConfig, *, model=None, family=None,
          n_valid: int | None = None, quiet: bool = True, eval_key=None) -> TrainResult:
    """Train one score model by DSM on `data` [n, D] (rows ≥ n_valid are padding, ignored).

    `family` (optional) supplies the exact score for L* and the excess (module doc).
    `model`: any flax module with apply(params, z [B, D], t [B]) -> [B, D]; default
    `config.network.build(schedule)`."""
    check_key("key", key)
    key = jnp.asarray(key)
    eval_key = jax.random.fold_in(key, 0x5EED) if eval_key is None else eval_key
    return _train_impl(key, data, n_valid, schedule, config, model, family, quiet, False, eval_key)


def train_ensemble(keys, data, schedule: Schedule, config: TrainConfig, *, n_valid=None, model=None,
                   family=None, quiet: bool = True, eval_key=None, shard: bool | None = None) -> TrainResult:
    """Train E models in ONE vmapped program.

    keys [E, 2]: member e uses keys[e] exactly as `train(keys[e], ...)` would, so the
    results agree with E separate runs. data: [n_max, D] shared by all members, or
    [E, n_max, D] (one training set per member). n_valid: None (all n_max rows) or
    [E] ints — member e trains on rows [0, n_valid[e]) only; equal padded shapes
    reuse the compiled program whatever n_valid is.

    shard: None (default) = shard the member axis over all devices when more than
    one is visible (`dsmtheory.distributed`: partitioned when E is a multiple of the
    device count, replicated otherwise); True/False force it on/off. The returned
    params keep that sharding, so `sample_ensemble` on `learned_score(result)` runs
    sharded too. Results equal the unsharded run to float tolerance."""
    check_key("keys", keys)
    keys = jnp.asarray(keys)
    if shard is not None and not isinstance(shard, bool):
        raise TypeError(f"shard must be None or a bool, got {type(shard).__name__}")
    eval_key = jax.random.fold_in(keys[0], 0x5EED) if eval_key is None else eval_key
    return _train_impl(keys, data, n_valid, schedule, config, model, family, quiet, True, eval_key, shard)
