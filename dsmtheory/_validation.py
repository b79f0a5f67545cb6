"""Argument checks shared by every public entry point.

Checks run only on *concrete* values (Python numbers, NumPy arrays, committed
JAX arrays). Inside `jit`/`vmap` the same constructors are re-run on tracers
(pytree nodes, `dsmtheory._pytree`, call ``__post_init__`` on unflatten), where a Python
``if`` would fail; there the check is skipped, since the value was already
checked when the object was first built outside the transformation.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np


def is_concrete(value: Any) -> bool:
    """True when `value` holds actual numbers (not a JAX tracer)."""
    leaves = jax.tree_util.tree_leaves(value)
    # Anything that is not a plain number or a materialised array (a tracer, or the
    # abstract placeholders `jit(...).lower` passes through constructors) is skipped.
    return all(
        # str/bytes count as concrete so that a string given for a number is refused
        # (TypeError naming the parameter) instead of silently skipping the check.
        isinstance(leaf, (bool, int, float, complex, str, bytes, np.ndarray, np.generic))
        or (isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer))
        for leaf in leaves
    )


def _as_float_array(name: str, value: Any) -> np.ndarray:
    if any(isinstance(leaf, (str, bytes)) for leaf in jax.tree_util.tree_leaves(value)):
        raise TypeError(f"{name} must be a real number or array of real numbers, got {value!r}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a real number or array of real numbers, got {value!r}") from err
    return arr


def check_finite(name: str, value: Any) -> None:
    if not is_concrete(value):
        return
    arr = _as_float_array(name, value)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    """Raise ValueError unless every entry of `value` is finite and > 0 (or >= 0)."""
    if not is_concrete(value):
        return
    arr = _as_float_array(name, value)
    bad = ~np.isfinite(arr) | ((arr < 0) if allow_zero else (arr <= 0))
    if np.any(bad):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")


def check_in_range(name: str, value: Any, low: float, high: float, *, inclusive: bool = True) -> None:
    """Raise ValueError unless low <= value <= high (or strict) everywhere."""
    if not is_concrete(value):
        return
    arr = _as_float_array(name, value)
    if inclusive:
        ok = np.isfinite(arr) & (arr >= low) & (arr <= high)
        interval = f"[{low:g}, {high:g}]"
    else:
        ok = np.isfinite(arr) & (arr > low) & (arr < high)
        interval = f"({low:g}, {high:g})"
    if not np.all(ok):
        shown = value if arr.size <= 4 else f"array with min {np.nanmin(arr):g}, max {np.nanmax(arr):g}"
        raise ValueError(f"{name} must lie in {interval}, got {shown}")


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return `value` as int; TypeError for non-integers, ValueError when out of range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_last_dim(name: str, value: Any, expected: int) -> None:
    """Raise ValueError unless value.shape[-1] == expected."""
    shape = getattr(value, "shape", None)
    if shape is None:
        raise TypeError(f"{name} must be an array with last dimension {expected}, got {type(value).__name__}")
    if len(shape) == 0 or shape[-1] != expected:
        raise ValueError(f"{name} must have last dimension {expected}, got shape {tuple(shape)}")


def check_choice(name: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")


def as_python_float(name: str, value: Any) -> float:
    """Convert a scalar to float for JSON/config use, with a clear error."""
    try:
        out = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a real scalar, got {value!r}") from err
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def check_key(name: str, key) -> None:
    """Raise TypeError unless `key` is a JAX PRNG key (typed key, or raw uint32 [..., 2])."""
    if not is_concrete(key):
        return
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return
    if dtype is not None and np.dtype(dtype) == np.uint32 and np.shape(key)[-1:] == (2,):
        return
    raise TypeError(
        f"{name} must be a JAX PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed)), "
        f"got {type(key).__name__} {key!r}"
    )
