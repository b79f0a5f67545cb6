"""Small Flax score networks s_θ(z_t, t) (THEORY.md §3).

Every network here is a `flax.linen.Module` with

    __call__(z_t: [..., D], t: [...]) -> [..., D]

whose output is read as ε̂, x̂0 or a score according to the training
*parameterisation* ('eps' | 'x0' | 'score'); the conversion to a score lives
in `dsmtheory.scores.output_to_score`, never here.

Three architectures (`make_network(kind, dim, ...)`):

- ``'mlp'``: a joint MLP on the whole of z: `depth` hidden layers of `width`
  units; each hidden layer gets the time embedding added through its own
  Dense projection (h ← act(W h + U e(t) + b)).
- ``'two_layer'``: the two-layer network of theory papers, one hidden layer of
  width m: s(z, t) = W₂ act(W₁ z + U e(t) + b₁) + b₂. (It is the MLP with
  depth 1, kept as its own name because the theory literature studies it.)
- ``'feature_local'``: mimics the locality of a convolutional U-Net. Every
  scalar coordinate z_i is a *token*; one small network with SHARED weights
  is applied to every token (as a convolution kernel is applied at every
  pixel). The coordinates are in two groups, the cause x = z[:dx] and the
  effect y = z[dx:]. The only channel between tokens is a bottleneck of
  `mix_width` units per layer: each token writes `mix_width` numbers, these
  are averaged over the x-group and over the y-group, and the two averages
  (2·mix_width numbers) are fed back to every token. mix_width = 0 means no
  mixing at all (x and y are modelled independently and no rule can be
  learned); small mix_width = "limited mixing". A learned per-group bias
  (`group_embedding`) lets the shared network tell x-tokens from y-tokens,
  as boundary/position information does in a conv net. For an embedded family
  (THEORY §2.5) the groups are the raw coordinates z[:dx] and z[dx:]: the
  network is never told the family's feature frame.

Time embedding and input scaling (preconditioning). With a `schedule`, the
network sees
    c_in(t) · z_t,   c_in = 1/√(α² σ_data² + σ²)   (unit-variance input, as EDM's c_in)
    c_noise(t) = ¼ · log(σ(t)/α(t))                (log noise-to-signal)
so one network trains well under VP, VE and EDM alike: the input has unit
scale for every t, and the time variable spans a few units for every
schedule (raw t would span [1e-5, 1] for VE and [0.002, 80] for EDM). The
time embedding is deterministic sinusoidal features of c_noise at
`time_features` log-spaced frequencies (sin and cos: 2·time_features numbers);
being fixed (not random) keeps a NetworkConfig sufficient to rebuild the
network exactly. Without a schedule (or input_scaling=False), c_in = 1 and
c_noise = t.

The schedule inside a module is converted to plain Python floats so that the
module is hashable (jit caches compilations on it and `ModuleApply` compares
equal for equal configurations).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dsmtheory._validation import check_choice, check_int, check_positive, is_concrete
from dsmtheory.schedules import Schedule

Array = jax.Array

NETWORK_KINDS = ("mlp", "two_layer", "feature_local")
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "silu": nn.silu,
    "gelu": nn.gelu,
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "softplus": nn.softplus,
}


# --------------------------------------------------------------------------------------
# Shared pieces: preconditioning and time embedding
# --------------------------------------------------------------------------------------
def hashable_schedule(schedule: Schedule | None) -> Schedule | None:
    """The same schedule with Python-float fields (hashable), or None."""
    if schedule is None:
        return None
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a dsmtheory Schedule, got {type(schedule).__name__}")
    if not is_concrete(schedule):
        raise ValueError("a network's schedule must be concrete (not traced); build the network outside jit")
    fields = {f.name: float(getattr(schedule, f.name)) for f in dataclasses.fields(schedule)}
    return type(schedule)(**fields)


def precondition(z: Array, t: Array, schedule: Schedule | None, data_std: float, input_scaling: bool):
    """(c_in · z, c_noise) — see the module docstring. t broadcasts to z.shape[:-1]."""
    t = jnp.broadcast_to(jnp.asarray(t, z.dtype), z.shape[:-1])
    if schedule is None or not input_scaling:
        return z, t
    a2 = jnp.exp(2.0 * schedule.log_alpha(t))
    s2 = schedule.sigma_sq(t)
    c_in = jax.lax.rsqrt(a2 * data_std**2 + s2).astype(z.dtype)
    # log(σ/α) = ½ log σ² − log α; written this way it stays finite in float32 near t = 0.
    c_noise = 0.25 * (0.5 * jnp.log(s2) - schedule.log_alpha(t))
    return z * c_in[..., None], c_noise.astype(z.dtype)


def time_embedding(c_noise: Array, n_features: int) -> Array:
    """Sinusoidal features [..., 2·n_features] of c_noise at log-spaced frequencies 1 … 100."""
    freqs = jnp.exp(jnp.linspace(0.0, math.log(100.0), n_features, dtype=c_noise.dtype))
    ang = c_noise[..., None] * freqs
    return jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], axis=-1)


# --------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------
class MLPScoreNet(nn.Module):
    """Joint MLP; `depth` = 1 is the two-layer network. See module docstring."""

    dim: int
    width: int = 128
    depth: int = 2
    activation: str = "silu"
    time_features: int = 16
    schedule: Schedule | None = None
    data_std: float = 1.0
    input_scaling: bool = True

    @nn.compact
    def __call__(self, z: Array, t: Array) -> Array:
        act = ACTIVATIONS[self.activation]
        h, c_noise = precondition(z, t, self.schedule, self.data_std, self.input_scaling)
        emb = time_embedding(c_noise, self.time_features)
        for i in range(self.depth):
            h = act(nn.Dense(self.width, name=f"hidden_{i}")(h) + nn.Dense(self.width, name=f"time_{i}")(emb))
        return nn.Dense(self.dim, name="out")(h)


class FeatureLocalScoreNet(nn.Module):
    """Shared per-coordinate network with a `mix_width` bottleneck between the x and y
    groups (see module docstring). z[..., :dx] is the x-group, z[..., dx:] the y-group."""

    dim: int
    dx: int
    width: int = 64
    depth: int = 2
    mix_width: int = 4
    activation: str = "silu"
    time_features: int = 16
    group_embedding: bool = True
    schedule: Schedule | None = None
    data_std: float = 1.0
    input_scaling: bool = True

    @nn.compact
    def __call__(self, z: Array, t: Array) -> Array:
        act = ACTIVATIONS[self.activation]
        zs, c_noise = precondition(z, t, self.schedule, self.data_std, self.input_scaling)
        emb = time_embedding(c_noise, self.time_features)[..., None, :]  # [..., 1, F] shared by tokens
        tokens = zs[..., None]  # [..., D, 1]: one token per coordinate
        h = nn.Dense(self.width, name="embed")(tokens)
        if self.group_embedding:
            group_bias = self.param("group_bias", nn.initializers.normal(0.1), (2, self.width))
            is_y = (jnp.arange(self.dim) >= self.dx)[:, None]
            h = h + jnp.where(is_y, group_bias[1], group_bias[0])
        for i in range(self.depth):
            pre = nn.Dense(self.width, name=f"local_{i}")(act(h)) + nn.Dense(self.width, name=f"time_{i}")(emb)
            if self.mix_width > 0:
                msg = nn.Dense(self.mix_width, name=f"mix_down_{i}")(act(h))  # [..., D, m]
                pooled = jnp.concatenate(
                    [jnp.mean(msg[..., : self.dx, :], axis=-2), jnp.mean(msg[..., self.dx :, :], axis=-2)], axis=-1
                )  # [..., 2m]: the only inter-token channel
                pre = pre + nn.Dense(self.width, name=f"mix_up_{i}")(pooled)[..., None, :]
            h = h + pre  # residual keeps the shared token network well conditioned
        return nn.Dense(1, name="out")(act(h))[..., 0]


# --------------------------------------------------------------------------------------
# Config + factory
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Plain-data description of a score network (JSON-serialisable, hashable)."""

    kind: str = "mlp"
    dim: int = 2
    width: int = 128
    depth: int = 2
    activation: str = "silu"
    time_features: int = 16
    mix_width: int = 4  # feature_local only
    dx: int | None = None  # feature_local only: size of the x-group (default dim // 2)
    group_embedding: bool = True  # feature_local only
    data_std: float = 1.0
    input_scaling: bool = True

    def __post_init__(self):
        check_choice("kind", self.kind, NETWORK_KINDS)
        check_int("dim", self.dim, minimum=1)
        check_int("width", self.width, minimum=1)
        check_int("depth", self.depth, minimum=1)
        if self.kind == "two_layer" and self.depth != 1:
            raise ValueError(f"the two_layer network has exactly one hidden layer (depth=1), got depth={self.depth}")
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_int("time_features", self.time_features, minimum=1)
        check_int("mix_width", self.mix_width, minimum=0)
        if self.dx is not None:
            check_int("dx", self.dx, minimum=1, maximum=self.dim - 1)
        if self.kind == "feature_local" and self.dim < 2:
            raise ValueError("feature_local needs dim >= 2 (an x-group and a y-group)")
        check_positive("data_std", self.data_std)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown NetworkConfig keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def build(self, schedule: Schedule | None = None) -> nn.Module:
        """The flax module (with `schedule` for input scaling/time variable; see module doc)."""
        sched = hashable_schedule(schedule)
        if self.kind in ("mlp", "two_layer"):
            return MLPScoreNet(
                dim=self.dim,
                width=self.width,
                depth=self.depth,
                activation=self.activation,
                time_features=self.time_features,
                schedule=sched,
                data_std=self.data_std,
                input_scaling=self.input_scaling,
            )
        return FeatureLocalScoreNet(
            dim=self.dim,
            dx=self.dx if self.dx is not None else self.dim // 2,
            width=self.width,
            depth=self.depth,
            mix_width=self.mix_width,
            activation=self.activation,
            time_features=self.time_features,
            group_embedding=self.group_embedding,
            schedule=sched,
            data_std=self.data_std,
            input_scaling=self.input_scaling,
        )


def network_config(kind: str, dim: int, *, width: int = 128, depth: int | None = None, **kwargs) -> NetworkConfig:
    """NetworkConfig with kind-appropriate defaults (two_layer ⇒ depth 1, otherwise 2)."""
    if depth is None:
        depth = 1 if kind == "two_layer" else 2
    return NetworkConfig(kind=kind, dim=dim, width=width, depth=depth, **kwargs)


def make_network(kind: str, dim: int, *, width: int = 128, depth: int | None = None,
                 schedule: Schedule | None = None, **kwargs) -> nn.Module:
    """Build a score network: kind ∈ {'mlp', 'two_layer', 'feature_local'}, z of dimension `dim`.

    Extra keyword arguments are NetworkConfig fields (activation, time_features,
    mix_width, dx, group_embedding, data_std, input_scaling); unknown ones raise."""
    return network_config(kind, dim, width=width, depth=depth, **kwargs).build(schedule)


# --------------------------------------------------------------------------------------
# A hashable apply function (for LearnedScore's static field and jit caches)
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModuleApply:
    """`apply(params, z, t)` of a flax module; equal (and equal-hashing) for equal modules.

    A bound method `module.apply` compares by object identity, so two LearnedScores
    built from equal modules would have different treedefs and re-trigger compilation
    of a jitted sampler; this wrapper compares by the module's configuration."""

    module: Any

    def __post_init__(self):
        if not hasattr(self.module, "apply"):
            raise TypeError(f"model must have an apply(params, z, t) method, got {type(self.module).__name__}")
        try:
            hash(self.module)
        except Exception as err:  # flax raises a plain Exception for unhashable attributes
            raise TypeError(
                "the model must be hashable (a flax module whose attributes are Python scalars, "
                "strings, tuples or hashable pytrees); convert array attributes to Python values"
            ) from err

    def __call__(self, params, z: Array, t: Array) -> Array:
        return self.module.apply(params, z, t)


def count_params(params) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def matmul_flops_per_example(config: NetworkConfig) -> int:
    """Multiply-add FLOPs (2 per MAC) of the dense layers of one forward pass, one example."""
    d, w, f = config.dim, config.width, 2 * config.time_features
    if config.kind in ("mlp", "two_layer"):
        macs = d * w + (config.depth - 1) * w * w + config.depth * f * w + w * d
    else:
        m = config.mix_width
        per_layer = d * w * w + f * w + (d * w * m + 2 * m * w if m > 0 else 0)
        macs = d * w + config.depth * per_layer + d * w
    return 2 * macs
