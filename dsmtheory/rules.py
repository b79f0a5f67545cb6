"""Rules y = f(x) as pytrees (THEORY.md notation: y = f(x) + σ_r ε).

A rule's parameters (k, h, ...) are pytree leaves, so a sweep over, e.g., the
frequency k of sin(k x) is a `vmap` or a re-use of one compiled program rather
than a new trace per value. A rule is called on x of shape [..., dx] and returns
[..., dy]. Rules for dx = 1 also give a bound on |f'| over an interval
(`lipschitz_bound`), which the quadrature family uses to size its node count.
"""

from __future__ import annotations

from typing import ClassVar

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from dsmtheory._pytree import PyTreeNode, field

from dsmtheory._validation import check_finite, check_in_range, check_int, check_positive

Array = jax.Array


class Rule(PyTreeNode):
    """y = f(x). Subclasses implement `__call__(x: [..., dx]) -> [..., dy]`."""

    name: ClassVar[str] = "abstract"
    dx: ClassVar[int] = 1
    dy: ClassVar[int] = 1

    def __call__(self, x: Array) -> Array:  # pragma: no cover - abstract
        raise NotImplementedError

    def scalar(self, u: Array) -> Array:
        """f on scalars/arrays of x-values for dx = dy = 1 (shape in = shape out)."""
        return self(jnp.asarray(u)[..., None])[..., 0]

    def derivative(self, u: Array) -> Array:
        """f'(u) for dx = dy = 1, elementwise."""
        u = jnp.asarray(u)
        return jax.vmap(jax.grad(self.scalar))(u.reshape(-1)).reshape(u.shape)

    def lipschitz_bound(self, lo: float, hi: float, n_grid: int = 4097) -> float:
        """max |f'| on [lo, hi], from a dense grid plus a 10% margin (dx = dy = 1).

        Compiled once per rule type and grid size (the rule is a traced argument), so
        building many families in a sweep stays cheap."""
        check_finite("lo", lo)
        check_finite("hi", hi)
        if float(lo) >= float(hi):
            raise ValueError(f"lo must be < hi, got lo={lo}, hi={hi}")
        n_grid = check_int("n_grid", n_grid, minimum=2)
        return 1.1 * float(_max_abs_slope(self, jnp.linspace(lo, hi, n_grid)))

    def to_config(self) -> dict:
        cfg = {"name": self.name}
        for f in (fld.name for fld in dataclasses.fields(self)):
            v = getattr(self, f)
            cfg[f] = float(v) if np.ndim(v) == 0 else np.asarray(v).tolist()
        return cfg


@jax.jit
def _max_abs_slope(rule: Rule, grid: Array) -> Array:
    return jnp.max(jnp.abs(rule.derivative(grid)))


class Linear1D(Rule):
    """y = a x + b."""

    a: float = 1.0
    b: float = 0.0
    name: ClassVar[str] = "linear"

    def __post_init__(self):
        check_finite("a", self.a)
        check_finite("b", self.b)

    def __call__(self, x):
        return self.a * x + self.b


class Sine(Rule):
    """y = amplitude · sin(k x): k sets the rule's complexity (steepness)."""

    k: float = 1.0
    amplitude: float = 1.0
    name: ClassVar[str] = "sin"

    def __post_init__(self):
        check_positive("k", self.k)
        check_positive("amplitude", self.amplitude)

    def __call__(self, x):
        return self.amplitude * jnp.sin(self.k * x)


class Shadow(Rule):
    """Shadow length of a pole of height h under sun elevation θ = x (radians):
    y = h · cot(θ) (similar triangles). Defined for θ ∈ (0, π/2); sample x away from 0."""

    height: float = 1.0
    name: ClassVar[str] = "shadow"

    def __post_init__(self):
        check_positive("height", self.height)

    def __call__(self, x):
        return self.height * jnp.cos(x) / jnp.sin(x)


class Reflection(Rule):
    """Mirror image about the line x = c: y = 2c − x."""

    center: float = 0.0
    name: ClassVar[str] = "reflection"

    def __post_init__(self):
        check_finite("center", self.center)

    def __call__(self, x):
        return 2.0 * self.center - x


class Ratio(Rule):
    """Two lengths in fixed ratio: y = r · x (e.g. two bars)."""

    ratio: float = 0.5
    name: ClassVar[str] = "ratio"

    def __post_init__(self):
        check_positive("ratio", self.ratio)

    def __call__(self, x):
        return self.ratio * x


class Perspective(Rule):
    """Apparent size shrinking with distance to the horizon: y = c / (x + d)."""

    scale: float = 1.0
    offset: float = 1.0
    name: ClassVar[str] = "perspective"

    def __post_init__(self):
        check_positive("scale", self.scale)
        check_in_range("offset", self.offset, 1e-6, np.inf)

    def __call__(self, x):
        return self.scale / (x + self.offset)


class LinearMap(Rule):
    """y = A x + b for any dx, dy (A: [dy, dx])."""

    A: Array = field(default_factory=lambda: jnp.ones((1, 1)))
    b: Array = field(default_factory=lambda: jnp.zeros((1,)))
    name: ClassVar[str] = "linear_map"

    def __post_init__(self):
        check_finite("A", self.A)
        check_finite("b", self.b)

    def __call__(self, x):
        return x @ jnp.asarray(self.A).T + self.b

    def to_config(self) -> dict:
        return {"name": self.name, "A": np.asarray(self.A).tolist(), "b": np.asarray(self.b).tolist()}


RULES: dict[str, type[Rule]] = {
    cls.name: cls for cls in (Linear1D, Sine, Shadow, Reflection, Ratio, Perspective, LinearMap)
}


def get_rule(name: str, **params) -> Rule:
    """Build a rule by name; unknown names raise ValueError listing the choices."""
    if not isinstance(name, str):
        raise TypeError(f"rule name must be a string, got {type(name).__name__}")
    if name not in RULES:
        raise ValueError(f"unknown rule name {name!r}; choose one of {sorted(RULES)}")
    return RULES[name](**params)


def rule_from_config(cfg: dict) -> Rule:
    cfg = dict(cfg)
    name = cfg.pop("name")
    if name == "linear_map":
        return LinearMap(A=jnp.asarray(cfg["A"]), b=jnp.asarray(cfg["b"]))
    return get_rule(name, **cfg)
