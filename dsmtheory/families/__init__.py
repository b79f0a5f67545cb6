"""Jointly-dependent (x, y) families with exact noised scores (THEORY.md §2).

- `LinearGaussian`   §2.1  x ~ N(μ, Σ), y = A x + b + σ_r ε (closed form)
- `NonlinearRule`    §2.2  x ~ Gaussian/uniform/mixture, y = f(x) + σ_r ε (quadrature)
- `GaussianMixture`  §2.3  Σ w_k N(μ_k, C_k) (closed form by responsibilities)
- `EmpiricalMeasure` §2.4  (1/n) Σ δ_{z_i} of a training set (closed form)
- `Embedded`         §2.5  any 2-D family in R^D with a Gaussian background

`get_family(name, **params)` builds one by name; `family_from_config(cfg)` rebuilds
any family from its `to_config()` dict.
"""

from __future__ import annotations

from typing import Any

from dsmtheory.families.base import Family
from dsmtheory.families.embedded import Embedded
from dsmtheory.families.empirical import EmpiricalMeasure
from dsmtheory.families.gmm import GaussianMixture
from dsmtheory.families.linear_gaussian import LinearGaussian
from dsmtheory.families.nonlinear import (
    GaussianX,
    MixtureX,
    NonlinearRule,
    UniformX,
    XMarginal,
    get_x_marginal,
    x_marginal_from_config,
)

FAMILIES: dict[str, type[Family]] = {
    cls.name: cls for cls in (LinearGaussian, NonlinearRule, GaussianMixture, EmpiricalMeasure, Embedded)
}
_ALIASES = {"gmm": "gaussian_mixture", "linear": "linear_gaussian", "empirical_measure": "empirical"}


def _as_family(name: str, value: Any) -> Family:
    if isinstance(value, Family):
        return value
    if isinstance(value, dict):
        return family_from_config(value)
    raise TypeError(f"{name} must be a Family or a family config dict, got {type(value).__name__}")


def get_family(name: str, **params) -> Family:
    """Build a family by name.

    'linear_gaussian' (LinearGaussian.create: mu_x, cov_x, A, b, sigma_r)
    'nonlinear'       (NonlinearRule.create: x_marginal, f, sigma_r, rule_params, n_panels, ...)
    'gaussian_mixture' / 'gmm' (GaussianMixture.create: weights, means, covs, dx, sigma_r)
    'empirical'       (EmpiricalMeasure.from_samples: points, base (Family or config), mask, n_max)
    'embedded'        (Embedded.create: base (Family or config), D, key, frame, sigma_b)
    Unknown names raise ValueError listing the choices."""
    if not isinstance(name, str):
        raise TypeError(f"family name must be a string, got {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in FAMILIES:
        raise ValueError(f"unknown family name {name!r}; choose one of {sorted(FAMILIES)}")
    params = dict(params)
    if key == "linear_gaussian":
        return LinearGaussian.create(**params)
    if key == "nonlinear":
        return NonlinearRule.create(**params)
    if key == "gaussian_mixture":
        return GaussianMixture.create(**params)
    if key == "empirical":
        if "base" in params:
            params["base_family"] = params.pop("base")
        params["base_family"] = _as_family("base", params.get("base_family"))
        return EmpiricalMeasure.from_samples(**params)
    # embedded
    params["base"] = _as_family("base", params.get("base"))
    return Embedded.create(**params)


def family_from_config(cfg: dict) -> Family:
    """Rebuild a family from its `to_config()` dict (nested base families included)."""
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise TypeError(f"a family config must be a dict with a 'name', got {cfg!r}")
    cfg = dict(cfg)
    name = cfg.pop("name")
    if _ALIASES.get(name, name) == "nonlinear":
        return NonlinearRule.from_config(cfg)
    return get_family(name, **cfg)


__all__ = [
    "Family",
    "LinearGaussian",
    "NonlinearRule",
    "GaussianMixture",
    "EmpiricalMeasure",
    "Embedded",
    "XMarginal",
    "GaussianX",
    "UniformX",
    "MixtureX",
    "get_x_marginal",
    "x_marginal_from_config",
    "FAMILIES",
    "get_family",
    "family_from_config",
]
