"""One cell of the constant-error study (THEORY §4-§5): train, sample, measure.

`compute_cell(cell) -> dict` is the compute function `dsmtheory.sweep.run_sweep`
calls for each grid cell. For a cell (family and rule, σ_r, ambient D, n,
schedule, network, width, training steps, sampler, E = n_seeds seeds):

1. E training sets of size n_max are drawn from the family (one PRNG key per
   seed); the cell trains on the first n rows of each (`n_valid = n`). So the
   training sets of one seed are nested across n, and every n of a sweep has
   the same padded shape [E, n_max, D]: one compiled training program and one
   compiled sampler serve the whole n sweep (`group_key=shape_key(("n",))`).
2. `dsm.train_ensemble` trains the E networks in one vmapped program.
3. The SAME sampler (method, steps, t_min, number of samples, and the same
   per-seed PRNG keys: common random numbers) is run on
   - the learned score of each seed,
   - the exact score (oracle: the discretisation floor of this sampler),
   - the empirical-optimal score of each seed's training set (THEORY §2.4: the
     exact minimiser of the empirical DSM objective),
   and every THEORY §4 metric is recorded per seed (`metrics.rule_metrics`,
   with the seed's training set for the memorisation rate).
4. Score-level diagnostics: the training run's excess loss L − L* and Fisher
   excess E λ‖s_θ − ∇log p_t‖² on a fixed evaluation set, and, when
   `dsmtheory.diagnostics` provides it, the Fisher divergence split into the
   rule-normal component and the rest.

Every number depends only on the cell (keys derive from ``cell["seed"]``), so a
rerun reproduces a stored cell (`--check` in the experiments).

A cell must hold every key of `CELL_DEFAULTS` (build it with `make_cell`), so a
stored config fully describes its run even if the defaults change later.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from dsmtheory._pytree import PyTreeNode

from dsmtheory._validation import check_choice, check_int, check_positive

__all__ = ["CELL_DEFAULTS", "make_cell", "build_family", "build_schedule", "build_train_config", "compute_cell",
           "clear_oracle_memo", "CURVES"]

# The three score functions compared in every cell (THEORY §4 baselines).
CURVES = ("learned", "oracle", "empirical")

CELL_DEFAULTS: dict[str, Any] = {
    # the distribution
    "family": "nonlinear",  # 'nonlinear' (THEORY §2.2) | 'linear_gaussian' (§2.1)
    "rule": "sin",
    "rule_params": {"k": 2.0},
    "x_marginal": {"name": "gaussian", "mean": 0.0, "std": 1.0},  # nonlinear family only
    "sigma_r": 0.05,
    "D": 2,  # ambient dimension; D > 2 embeds the (x, y) family in R^D (THEORY §2.5)
    "background_std": 1.0,  # σ_b of the embedded background (D > 2 only)
    # the forward process
    "schedule": "vp_linear",
    "schedule_params": {},
    # training
    "n": 1024,
    "n_max": 1024,
    "network": "mlp",
    "width": 64,
    "depth": 2,
    "parameterisation": "eps",
    "weighting": "sigma_sq",
    "train_steps": 2000,
    "batch_size": 256,
    "lr": 2e-3,
    "eval_size": 1024,
    # sampling and metrics
    "sampler": "euler_maruyama",
    "sample_steps": 200,
    "n_samples": 2000,
    "n_bins": 10,
    "empirical": True,  # also run the empirical-optimal score
    "n_samples_empirical": None,  # samples per seed for the empirical score (None: n_samples)
    "diagnostic_samples": 4096,  # Monte Carlo draws of the score-level rule-normal split
    # seeds (vmapped inside the cell)
    "n_seeds": 4,
    "seed": 0,
}

_FAMILIES = ("nonlinear", "linear_gaussian")
_SAMPLERS = ("euler_maruyama", "pf_heun", "ddpm", "ddim")


def make_cell(**overrides: Any) -> dict:
    """A complete cell: `CELL_DEFAULTS` with `overrides` (unknown keys raise ValueError)."""
    unknown = set(overrides) - set(CELL_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown cell keys {sorted(unknown)}; known: {sorted(CELL_DEFAULTS)}")
    cell = json.loads(json.dumps(CELL_DEFAULTS))  # deep copy
    cell.update(json.loads(json.dumps(overrides)))
    if "n_max" not in overrides:
        cell["n_max"] = max(cell["n_max"], cell["n"])
    if cell["network"] == "two_layer" and "depth" not in overrides:
        cell["depth"] = 1  # the two-layer network has exactly one hidden layer
    _check_cell(cell)
    return cell


def _check_cell(cell: dict) -> None:
    if not isinstance(cell, dict):
        raise TypeError(f"cell must be a dict, got {type(cell).__name__}")
    missing = set(CELL_DEFAULTS) - set(cell)
    if missing:
        raise ValueError(f"cell is missing {sorted(missing)}; build cells with study.make_cell")
    unknown = set(cell) - set(CELL_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown cell keys {sorted(unknown)}")
    check_choice("family", cell["family"], _FAMILIES)
    check_choice("sampler", cell["sampler"], _SAMPLERS)
    check_positive("sigma_r", cell["sigma_r"])
    check_positive("lr", cell["lr"])
    check_positive("background_std", cell["background_std"])
    for key, minimum in (("D", 2), ("n", 1), ("n_max", 1), ("width", 1), ("depth", 1), ("train_steps", 1),
                         ("batch_size", 1), ("eval_size", 1), ("sample_steps", 1), ("n_samples", 2),
                         ("n_bins", 1), ("n_seeds", 1), ("seed", 0),
                         ("diagnostic_samples", 2)):
        check_int(key, cell[key], minimum=minimum)
    if cell["n"] > cell["n_max"]:
        raise ValueError(f"n = {cell['n']} exceeds the padded size n_max = {cell['n_max']}")
    if cell["n_samples_empirical"] is not None:
        check_int("n_samples_empirical", cell["n_samples_empirical"], minimum=2)
    if not isinstance(cell["empirical"], bool):
        raise TypeError(f"empirical must be a bool, got {cell['empirical']!r}")
    for key in ("rule_params", "schedule_params", "x_marginal"):
        if not isinstance(cell[key], dict):
            raise TypeError(f"{key} must be a dict, got {type(cell[key]).__name__}")


# --------------------------------------------------------------------------- building blocks


def build_family(cell: dict):
    """The exact family of the cell (THEORY §2): the 2-D rule, embedded in R^D when D > 2."""
    from dsmtheory.families.linear_gaussian import LinearGaussian
    from dsmtheory.families.nonlinear import NonlinearRule

    if cell["family"] == "nonlinear":
        base = NonlinearRule.create(cell["x_marginal"], cell["rule"], cell["sigma_r"],
                                    rule_params=cell["rule_params"])
    else:  # linear_gaussian: y = a x + b with x ~ N(0, 1)
        params = dict(cell["rule_params"])
        unknown = set(params) - {"a", "b"}
        if cell["rule"] != "linear" or unknown:
            raise ValueError("the linear_gaussian family takes rule='linear' with rule_params a, b; "
                             f"got rule={cell['rule']!r}, params {sorted(params)}")
        base = LinearGaussian.create(mu_x=(0.0,), cov_x=[[1.0]], A=[[params.get("a", 1.0)]],
                                     b=[params.get("b", 0.0)], sigma_r=cell["sigma_r"])
    if cell["D"] == 2:
        return base
    from dsmtheory.families import Embedded  # THEORY §2.5

    # a random orthonormal frame, fixed by the seed (the network is not rotation invariant)
    return Embedded.create(base, cell["D"], key=jax.random.fold_in(jax.random.PRNGKey(cell["seed"]), 0xF4A3E),
                           sigma_b=cell["background_std"])


def build_schedule(cell: dict, family):
    """The cell's schedule; VE's σ_max is set from a fixed sample of the family (THEORY §1)."""
    from dsmtheory.schedules import VE, get_schedule

    params = dict(cell["schedule_params"])
    sched = get_schedule(cell["schedule"], **params)
    if isinstance(sched, VE) and "sigma_max" not in params:
        reference = family.sample(jax.random.PRNGKey(0x5CA1E), 2000)
        sched = VE.for_data(np.asarray(reference), **params)
    return sched


def build_train_config(cell: dict):
    from dsmtheory.dsm import TrainConfig
    from dsmtheory.networks import network_config

    net = network_config(cell["network"], cell["D"], width=cell["width"], depth=cell["depth"])
    log_every = max(1, cell["train_steps"] // 4)
    return TrainConfig(network=net, parameterisation=cell["parameterisation"], weighting=cell["weighting"],
                       n_steps=cell["train_steps"], batch_size=min(cell["batch_size"], cell["n_max"]),
                       lr=cell["lr"], warmup=min(100, cell["train_steps"] // 10), log_every=log_every,
                       eval_size=cell["eval_size"])


class _SharedAcrossMembers(PyTreeNode):
    """One score function presented as an E-member stack (for `sample_ensemble`).

    `member` is a dummy [E] leaf mapped by vmap; the score itself is shared (in_axes
    None), so the oracle runs in the same compiled ensemble sampler with exactly the
    per-member keys the learned ensemble gets (common random numbers).
    """

    score: Any
    member: jax.Array

    def __call__(self, z, t):
        return self.score(z, t)


def _shared_axes(stack: _SharedAcrossMembers) -> _SharedAcrossMembers:
    return stack.replace(score=None, member=0)  # None: the whole score subtree is shared (vmap prefix)


def _sample_members(score, axes, schedule, key, cell) -> jax.Array:
    from dsmtheory.samplers import sample_ensemble

    return sample_ensemble(score, schedule, key, cell["n_samples"], cell["D"], method=cell["sampler"],
                           n_steps=cell["sample_steps"], member_axes=axes)


def _per_seed_metrics(samples: np.ndarray, family, train_sets: list[np.ndarray] | None, key, n_bins: int) -> dict:
    """THEORY §4 metrics per seed: {metric: [E values]} (metrics that are None for every seed dropped)."""
    from dsmtheory.metrics import rule_metrics

    rows = []
    for e in range(samples.shape[0]):  # NumPy metrics, E small: a loop over seeds in host code
        rows.append(rule_metrics(samples[e], family, key=jax.random.fold_in(key, e), n_bins=n_bins,
                                 train_set=None if train_sets is None else train_sets[e]))
    out = {}
    for name in rows[0]:
        values = [r[name] for r in rows]
        if all(v is None for v in values):
            continue
        out[name] = values
    return out


def _oracle_samples(family, schedule, key, cell) -> np.ndarray:
    """The exact score through the ensemble sampler (memoised: it does not depend on n)."""
    memo_key = json.dumps([family.to_config(), schedule.to_config(), cell["sampler"], cell["sample_steps"],
                           cell["n_samples"], cell["n_seeds"], cell["seed"], str(jnp.asarray(0.0).dtype)],
                          sort_keys=True, default=str)
    if memo_key not in _ORACLE_MEMO:
        stack = _SharedAcrossMembers(score=family.score_fn(schedule), member=jnp.zeros((cell["n_seeds"],)))
        _ORACLE_MEMO.clear()  # keep one entry: a sweep visits one (family, schedule) group at a time
        _ORACLE_MEMO[memo_key] = np.asarray(_sample_members(stack, _shared_axes(stack), schedule, key, cell))
    return _ORACLE_MEMO[memo_key]


_ORACLE_MEMO: dict[str, np.ndarray] = {}


def clear_oracle_memo() -> None:
    """Forget memoised oracle samples (so a `--check` recomputation really recomputes them)."""
    _ORACLE_MEMO.clear()


def compute_cell(cell: dict) -> dict:
    """Train, sample and measure one cell (see module docstring). Returns a JSON-ready dict."""
    from dsmtheory.dsm import learned_score, train_ensemble

    _check_cell(cell)
    family = build_family(cell)
    schedule = build_schedule(cell, family)
    E, n, n_max = cell["n_seeds"], cell["n"], cell["n_max"]
    k_data, k_train, k_sample, k_metric = jax.random.split(jax.random.PRNGKey(cell["seed"]), 4)

    data = jax.vmap(lambda k: family.sample(k, n_max))(jax.random.split(k_data, E))  # [E, n_max, D]
    trained = train_ensemble(jax.random.split(k_train, E), data, schedule, build_train_config(cell),
                             n_valid=np.full((E,), n, dtype=np.int32), family=family,
                             eval_key=jax.random.fold_in(k_train, 1))
    final = trained.final
    train_sets = [np.asarray(data[e, :n]) for e in range(E)]

    learned = learned_score(trained)
    from dsmtheory.dsm import ensemble_axes

    samples = {
        "learned": np.asarray(_sample_members(learned, ensemble_axes(learned), schedule, k_sample, cell)),
        "oracle": _oracle_samples(family, schedule, k_sample, cell),
    }
    if cell["empirical"]:
        samples["empirical"] = _empirical_samples(data, n, schedule, k_sample, cell, family)

    result: dict[str, Any] = {
        "family": family.to_config(),
        "schedule": schedule.to_config(),
        "t_min": float(schedule.t_min),
        "noise_floor": float(schedule.noise_floor()),
    }
    for name, z in samples.items():
        result[name] = _per_seed_metrics(z, family, train_sets, k_metric, cell["n_bins"])
    result["training"] = {k: np.asarray(v).tolist() for k, v in final.items()}
    result["diagnostics"] = _score_diagnostics(learned, family, schedule, cell)
    return result


class _EmpiricalPerMember(PyTreeNode):
    """Adapter: the empirical-optimal score of member e's training set, for `sample_ensemble`.

    `points` [E, n, D] and `log_weights` [E, n] are mapped by vmap; inside the trace each
    member sees its own [n, D] set and the score is `families.EmpiricalMeasure.score`
    (THEORY §2.4), built on the traced slice (its concrete-value checks are skipped there).
    """

    points: jax.Array
    log_weights: jax.Array
    base: Any
    schedule: Any

    def __call__(self, z, t):
        from dsmtheory.families import EmpiricalMeasure

        measure = EmpiricalMeasure(points=self.points, log_weights=self.log_weights, base=self.base)
        return measure.score(z, t, self.schedule)


def _empirical_samples(data, n: int, schedule, key, cell, family) -> np.ndarray:
    """The empirical-optimal score of each seed's training set (THEORY §2.4), same sampler, steps,
    t_min and keys as the learned score.

    Not padded to n_max: the empirical score costs O(n) per evaluation, so padding the small-n
    cells to n_max would make every cell as slow as the largest; each n compiles its own sampler.
    Samples per seed: `n_samples_empirical` (None: `n_samples`); the per-seed sampler keys are the
    learned score's (identical prior draws and noise when the sample counts are equal).
    """
    from dsmtheory.samplers import sample_ensemble

    points = jnp.asarray(data[:, :n])  # [E, n, D]
    log_w = jnp.full(points.shape[:2], -np.log(n), dtype=points.dtype)
    stack = _EmpiricalPerMember(points=points, log_weights=log_w, base=family, schedule=schedule)
    axes = stack.replace(points=0, log_weights=0, base=None, schedule=None)
    n_samples = cell["n_samples"] if cell["n_samples_empirical"] is None else cell["n_samples_empirical"]
    return np.asarray(sample_ensemble(stack, schedule, key, n_samples, cell["D"], method=cell["sampler"],
                                      n_steps=cell["sample_steps"], member_axes=axes))


def _score_diagnostics(learned, family, schedule, cell) -> dict:
    """Score-level split (THEORY §4): share of the DSM excess E_t λ‖s_θ − ∇log p_t‖² carried by the
    rule-normal direction, per seed (`dsmtheory.diagnostics.rule_normal_share`, t from the
    training law, fresh family samples with a key fixed by the cell's seed)."""
    from dsmtheory.diagnostics import rule_normal_share
    from dsmtheory.dsm import ensemble_axes

    key = jax.random.fold_in(jax.random.PRNGKey(cell["seed"]), 0xD1A6)
    share = rule_normal_share(key, learned, family, schedule, weighting=cell["weighting"],
                              n=cell["diagnostic_samples"], member_axes=ensemble_axes(learned))
    return {name: np.asarray(value).tolist() for name, value in share.items()}
