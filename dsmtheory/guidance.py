"""Classifier guidance and filtering: the paper's mitigation (THEORY §6).

A *noisy rule classifier* c(z_t, t) ≈ P(conforms | z_t) is trained by the same
forward process as the score model, on positives (data) and contrastive negatives:

- **coarse** negatives: y paired with another sample's x (y shuffled across x);
  they break the trend E[y|x] and are easy to detect;
- **fine** negatives: y + δ with |δ| on the scale of σ_r (several scales δ/σ_r);
  they keep the trend and break only the conditional width, the "subtle signal"
  that disappears once the forward noise σ(t)/α(t) exceeds ≈ δ.

Everything that guidance needs is a *log-classifier*: a callable pytree
`log_c(z [..., D], t [...]) -> [...]` giving log P(conforms | z_t) (and `.logit`),
which `dsmtheory.scores.GuidedScore(base, log_c, w)` turns into s + w ∇_z log c.
Two kinds exist here:

- `LearnedClassifier`: a Flax MLP with a time embedding (`RuleClassifierNet`),
  trained by `train_classifier` (one jitted program: lax.scan over steps, vmap
  over seeds, optax Adam, binary cross-entropy);
- `GaussianMixtureClassifier`: the *exact* Bayes classifier when positives and
  negatives are (mixtures of) Gaussians, as for the linear-Gaussian family
  (`exact_linear_gaussian_classifier`). With class priors π± the exact posterior is
  log P(+|z_t) = log π⁺p_t⁺(z) − logaddexp(log π⁺p_t⁺(z), log π⁻p_t⁻(z)), with
  p_t^± the noised densities N(α m, α² C + σ² I) (THEORY §2.1). It is the upper
  bound of what guidance by a classifier trained on these negatives can do.

AUC is always measured on fresh, held-out noised pairs (`heldout_auc`).
Filtering (`filter_samples`) keeps generated samples that a detector on the clean
sample accepts: the oracle detector |r| < c σ_r √dy with the known rule, or a
classifier read at t_min.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from dsmtheory._pytree import PyTreeNode, field

from dsmtheory._validation import (
    check_choice,
    check_finite,
    check_in_range,
    check_int,
    check_last_dim,
    check_positive,
    is_concrete,
)
from dsmtheory.networks import precondition, time_embedding
from dsmtheory.schedules import Schedule

Array = jax.Array

FINE_KINDS = ("sign", "gaussian")


# ======================================================================================
# Negatives
# ======================================================================================
class NegativeSpec(PyTreeNode):
    """Which contrastive negatives a classifier is trained against (static configuration).

    coarse_weight: share of negatives that are coarse (y paired with another sample's x);
    fine_scales:   the fine offsets in units of σ_r; the remaining share 1 − coarse_weight
                   is split equally between them;
    fine_kind:     "sign": δ = (δ/σ_r)·σ_r·s with a random sign s ∈ {±1} per y-coordinate
                   (|δ| fixed per coordinate); "gaussian": δ ~ N(0, ((δ/σ_r)·σ_r)² I).
                   Either way the negative distribution of a Gaussian family is a Gaussian
                   mixture, so the exact classifier exists (`exact_linear_gaussian_classifier`).
    """

    coarse_weight: float = field(pytree_node=False, default=0.5)
    fine_scales: tuple = field(pytree_node=False, default=(1.0, 2.0, 4.0))
    fine_kind: str = field(pytree_node=False, default="sign")

    def __post_init__(self):
        check_in_range("coarse_weight", self.coarse_weight, 0.0, 1.0)
        if not isinstance(self.fine_scales, tuple):
            object.__setattr__(self, "fine_scales", tuple(float(s) for s in self.fine_scales))
        for s in self.fine_scales:
            check_positive("fine_scales", s)
        if self.coarse_weight < 1.0 and len(self.fine_scales) == 0:
            raise ValueError("fine_scales must be non-empty unless coarse_weight == 1")
        check_choice("fine_kind", self.fine_kind, FINE_KINDS)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Names of the negative components: "coarse", then "fine:<δ/σ_r>" per scale."""
        return ("coarse",) + tuple(f"fine:{s:g}" for s in self.fine_scales)

    @property
    def weights(self) -> np.ndarray:
        """Mixture weights of the components in `kinds` (they sum to 1)."""
        k = len(self.fine_scales)
        fine = [(1.0 - self.coarse_weight) / k] * k if k else []
        return np.asarray([self.coarse_weight] + fine, dtype=np.float64)

    def to_config(self) -> dict:
        return {
            "coarse_weight": float(self.coarse_weight),
            "fine_scales": [float(s) for s in self.fine_scales],
            "fine_kind": self.fine_kind,
        }


def parse_kind(kind: str) -> tuple[str, float]:
    """"coarse" -> ("coarse", 0); "fine:2" -> ("fine", 2.0)."""
    if kind == "coarse":
        return "coarse", 0.0
    if isinstance(kind, str) and kind.startswith("fine:"):
        scale = float(kind.split(":", 1)[1])
        check_positive("fine scale in kind", scale)
        return "fine", scale
    raise ValueError(f"kind must be 'coarse' or 'fine:<δ/σ_r>' (e.g. 'fine:2'), got {kind!r}")


def _replace_y(family, z: Array, y_new: Array) -> Array:
    """z with its effect coordinates y replaced by y_new (works for embedded families too:
    the change is mapped back through the feature frame)."""
    x, y = family.features(z)
    dv = jnp.concatenate([jnp.zeros_like(x), y_new - y], axis=-1)
    return z + family.embed_features(dv)


def _fine_offset(key: Array, shape: tuple, scale: Array, sigma_r, fine_kind: str, dtype) -> Array:
    if fine_kind == "sign":
        direction = jax.random.rademacher(key, shape, dtype=dtype)
    else:
        direction = jax.random.normal(key, shape, dtype=dtype)
    return scale * sigma_r * direction


def make_negatives(key: Array, family, z: Array, kind: str, fine_kind: str = "sign") -> Array:
    """Negatives of one kind built from positives z [n, dim].

    coarse: y_i replaced by y_j of another sample j ≠ i (a random non-identity pairing);
    fine:<s>: y + δ, δ = s·σ_r·(random sign per coordinate) or s·σ_r·N(0, I)."""
    check_last_dim("z", z, family.dim)
    if z.ndim != 2:
        raise ValueError(f"z must have shape [n, dim], got {z.shape}")
    check_choice("fine_kind", fine_kind, FINE_KINDS)
    base, scale = parse_kind(kind)
    if base == "coarse" and z.shape[0] < 2:
        raise ValueError("coarse negatives need at least 2 samples to pair y with another x")
    return _negatives_traced(key, family, z, base == "coarse", jnp.asarray(scale), fine_kind)


def _mixed_negatives(key: Array, family, z_x: Array, z_y: Array, spec: NegativeSpec) -> Array:
    """One negative per row, its kind drawn from spec.weights. z_x supplies x (and y for
    fine negatives), z_y supplies the foreign y of coarse negatives (another sample's)."""
    k_comp, k_off = jax.random.split(key)
    n = z_x.shape[0]
    _, y = family.features(z_x)
    _, y_other = family.features(z_y)
    comp = jax.random.choice(k_comp, len(spec.weights), (n,), p=jnp.asarray(spec.weights, z_x.dtype))
    scales = jnp.asarray((0.0,) + tuple(spec.fine_scales), z_x.dtype)[comp][:, None]
    y_fine = y + _fine_offset(k_off, y.shape, scales, family.sigma_r, spec.fine_kind, z_x.dtype)
    y_new = jnp.where((comp == 0)[:, None], y_other, y_fine)
    return _replace_y(family, z_x, y_new)


# ======================================================================================
# Log-classifiers (callable pytrees for GuidedScore)
# ======================================================================================
class LogClassifier(PyTreeNode):
    """Callable pytree: `self(z, t) = log P(conforms | z_t)` = log σ(logit(z, t))."""

    def logit(self, z: Array, t: Array) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, z: Array, t: Array) -> Array:
        return jax.nn.log_sigmoid(self.logit(z, t))  # stable for any logit (no log(0))

    def prob(self, z: Array, t: Array) -> Array:
        return jax.nn.sigmoid(self.logit(z, t))


# --------------------------------------------------------------------------------------
# Exact classifier for Gaussian positives / Gaussian-mixture negatives
# --------------------------------------------------------------------------------------
class JointGaussian(PyTreeNode):
    """N(mean, cov) in z-space; noised by a schedule it is N(α mean, α² cov + σ² I) (THEORY §2.1).

    Used for distributions the family classes cannot express, e.g. the coarse negatives
    of the linear-Gaussian family (its joint with the x–y cross-covariance zeroed)."""

    mean: Array
    cov: Array
    eigvals: Array | None = None  # cov = U diag(eigvals) Uᵀ, filled by __post_init__ when concrete
    eigvecs: Array | None = None

    def __post_init__(self):
        if is_concrete((self.mean, self.cov)):
            m, c = np.asarray(self.mean), np.asarray(self.cov)
            d = m.shape[-1]
            if c.shape[-2:] != (d, d):
                raise ValueError(f"cov must have shape ({d}, {d}) to match mean, got {c.shape}")
            if c.ndim == 2 and np.min(np.linalg.eigvalsh(0.5 * (c + c.T))) <= 0:
                raise ValueError("cov must be symmetric positive definite")
            if self.eigvals is None:  # decompose once, not inside every jitted call
                lam, U = np.linalg.eigh(0.5 * (c + np.swapaxes(c, -1, -2)))
                object.__setattr__(self, "eigvals", jnp.asarray(lam, jnp.asarray(self.cov).dtype))
                object.__setattr__(self, "eigvecs", jnp.asarray(U, jnp.asarray(self.cov).dtype))

    @property
    def dim(self) -> int:
        return self.mean.shape[-1]

    def _eig(self):
        if self.eigvals is not None:
            return self.eigvals, self.eigvecs
        return jnp.linalg.eigh(self.cov)

    def log_prob_t(self, z: Array, t: Array, schedule: Schedule) -> Array:
        lam, U = self._eig()  # cov = U Λ Uᵀ, so α²cov + σ²I = U(α²Λ + σ²)Uᵀ
        tt = jnp.asarray(t, z.dtype)[..., None]
        a, s2 = schedule.alpha(tt), schedule.sigma_sq(tt)
        r = (z - a * self.mean) @ U
        var = a**2 * lam + s2
        return -0.5 * (jnp.sum(r**2 / var, -1) + jnp.sum(jnp.log(var), -1) + self.dim * math.log(2 * math.pi))


class GaussianMixtureClassifier(LogClassifier):
    """Exact posterior P(+ | z_t) for positives N(m⁺, C⁺) and negatives Σ_k w_k N(m_k, C_k),
    both pushed through the forward process of `schedule` (THEORY §6):

        logit(z, t) = log π⁺ + log p_t⁺(z) − log π⁻ − logsumexp_k [log w_k + log N_t(z; m_k, C_k)].

    The component means/covs are stacked on a leading axis."""

    positive: JointGaussian
    neg_means: Array  # [K, D]
    neg_covs: Array  # [K, D, D]
    neg_log_weights: Array  # [K]
    neg_eigvals: Array  # [K, D]   eigendecomposition of neg_covs, computed once
    neg_eigvecs: Array  # [K, D, D]
    schedule: Schedule
    log_prior_ratio: float = 0.0  # log π⁺/π⁻ (0 = equal class priors, as in training)

    def log_p_pos(self, z, t):
        return self.positive.log_prob_t(z, t, self.schedule)

    def log_p_neg(self, z, t):
        comps = jax.vmap(lambda m, c, lam, U: JointGaussian(m, c, lam, U).log_prob_t(z, t, self.schedule))(
            self.neg_means, self.neg_covs, self.neg_eigvals, self.neg_eigvecs
        )  # [K, ...]
        lw = self.neg_log_weights.reshape((-1,) + (1,) * (comps.ndim - 1))
        return jax.scipy.special.logsumexp(comps + lw, axis=0)

    def logit(self, z, t):
        return self.log_prior_ratio + self.log_p_pos(z, t) - self.log_p_neg(z, t)


def negative_components(family, spec: NegativeSpec) -> tuple[Array, Array, Array]:
    """(means [K, D], covs [K, D, D], weights [K]) of the negative distribution of a
    Gaussian family (joint N(m, C)) under `spec`:

    - coarse: x and y independent with the same marginals → N(m, blockdiag(C_xx, C_yy));
    - fine, sign kind, scale s: y + s σ_r ε, ε uniform on {±1}^dy → 2^dy components
      N(m + (0, s σ_r ε), C), each with weight w_s / 2^dy;
    - fine, gaussian kind, scale s: y + N(0, s² σ_r² I) → N(m, C + blockdiag(0, s² σ_r² I)),
      i.e. the same family with σ_r' = σ_r √(1 + s²)."""
    if not (hasattr(family, "joint_mean") and hasattr(family, "joint_cov")):
        raise TypeError(
            "the exact classifier needs a Gaussian family with joint_mean()/joint_cov() "
            f"(e.g. LinearGaussian), got {type(family).__name__}"
        )
    m, C = family.joint_mean(), family.joint_cov()
    dx, dy = family.dx, family.dy
    if C.shape[-1] != dx + dy:
        raise ValueError("negative_components supports families whose z is (x, y) without embedding")
    if spec.fine_kind == "sign" and dy > 8:
        raise ValueError(f"the sign kind enumerates 2^dy mixture components; dy={dy} is too many (use 'gaussian')")
    weights = spec.weights
    means, covs, ws = [], [], []
    c_coarse = C.at[:dx, dx:].set(0.0).at[dx:, :dx].set(0.0)
    means.append(m)
    covs.append(c_coarse)
    ws.append(weights[0])
    for w, s in zip(weights[1:], spec.fine_scales):
        if spec.fine_kind == "sign":
            for signs in itertools.product((-1.0, 1.0), repeat=dy):
                shift = jnp.concatenate([jnp.zeros(dx), s * family.sigma_r * jnp.asarray(signs)])
                means.append(m + shift)
                covs.append(C)
                ws.append(w / 2**dy)
        else:
            extra = jnp.zeros_like(C).at[dx:, dx:].set((s * family.sigma_r) ** 2 * jnp.eye(dy))
            means.append(m)
            covs.append(C + extra)
            ws.append(w)
    ws = np.asarray(ws)
    keep = ws > 0  # coarse_weight may be 0 or 1
    idx = np.nonzero(keep)[0]
    return jnp.stack([means[i] for i in idx]), jnp.stack([covs[i] for i in idx]), jnp.asarray(ws[idx])


def exact_linear_gaussian_classifier(
    family, schedule: Schedule, negatives: NegativeSpec | str = NegativeSpec(), prior_positive: float = 0.5
) -> GaussianMixtureClassifier:
    """The exact rule classifier of a linear-Gaussian family against `negatives`.

    `negatives` is a NegativeSpec (the training mixture) or a single kind ("coarse",
    "fine:2") for the classifier of positives against that kind only."""
    if isinstance(negatives, str):
        base, scale = parse_kind(negatives)
        negatives = NegativeSpec(
            coarse_weight=1.0 if base == "coarse" else 0.0,
            fine_scales=(scale,) if base == "fine" else (1.0,),
            fine_kind=NegativeSpec().fine_kind,
        )
    check_in_range("prior_positive", prior_positive, 0.0, 1.0, inclusive=False)
    means, covs, ws = negative_components(family, negatives)
    lam, U = np.linalg.eigh(np.asarray(covs))
    return GaussianMixtureClassifier(
        positive=JointGaussian(family.joint_mean(), family.joint_cov()),
        neg_means=means,
        neg_covs=covs,
        neg_log_weights=jnp.log(ws),
        neg_eigvals=jnp.asarray(lam, covs.dtype),
        neg_eigvecs=jnp.asarray(U, covs.dtype),
        schedule=schedule,
        log_prior_ratio=float(math.log(prior_positive / (1.0 - prior_positive))),
    )


# --------------------------------------------------------------------------------------
# Learned classifier
# --------------------------------------------------------------------------------------
class RuleClassifierNet(nn.Module):
    """MLP logit(z_in, c_noise): the preconditioned input and noise level of
    `dsmtheory.networks.precondition` (z / √(α² + σ²) and ¼ log σ/α), the noise level
    embedded by `networks.time_embedding` and added at every hidden layer, as in the DSM
    networks (`networks.MLPScoreNet`), with one output: the logit of P(conforms | z_t)."""

    hidden: int = 128
    depth: int = 3
    time_features: int = 16

    @nn.compact
    def __call__(self, z_in: Array, c_noise: Array) -> Array:
        c_noise = jnp.broadcast_to(c_noise, z_in.shape[:-1])
        emb = time_embedding(c_noise, self.time_features)
        h = z_in
        for i in range(self.depth):
            h = nn.silu(nn.Dense(self.hidden, name=f"hidden_{i}")(h) + nn.Dense(self.hidden, name=f"time_{i}")(emb))
        return nn.Dense(1, name="out")(h)[..., 0]


def _classifier_inputs(z: Array, t: Array, schedule: Schedule) -> tuple[Array, Array]:
    """Network inputs, shared with the DSM networks: z_t / √(α² + σ²) (unit scale for
    unit-scale data, under every schedule) and c_noise = ¼ log(σ/α), the noise level in
    data units (a schedule-independent time coordinate)."""
    return precondition(z, t, schedule, 1.0, True)


class LearnedClassifier(LogClassifier):
    """A trained `RuleClassifierNet` as a log-classifier. `params` of one network, or of an
    ensemble stacked on a leading axis with `ensemble=True` (the logits are averaged)."""

    net: RuleClassifierNet = field(pytree_node=False)
    params: Any
    schedule: Schedule
    ensemble: bool = field(pytree_node=False, default=False)

    def logit(self, z, t):
        z_in, u = _classifier_inputs(z, t, self.schedule)
        if self.ensemble:
            return jnp.mean(jax.vmap(lambda p: self.net.apply(p, z_in, u))(self.params), axis=0)
        return self.net.apply(self.params, z_in, u)


class ClassifierConfig(PyTreeNode):
    """Static training configuration of the rule classifier."""

    hidden: int = field(pytree_node=False, default=128)
    depth: int = field(pytree_node=False, default=3)
    time_features: int = field(pytree_node=False, default=16)
    n_steps: int = field(pytree_node=False, default=2000)
    batch_size: int = field(pytree_node=False, default=256)
    learning_rate: float = field(pytree_node=False, default=1e-3)
    negatives: NegativeSpec = field(pytree_node=False, default=NegativeSpec())
    shuffle_labels: bool = field(pytree_node=False, default=False)

    def __post_init__(self):
        check_int("hidden", self.hidden, minimum=1)
        check_int("depth", self.depth, minimum=1)
        check_int("time_features", self.time_features, minimum=1)
        check_int("n_steps", self.n_steps, minimum=1)
        check_int("batch_size", self.batch_size, minimum=2)
        check_positive("learning_rate", self.learning_rate)
        if not isinstance(self.negatives, NegativeSpec):
            raise TypeError(f"negatives must be a NegativeSpec, got {type(self.negatives).__name__}")

    def net(self) -> RuleClassifierNet:
        return RuleClassifierNet(hidden=self.hidden, depth=self.depth, time_features=self.time_features)

    def to_config(self) -> dict:
        return {
            "hidden": self.hidden,
            "depth": self.depth,
            "time_features": self.time_features,
            "n_steps": self.n_steps,
            "batch_size": self.batch_size,
            "learning_rate": float(self.learning_rate),
            "negatives": self.negatives.to_config(),
            "shuffle_labels": bool(self.shuffle_labels),
        }


class ClassifierFit(PyTreeNode):
    """Result of `train_classifier`: params stacked over seeds [n_seeds, ...] and the
    per-step training loss [n_seeds, n_steps]."""

    params: Any
    losses: Array
    schedule: Schedule
    config: ClassifierConfig = field(pytree_node=False)

    @property
    def n_seeds(self) -> int:
        return int(self.losses.shape[0])

    def member(self, i: int) -> LearnedClassifier:
        """The classifier of seed i."""
        check_int("i", i, minimum=0, maximum=self.n_seeds - 1)
        params = jax.tree_util.tree_map(lambda p: p[i], self.params)
        return LearnedClassifier(self.config.net(), params, self.schedule)

    def ensemble(self) -> LearnedClassifier:
        """All seeds as one classifier (mean logit)."""
        return LearnedClassifier(self.config.net(), self.params, self.schedule, ensemble=True)

    def members(self) -> LearnedClassifier:
        """The seeds as a batched pytree (leading axis of params), for jax.vmap over seeds."""
        return LearnedClassifier(self.config.net(), self.params, self.schedule)


def classifier_batch(key: Array, family, data: Array, schedule: Schedule, batch_size: int, spec: NegativeSpec):
    """One training batch: batch_size positives and batch_size negatives drawn from `data`,
    all noised by the forward process at t ~ schedule.sample_training_times.
    Returns (z_t [2B, D], t [2B], labels [2B] in {0, 1})."""
    k_pos, k_neg, k_other, k_mix, k_t, k_noise = jax.random.split(key, 6)
    n = data.shape[0]
    pos = data[jax.random.randint(k_pos, (batch_size,), 0, n)]
    i_neg = jax.random.randint(k_neg, (batch_size,), 0, n)
    i_other = (i_neg + jax.random.randint(k_other, (batch_size,), 1, n)) % n  # another sample, ≠ i_neg
    neg = _mixed_negatives(k_mix, family, data[i_neg], data[i_other], spec)
    z0 = jnp.concatenate([pos, neg], axis=0)
    labels = jnp.concatenate([jnp.ones(batch_size, data.dtype), jnp.zeros(batch_size, data.dtype)])
    t = schedule.sample_training_times(k_t, (2 * batch_size,)).astype(data.dtype)
    zt, _ = schedule.perturb(k_noise, z0, t)
    return zt, t, labels


def _train_one(key, family, data, schedule, shuffle_labels, config: ClassifierConfig):
    net = config.net()
    k_init, k_loop = jax.random.split(key)
    params = net.init(k_init, jnp.zeros((1, data.shape[-1]), data.dtype), jnp.zeros((1,), data.dtype))
    opt = optax.adam(config.learning_rate)
    opt_state = opt.init(params)

    def loss_fn(p, zt, t, labels):
        z_in, u = _classifier_inputs(zt, t, schedule)
        logits = net.apply(p, z_in, u)
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))

    def step(carry, k):
        p, s = carry
        k_batch, k_perm = jax.random.split(k)
        zt, t, labels = classifier_batch(k_batch, family, data, schedule, config.batch_size, config.negatives)
        # null control (traced flag, so it shares the compilation): labels independent of inputs
        labels = jnp.where(shuffle_labels, jax.random.permutation(k_perm, labels), labels)
        loss, grads = jax.value_and_grad(loss_fn)(p, zt, t, labels)
        updates, s = opt.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    (params, _), losses = jax.lax.scan(step, (params, opt_state), jax.random.split(k_loop, config.n_steps))
    return params, losses


_train_ensemble_jit = jax.jit(
    jax.vmap(_train_one, in_axes=(0, None, None, None, None, None)), static_argnames=("config",)
)


def train_classifier(
    key: Array, family, data: Array, schedule: Schedule, config: ClassifierConfig = ClassifierConfig(), n_seeds: int = 1
) -> ClassifierFit:
    """Train n_seeds rule classifiers (vmapped; one jitted program, lax.scan over steps) by
    binary cross-entropy on positives from `data` [n, dim] and negatives from `config.negatives`,
    noised by `schedule`'s forward process. Data of the same shape re-uses the compilation."""
    check_int("n_seeds", n_seeds, minimum=1)
    data = jnp.asarray(data)
    check_last_dim("data", data, family.dim)
    if data.ndim != 2 or data.shape[0] < 2:
        raise ValueError(f"data must have shape [n >= 2, dim], got {data.shape}")
    if not isinstance(config, ClassifierConfig):
        raise TypeError(f"config must be a ClassifierConfig, got {type(config).__name__}")
    keys = jax.random.split(key, n_seeds)
    params, losses = _train_ensemble_jit(
        keys, family, data, schedule, jnp.asarray(config.shuffle_labels), config.replace(shuffle_labels=False)
    )
    return ClassifierFit(params=params, losses=losses, schedule=schedule, config=config)


# ======================================================================================
# AUC on held-out noised pairs
# ======================================================================================
def auc(scores_pos: Array, scores_neg: Array) -> Array:
    """Area under the ROC curve = P(s⁺ > s⁻) + ½ P(s⁺ = s⁻) (Mann–Whitney), exact with ties,
    O(n log n). Jittable; batched over leading dims is left to vmap."""
    neg = jnp.sort(scores_neg)
    below = jnp.searchsorted(neg, scores_pos, side="left")
    below_or_eq = jnp.searchsorted(neg, scores_pos, side="right")
    return jnp.mean(below + 0.5 * (below_or_eq - below)) / neg.shape[0]


def auc_null_std(n_pos: int, n_neg: int) -> float:
    """Standard deviation of the AUC of an uninformative score (H0: AUC = ½), Mann–Whitney:
    √((n⁺ + n⁻ + 1) / (12 n⁺ n⁻)). Sets the tolerance of 'AUC ≈ 0.5' checks."""
    return math.sqrt((n_pos + n_neg + 1) / (12.0 * n_pos * n_neg))


def heldout_pairs(key: Array, family, n: int, kind: str, fine_kind: str = "sign") -> tuple[Array, Array]:
    """Fresh clean positives [n, dim] from family.sample and negatives [n, dim] of `kind`
    built from an independent fresh draw (never the training pairs)."""
    k_pos, k_neg_base, k_neg = jax.random.split(key, 3)
    pos = family.sample(k_pos, n)
    neg = make_negatives(k_neg, family, family.sample(k_neg_base, n), kind, fine_kind)
    return pos, neg


def heldout_auc(
    key: Array,
    classifier: LogClassifier,
    family,
    schedule: Schedule,
    t_grid: Sequence[float] | Array,
    kinds: Sequence[str],
    n: int = 2000,
    fine_kind: str = "sign",
) -> dict:
    """AUC of `classifier.logit` at each t of `t_grid` for each negative kind, on fresh
    held-out pairs (n positives from family.sample, n negatives of the kind built from an
    independent fresh draw, both noised by the forward process at t; every (kind, t) cell
    has its own independent draw). One compilation for all kinds and times.

    Returns {"t": [...], "auc": {kind: [AUC per t]}, "null_std": std of AUC under H0, ...}."""
    n = check_int("n", n, minimum=2)
    check_choice("fine_kind", fine_kind, FINE_KINDS)
    t_grid = jnp.atleast_1d(jnp.asarray(t_grid, jnp.float32))
    schedule.check_t(t_grid, "t_grid")
    # fresh clean draws for every (kind, t) cell, made once outside the vmapped program
    is_coarse, scales, pos, neg_base, keys = _heldout_draws(key, family, t_grid, kinds, n)
    table = np.asarray(
        _auc_table_jit(keys, classifier, family, schedule, t_grid, is_coarse, scales, pos, neg_base, fine_kind)
    )
    return {
        "t": np.asarray(t_grid).tolist(),
        "auc": {k: table[i].tolist() for i, k in enumerate(kinds)},
        "null_std": auc_null_std(n, n),
        "n_per_class": n,
    }


def heldout_auc_members(
    key: Array,
    fit: "ClassifierFit",
    family,
    schedule: Schedule,
    t_grid: Sequence[float] | Array,
    kinds: Sequence[str],
    n: int = 2000,
) -> dict:
    """`heldout_auc` for every seed of a `ClassifierFit` at once (vmapped over the stacked
    params), all members scored on the same fresh held-out pairs (common random numbers).
    Returns {"t", "auc": {kind: [[AUC per t] per seed]}, "null_std", "n_per_class"}."""
    n = check_int("n", n, minimum=2)
    t_grid = jnp.atleast_1d(jnp.asarray(t_grid, jnp.float32))
    schedule.check_t(t_grid, "t_grid")
    fine_kind = fit.config.negatives.fine_kind
    is_coarse, scales, pos, neg_base, keys = _heldout_draws(key, family, t_grid, kinds, n)
    table = np.asarray(
        _auc_members_jit(keys, fit.members(), family, schedule, t_grid, is_coarse, scales, pos, neg_base, fine_kind)
    )  # [seeds, kinds, t]
    return {
        "t": np.asarray(t_grid).tolist(),
        "auc": {k: table[:, i].tolist() for i, k in enumerate(kinds)},
        "null_std": auc_null_std(n, n),
        "n_per_class": n,
    }


def _heldout_draws(key, family, t_grid, kinds, n):
    """Fresh clean positives and negative bases [K, T, n, dim] for every (kind, t) cell."""
    parsed = [parse_kind(k) for k in kinds]
    is_coarse = jnp.asarray([b == "coarse" for b, _ in parsed])
    scales = jnp.asarray([s for _, s in parsed], jnp.float32)
    n_k, n_t = len(kinds), t_grid.shape[0]
    k_pos, k_base, k_cells = jax.random.split(key, 3)
    pos = family.sample(k_pos, n_k * n_t * n).reshape(n_k, n_t, n, -1)
    neg_base = family.sample(k_base, n_k * n_t * n).reshape(n_k, n_t, n, -1)
    keys = jax.random.split(k_cells, n_k * n_t).reshape(n_k, n_t, -1)
    return is_coarse, scales, pos, neg_base, keys


def _negatives_traced(key, family, z, is_coarse, scale, fine_kind):
    """`make_negatives` with the kind as traced values (is_coarse, scale), so that all
    kinds share one compilation."""
    k_pair, k_off = jax.random.split(key)
    n = z.shape[0]
    _, y = family.features(z)
    partner = (jnp.arange(n) + jax.random.randint(k_pair, (n,), 1, n)) % n
    y_fine = y + _fine_offset(k_off, y.shape, scale.astype(z.dtype), family.sigma_r, fine_kind, z.dtype)
    return _replace_y(family, z, jnp.where(is_coarse, y[partner], y_fine))


def _auc_at(key, classifier, family, schedule, t, is_coarse, scale, pos, neg_base, fine_kind):
    k_neg, k_np, k_nn = jax.random.split(key, 3)
    neg = _negatives_traced(k_neg, family, neg_base, is_coarse, scale, fine_kind)
    tt = jnp.full(pos.shape[:1], t, pos.dtype)
    zp, _ = schedule.perturb(k_np, pos, tt)
    zn, _ = schedule.perturb(k_nn, neg, tt)
    return auc(classifier.logit(zp, tt), classifier.logit(zn, tt))


def _auc_table(keys, classifier, family, schedule, t_grid, is_coarse, scales, pos, neg_base, fine_kind):
    over_t = jax.vmap(_auc_at, in_axes=(0, None, None, None, 0, None, None, 0, 0, None))
    over_kind = jax.vmap(over_t, in_axes=(0, None, None, None, None, 0, 0, 0, 0, None))
    return over_kind(keys, classifier, family, schedule, t_grid, is_coarse, scales, pos, neg_base, fine_kind)


_auc_table_jit = jax.jit(_auc_table, static_argnames=("fine_kind",))


def _auc_members(keys, members, family, schedule, t_grid, is_coarse, scales, pos, neg_base, fine_kind):
    def one(params):
        clf = members.replace(params=params)
        return _auc_table(keys, clf, family, schedule, t_grid, is_coarse, scales, pos, neg_base, fine_kind)

    return jax.vmap(one)(members.params)


_auc_members_jit = jax.jit(_auc_members, static_argnames=("fine_kind",))


# ======================================================================================
# Guidance diagnostics
# ======================================================================================
def check_guidance_weight(w: Any) -> float:
    """w must be a finite real number >= 0 (w = 0 is the unguided base score)."""
    if np.ndim(w) != 0:
        raise ValueError(f"w must be a scalar, got shape {np.shape(w)}")
    check_finite("w", w)
    check_positive("w", w, allow_zero=True)
    return float(w)


def guided_score(base, log_classifier, w: float, max_guidance_norm: float | None = None):
    """`GuidedScore(base, log_classifier, w)` after checking w (finite, >= 0) and the clip."""
    from dsmtheory.scores import GuidedScore

    w = check_guidance_weight(w)
    if max_guidance_norm is not None:
        check_positive("max_guidance_norm", max_guidance_norm)
    if not callable(log_classifier):
        raise TypeError(f"log_classifier must be callable as log_c(z, t), got {type(log_classifier).__name__}")
    return GuidedScore(base=base, log_classifier=log_classifier, weight=w, max_guidance_norm=max_guidance_norm)


def guidance_norm_profile(key: Array, guided, schedule: Schedule, samples: Array, t_grid: Sequence[float] | Array) -> dict:
    """How large the guidance term w ∇log c gets, and how often a clip is active.

    The sampler's own trajectory is not recorded, so the states it visits are stood in
    for by the forward-noised final samples z_t = α(t) ẑ0 + σ(t) ε at each t of `t_grid`
    (exact when the sampler follows the reverse process of its own output distribution).
    Returns {"t", "max_norm" [per t], "median_norm" [per t], "clip_fraction" [per t]
    (share of points whose unclipped norm exceeds guided.max_guidance_norm; 0 when no
    clip is set), "max_norm_overall", "clip_fraction_overall"}."""
    samples = jnp.asarray(samples)
    if samples.ndim != 2:
        raise ValueError(f"samples must have shape [n, dim], got {samples.shape}")
    t_grid = jnp.atleast_1d(jnp.asarray(t_grid, samples.dtype))
    schedule.check_t(t_grid, "t_grid")
    norms = np.asarray(_norm_profile_jit(key, guided, schedule, samples, t_grid))  # [T, n]
    clip = guided.max_guidance_norm
    frac = (norms > clip).mean(axis=1) if clip is not None else np.zeros(norms.shape[0])
    return {
        "t": np.asarray(t_grid).tolist(),
        "max_norm": norms.max(axis=1).tolist(),
        "median_norm": np.median(norms, axis=1).tolist(),
        "clip_fraction": frac.tolist(),
        "max_guidance_norm": None if clip is None else float(clip),
        "max_norm_overall": float(norms.max()),
        "clip_fraction_overall": float(np.mean(frac)),
    }


def _norm_profile(key, guided, schedule, samples, t_grid):
    def at(k, t):
        tt = jnp.full(samples.shape[:1], t, samples.dtype)
        zt, _ = schedule.perturb(k, samples, tt)
        return guided.guidance_norm(zt, tt)

    return jax.vmap(at)(jax.random.split(key, t_grid.shape[0]), t_grid)


_norm_profile_jit = jax.jit(_norm_profile)


# ======================================================================================
# Filtering
# ======================================================================================
class OracleDetector(PyTreeNode):
    """Accept a clean sample if ‖y − f(x)‖ < c σ_r √dy with the family's known rule f.

    The oracle: it uses the true rule, which a practitioner does not have. With c = 3 a
    sample from the truth is accepted with probability P(χ²_dy < 9 dy) (≈ 0.997 for dy = 1)."""

    family: Any
    c: float = 3.0

    def __post_init__(self):
        check_positive("c", self.c)

    def __call__(self, z: Array) -> Array:
        x, y = self.family.features(z)
        r = y - self.family.rule(x)
        return jnp.linalg.norm(r, axis=-1) < self.c * self.family.sigma_r * math.sqrt(self.family.dy)


class ClassifierDetector(PyTreeNode):
    """Accept a clean sample if the rule classifier, read at the smallest noise level t,
    says P(conforms | z) > threshold. Needs no knowledge of the rule, only the classifier."""

    log_classifier: Any
    t: float
    threshold: float = 0.5

    def __post_init__(self):
        check_in_range("threshold", self.threshold, 0.0, 1.0, inclusive=False)
        check_positive("t", self.t)

    def __call__(self, z: Array) -> Array:
        t = jnp.full(z.shape[:-1], self.t, z.dtype)
        return self.log_classifier(z, t) > jnp.log(jnp.asarray(self.threshold, z.dtype))


_apply_detector = jax.jit(lambda detector, z: detector(z))  # detectors are pytrees: one compile per kind


def filter_samples(z: Array, detector: Callable) -> tuple[Array, float]:
    """(accepted samples [m, dim], acceptance rate m/n) for a detector(z) -> bool [n]."""
    if z.ndim != 2:
        raise ValueError(f"z must have shape [n, dim], got {z.shape}")
    keep = np.asarray(_apply_detector(detector, jnp.asarray(z)) if isinstance(detector, PyTreeNode)
                      else detector(z), dtype=bool)
    if keep.shape != z.shape[:1]:
        raise ValueError(f"detector must return one bool per sample, got shape {keep.shape}")
    return z[np.nonzero(keep)[0]], float(keep.mean())
