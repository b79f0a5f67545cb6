"""Statistics of the constant-error check (THEORY §5): CIs over seeds, the
log-log slope of ρ against n, the excess over the oracle, and the verdict.

Inputs are arrays ``rho[seed, n]`` (one row per seed, one column per training-set
size) for a curve (learned, empirical-optimal, ...) and for the oracle run on
the same sampler, steps and t_min.

Choices, and why:

- **CIs over seeds are Student-t intervals** (`mean_ci`). Seeds are independent
  replicates of the whole pipeline (training set, training, sampling), so the
  per-seed quantity is an iid sample; with the 4-8 seeds a study can afford, a
  percentile bootstrap under-covers badly (it ignores the t-quantile's
  small-sample inflation), while the t-interval is exact for normal data and
  robust enough for the near-symmetric ρ estimates here.
- **Slope: per-seed least-squares slopes, then a t-interval across seeds**
  (`loglog_slope`). For each seed, log ρ is regressed on log n over the upper
  half of the n values (the plateau region the theorem is about); the seed
  slopes are iid, so their t-interval is valid even though points of one
  seed are correlated across n (e.g. nested training sets, shared sampler
  keys), which a pooled regression over all seed × n points would treat as
  independent and so give a too-narrow CI. A seed-cluster bootstrap fixes that
  in principle but with 4 clusters it has only a handful of distinct
  resamples. With a single seed there is nothing to average over, and the
  fallback is the ordinary-least-squares slope CI (residual variance,
  m − 2 degrees of freedom, needs ≥ 3 n values).
- **Excess over the oracle**: ρ_curve − ρ_oracle, paired by seed and n when
  both arrays have the same shape (pairing cancels shared noise: the same seed
  gives the same sampler keys), averaged over the same upper-half n values
  per seed, then a t-interval across seeds. Unpaired (different seed counts):
  per-seed upper-half means of each curve, Welch t-interval of the difference.
- **Verdict** (THEORY §5), computed from the numbers: "constant error" ⇔ the
  slope CI contains 0 AND the excess is > 0 with its CI excluding 0.
  Otherwise the failed conditions are listed: "error decreasing with n",
  "error increasing with n", "no excess over oracle (CI contains 0)",
  "error below oracle".

Also reported (not used by the verdict): the log-log slope of the excess
itself over the upper half of n (where every seed's mean excess is positive),
since a curve with ρ − 1 ∝ n^(−1/2) near ρ ≈ 1 has a small log ρ slope.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

__all__ = [
    "MeanCI",
    "SlopeFit",
    "ExcessFit",
    "ConstantErrorVerdict",
    "mean_ci",
    "curve_bands",
    "upper_half",
    "loglog_slope",
    "excess_over_oracle",
    "constant_error_verdict",
]

CONSTANT_ERROR = "constant error"
NO_CONSTANT_ERROR = "no constant error"


@dataclasses.dataclass(frozen=True)
class MeanCI:
    """Mean over seeds with a two-sided Student-t confidence interval."""

    mean: float
    lo: float
    hi: float
    sem: float
    n_samples: int
    level: float

    def to_dict(self) -> dict:
        return _json_ready(dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class SlopeFit:
    """Log-log slope d log ρ / d log n on `n_fit` with its CI."""

    slope: float
    lo: float
    hi: float
    n_fit: tuple[int, ...]
    method: str  # "per-seed slopes, t-interval" | "OLS (single seed)"
    per_seed: tuple[float, ...]
    level: float

    def contains_zero(self) -> bool:
        return self.lo <= 0.0 <= self.hi

    def to_dict(self) -> dict:
        return _json_ready(dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class ExcessFit:
    """Excess ρ_curve − ρ_oracle averaged over `n_fit`, with its CI over seeds."""

    mean: float
    lo: float
    hi: float
    n_fit: tuple[int, ...]
    method: str  # "paired by seed and n, t-interval" | "unpaired, Welch t-interval"
    per_seed: tuple[float, ...]
    level: float

    def to_dict(self) -> dict:
        return _json_ready(dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class ConstantErrorVerdict:
    """The THEORY §5 verdict with every number it was computed from."""

    verdict: str  # "constant error" | "no constant error"
    constant_error: bool
    reasons: tuple[str, ...]  # failed conditions (empty when constant error)
    slope: SlopeFit
    excess: ExcessFit
    excess_slope: float | None  # log-log slope of the mean excess (diagnostic; None if not all > 0)
    level: float

    def summary(self) -> str:
        s, e = self.slope, self.excess
        text = (f"{self.verdict}: slope {s.slope:+.3f} [{s.lo:+.3f}, {s.hi:+.3f}], "
                f"excess {e.mean:+.3f} [{e.lo:+.3f}, {e.hi:+.3f}]")
        return text + (f" ({'; '.join(self.reasons)})" if self.reasons else "")

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "constant_error": self.constant_error,
            "reasons": list(self.reasons),
            "slope": self.slope.to_dict(),
            "excess": self.excess.to_dict(),
            "excess_slope": self.excess_slope,
            "level": self.level,
            "summary": self.summary(),
        }


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (Numerical Recipes §6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(x: float, df: float) -> float:
    """CDF of Student's t with `df` (> 0, not necessarily integer) degrees of freedom."""
    tail = 0.5 * _betainc(0.5 * df, 0.5, df / (df + x * x))
    return 1.0 - tail if x >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t (bisection on `student_t_cdf`, to ~1e-12).

    Written here so the library needs no scipy at run time; tests compare it with
    scipy.stats.t.ppf."""
    if not (0.0 < p < 1.0):
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if not (df > 0 and math.isfinite(df)):
        raise ValueError(f"df must be finite and > 0, got {df}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _json_ready(d: dict) -> dict:
    """Unbounded CI ends (±inf, from a single seed) become None: JSON holds no inf."""
    return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in d.items()}


# --------------------------------------------------------------------------- validation


def _check_level(level: Any) -> float:
    try:
        level = float(level)
    except (TypeError, ValueError):
        raise TypeError(f"level must be a number in (0, 1), got {level!r}") from None
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return level


def _as_matrix(name: str, values: Any, n_cols: int | None = None) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of real numbers, got {type(values).__name__}") from None
    if arr.ndim == 1:
        arr = arr[None, :]  # a single seed
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape [seeds, n_values], got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be non-empty, got shape {arr.shape}")
    if n_cols is not None and arr.shape[1] != n_cols:
        raise ValueError(f"{name} must have one column per n value ({n_cols}), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN/inf), got {int(np.sum(~np.isfinite(arr)))} bad entries")
    return arr


def _as_n(n_values: Any) -> np.ndarray:
    try:
        n = np.asarray(n_values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"n_values must be a 1-D array of positive numbers, got {n_values!r}") from None
    if n.ndim != 1 or n.size < 2:
        raise ValueError(f"n_values must be 1-D with at least 2 entries, got shape {n.shape}")
    if not np.all(np.isfinite(n) & (n > 0)):
        raise ValueError(f"n_values must be finite and > 0, got {n_values!r}")
    if len(np.unique(n)) != n.size:
        raise ValueError(f"n_values must be distinct, got {n_values!r}")
    return n


# --------------------------------------------------------------------------- primitives


def _t_interval(samples: np.ndarray, level: float) -> tuple[float, float, float, float]:
    """(mean, lo, hi, sem) of a 1-D sample; zero-width interval when len 1 or zero spread."""
    m = samples.size
    mean = float(np.mean(samples))
    if m < 2:
        return mean, -math.inf, math.inf, math.inf  # no spread estimate: the CI is unbounded
    sem = float(np.std(samples, ddof=1) / math.sqrt(m))
    half = float(student_t_quantile(0.5 + level / 2.0, m - 1)) * sem
    return mean, mean - half, mean + half, sem


def mean_ci(values: Sequence[float], level: float = 0.95) -> MeanCI:
    """Mean of per-seed values with a Student-t CI. One value gives an unbounded CI."""
    level = _check_level(level)
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("values must be non-empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError("values must be finite (no NaN/inf)")
    mean, lo, hi, sem = _t_interval(arr, level)
    return MeanCI(mean, lo, hi, sem, int(arr.size), level)


def curve_bands(rho: Any, level: float = 0.95) -> dict[str, np.ndarray]:
    """Per-n mean and t-CI over seeds of ``rho[seed, n]`` (for plotting CI bands)."""
    level = _check_level(level)
    arr = _as_matrix("rho", rho)
    cis = [_t_interval(arr[:, j], level) for j in range(arr.shape[1])]
    return {k: np.array([c[i] for c in cis]) for i, k in enumerate(("mean", "lo", "hi", "sem"))}


def upper_half(n_values: Any) -> np.ndarray:
    """Indices of the upper half of the n values: the ⌈m/2⌉ largest (at least 2)."""
    n = _as_n(n_values)
    order = np.argsort(n)
    k = max(2, math.ceil(n.size / 2))
    return np.sort(order[-k:])


def _ols_slope(x: np.ndarray, y: np.ndarray) -> float:
    xc = x - x.mean()
    return float(np.dot(xc, y - y.mean()) / np.dot(xc, xc))


def loglog_slope(n_values: Any, rho: Any, level: float = 0.95, *, fit_upper_half: bool = True) -> SlopeFit:
    """Slope of log ρ against log n (on the upper half of n) with its CI (see module docstring)."""
    level = _check_level(level)
    n = _as_n(n_values)
    arr = _as_matrix("rho", rho, n.size)
    if np.any(arr <= 0):
        raise ValueError("rho must be > 0 for a log-log fit")
    idx = upper_half(n) if fit_upper_half else np.argsort(n)
    x, logs = np.log(n[idx]), np.log(arr[:, idx])
    per_seed = np.array([_ols_slope(x, row) for row in logs])
    n_fit = tuple(int(v) if float(v).is_integer() else v for v in n[idx])
    if arr.shape[0] >= 2:
        mean, lo, hi, _ = _t_interval(per_seed, level)
        return SlopeFit(mean, lo, hi, n_fit, "per-seed slopes, t-interval", tuple(per_seed.tolist()), level)
    # single seed: OLS CI from the residuals
    m = x.size
    slope = float(per_seed[0])
    if m < 3:
        return SlopeFit(slope, -math.inf, math.inf, n_fit, "OLS (single seed, 2 points: CI unbounded)",
                        (slope,), level)
    y = logs[0]
    resid = y - (y.mean() + slope * (x - x.mean()))
    se = math.sqrt(float(np.dot(resid, resid)) / (m - 2) / float(np.dot(x - x.mean(), x - x.mean())))
    half = float(student_t_quantile(0.5 + level / 2.0, m - 2)) * se
    return SlopeFit(slope, slope - half, slope + half, n_fit, "OLS (single seed)", (slope,), level)


def excess_over_oracle(
    n_values: Any, rho: Any, rho_oracle: Any, level: float = 0.95, *, fit_upper_half: bool = True
) -> ExcessFit:
    """ρ_curve − ρ_oracle over the upper half of n, with its CI over seeds (see module docstring)."""
    level = _check_level(level)
    n = _as_n(n_values)
    a = _as_matrix("rho", rho, n.size)
    b = _as_matrix("rho_oracle", rho_oracle, n.size)
    idx = upper_half(n) if fit_upper_half else np.arange(n.size)
    n_fit = tuple(int(v) if float(v).is_integer() else v for v in n[idx])
    if a.shape == b.shape:
        per_seed = (a[:, idx] - b[:, idx]).mean(axis=1)
        mean, lo, hi, _ = _t_interval(per_seed, level)
        return ExcessFit(mean, lo, hi, n_fit, "paired by seed and n, t-interval", tuple(per_seed.tolist()), level)
    ma, mb = a[:, idx].mean(axis=1), b[:, idx].mean(axis=1)
    if ma.size < 2 or mb.size < 2:
        mean = float(ma.mean() - mb.mean())
        return ExcessFit(mean, -math.inf, math.inf, n_fit, "unpaired, single seed: CI unbounded",
                         tuple((ma - mb.mean()).tolist()), level)
    va, vb = ma.var(ddof=1) / ma.size, mb.var(ddof=1) / mb.size
    mean = float(ma.mean() - mb.mean())
    se = math.sqrt(va + vb)
    if se == 0.0:
        lo = hi = mean
    else:  # Welch–Satterthwaite degrees of freedom
        df = (va + vb) ** 2 / (va**2 / (ma.size - 1) + vb**2 / (mb.size - 1))
        half = float(student_t_quantile(0.5 + level / 2.0, df)) * se
        lo, hi = mean - half, mean + half
    return ExcessFit(mean, lo, hi, n_fit, "unpaired, Welch t-interval", tuple((ma - mb.mean()).tolist()), level)


def constant_error_verdict(
    n_values: Any, rho: Any, rho_oracle: Any, level: float = 0.95
) -> ConstantErrorVerdict:
    """THEORY §5: "constant error" ⇔ slope CI ∋ 0 AND excess over oracle > 0 with CI ∌ 0.

    Args:
      n_values: the training-set sizes, shape [m] (m ≥ 2; fits use the upper half).
      rho: the curve's ρ, shape [seeds, m] (or [m] for one seed).
      rho_oracle: the oracle's ρ on the same sampler/steps/t_min, [seeds', m].
      level: confidence level of every interval.
    """
    level = _check_level(level)
    slope = loglog_slope(n_values, rho, level)
    excess = excess_over_oracle(n_values, rho, rho_oracle, level)
    reasons = []
    if slope.hi < 0:
        reasons.append("error decreasing with n")
    elif slope.lo > 0:
        reasons.append("error increasing with n")
    if not excess.lo > 0:
        reasons.append("error below oracle" if excess.hi < 0 else "no excess over oracle (CI contains 0)")
    constant = not reasons
    # diagnostic: decay rate of the mean excess itself
    n = _as_n(n_values)
    idx = upper_half(n)
    diff = _as_matrix("rho", rho, n.size).mean(axis=0) - _as_matrix("rho_oracle", rho_oracle, n.size).mean(axis=0)
    excess_slope = _ols_slope(np.log(n[idx]), np.log(diff[idx])) if np.all(diff[idx] > 0) else None
    return ConstantErrorVerdict(
        verdict=CONSTANT_ERROR if constant else NO_CONSTANT_ERROR,
        constant_error=constant,
        reasons=tuple(reasons),
        slope=slope,
        excess=excess,
        excess_slope=excess_slope,
        level=level,
    )
