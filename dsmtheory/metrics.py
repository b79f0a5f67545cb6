"""How far generated samples sit from a rule y = f(x) + σ_r ε (THEORY.md §4).

Core functions work on raw feature arrays (x [n, dx], y [n, dy]) so that image
tasks and the external-table CLI reuse them; `rule_metrics(z, family)` is the
front door for synthetic families, `rule_metrics_xy(x, y, rule, sigma_r)` for
raw features. Every function returns Python floats (JSON-ready), never prints,
and refuses bad input (NaN samples, mismatched shapes, σ_r ≤ 0) with a
ValueError/TypeError naming the argument.

Definitions (residual r_i = ŷ_i − f(x̂_i) ∈ R^dy, n samples):

- ρ = √(mean_i ‖r_i‖²) / (σ_r √dy). The truth has E[ρ²] = 1. `rho_se` is the
  delta-method standard error of ρ: sd(‖r‖²)/(2 ρ σ_r² dy √n) (truth: ≈ 1/√(2 n dy)).
- violation rate = P̂(‖r‖ > 3 σ_r √dy); the truth's own rate is
  P(χ²_dy > 9 dy) = Q(dy/2, 9 dy/2) (regularised upper incomplete gamma, exact
  closed form for half-integer shape; dy = 1 gives erfc(3/√2) ≈ 0.0027).
- bins: the samples are split into `n_bins` equal-count bins by the quantiles of
  a scalar bin key: x̂ itself for dx = 1; for dx > 1 the projection of x̂ on its
  first principal component (or a user-given `bin_key`).
- conditional W1 = mean over bins of W1(residuals in the bin, N(0, σ_r²)), the
  exact 1-Wasserstein distance between the empirical residual distribution and
  the Gaussian (quantile integration, `w1_to_gaussian`); for dy > 1 the mean over
  the dy residual coordinates of the 1-D distances. Reported in σ_r units
  (`cond_w1`, divided by σ_r). Note: even exact samples have cond_w1 > 0, of order
  1/√(n/n_bins) (the empirical-measure error); compare with the truth's value,
  `cond_w1_truth_mc` when `rule_metrics` is given a key.
- coarse (trend) error = √(Σ_b (n_b/n) ‖r̄_b‖²), r̄_b the mean residual in bin b,
  i.e. the count-weighted RMS over bins of ‖Ê[ŷ|x̂] − Ê[f(x̂)]‖ (data units);
  `coarse_ratio` = coarse/(σ_r √dy).
- fine error ρ_fine = √(mean_i ‖r_i − r̄_{b(i)}‖²)/(σ_r √dy): ρ of the residuals
  de-trended by their bin means (the conditional width around the learned trend).
  The decomposition is exact: ρ² = ρ_fine² + coarse_ratio². For exact samples
  E[ρ_fine²] = 1 − n_bins/n (the bin means absorb n_bins degrees of freedom).
- marginal W1 of x̂ against a reference sample of p_x: exact 1-D W1 between two
  empirical measures (any sizes) for dx = 1; for dx > 1 the sliced W1 (mean of
  the 1-D W1 over `n_projections` random unit directions; note sliced W1 ≤ W1).
- memorisation rate = fraction of samples whose nearest training point (Euclidean,
  in the space the samples live in: z for `rule_metrics`, (x, y) for
  `rule_metrics_xy`) is closer than a threshold, default σ_r/2: a copy of a
  training point up to noise well below the rule's own noise. Fresh samples from
  the truth also land that close when training points are dense, so compare with
  `memorisation_rate_truth` (the same rate for fresh truth samples, when
  available).
- Gaussian KL (linear-Gaussian truth only): fit ŷ ≈ B x̂ + c by least squares with
  residual covariance S (MLE); the true conditional is N(A x + b, σ_r² I).
  `gaussian_kl` = E_{x∼p_x} KL(N(Ax+b, σ_r²I) ‖ N(Bx+c, S)) (truth to fit, the
  excess cross-entropy of the fitted conditional) and `gaussian_kl_reverse` =
  E_x KL(N(Bx+c, S) ‖ N(Ax+b, σ_r²I)), both exact given (B, c, S), with the
  expectation over the true p_x = N(μ_x, Σ_x).
"""

from __future__ import annotations

import functools
import math
import statistics
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from dsmtheory._validation import check_int, check_positive

Array = jax.Array


# ----------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------
def _as_2d(name: str, a: Any, *, allow_1d: bool = True) -> np.ndarray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a real array, got {type(a).__name__}") from err
    if arr.ndim == 1 and allow_1d:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape [n, d] (or [n] for d = 1), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must be non-empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.all(np.isfinite(arr), axis=1)))
        raise ValueError(f"{name} contains non-finite values (NaN/inf) in {bad} of {arr.shape[0]} rows")
    return arr


def _check_sigma_r(sigma_r: Any) -> float:
    check_positive("sigma_r", sigma_r)
    s = np.asarray(sigma_r, dtype=np.float64)
    if s.ndim != 0:
        raise ValueError(f"sigma_r must be a scalar, got shape {s.shape}")
    return float(s)


def _same_n(**arrays: np.ndarray) -> int:
    ns = {k: a.shape[0] for k, a in arrays.items()}
    if len(set(ns.values())) != 1:
        raise ValueError(f"arrays must have the same number of samples, got {ns}")
    return next(iter(ns.values()))


# ----------------------------------------------------------------------------------
# the standard normal in float64 (Python's math/statistics: exact to ~1e-16, no
# compilation; jax.scipy's ndtri costs seconds of op-by-op compilation per shape)
# ----------------------------------------------------------------------------------
_erfc = np.frompyfunc(math.erfc, 1, 1)
_inv_cdf = np.frompyfunc(statistics.NormalDist().inv_cdf, 1, 1)


@functools.lru_cache(maxsize=64)
def _normal_quantile_edges(m: int) -> np.ndarray:
    """Φ⁻¹(i/m) for i = 0..m (−inf and +inf at the ends); read-only, cached per m."""
    edges = np.empty(m + 1)
    edges[0], edges[-1] = -np.inf, np.inf
    if m > 1:
        edges[1:-1] = _inv_cdf(np.arange(1, m) / m).astype(np.float64)
    edges.flags.writeable = False
    return edges


def _ndtr(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return 0.5 * _erfc(-v / math.sqrt(2.0)).astype(np.float64)


def _phi(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.exp(-0.5 * v * v) / math.sqrt(2 * math.pi)


# ----------------------------------------------------------------------------------
# elementary metrics
# ----------------------------------------------------------------------------------
def residuals(x: Any, y: Any, rule: Callable) -> np.ndarray:
    """r = y − f(x) as a float64 array [n, dy]. `rule` maps [n, dx] -> [n, dy]."""
    x, y = _as_2d("x", x), _as_2d("y", y)
    _same_n(x=x, y=y)
    if not callable(rule):
        raise TypeError(f"rule must be callable f(x [n, dx]) -> [n, dy], got {type(rule).__name__}")
    fx = np.asarray(rule(jnp.asarray(x, dtype=jax.dtypes.canonicalize_dtype(jnp.float64))), dtype=np.float64)
    if fx.ndim == 1:
        fx = fx[:, None]
    if fx.shape != y.shape:
        raise ValueError(f"rule(x) has shape {fx.shape} but y has shape {y.shape}")
    return y - fx


def rho(r: Any, sigma_r: float) -> float:
    """ρ = √(mean ‖r‖²)/(σ_r √dy) (THEORY §4)."""
    r = _as_2d("r", r)
    sigma_r = _check_sigma_r(sigma_r)
    return float(np.sqrt(np.mean(np.sum(r**2, axis=1))) / (sigma_r * math.sqrt(r.shape[1])))


def rho_standard_error(r: Any, sigma_r: float) -> float:
    """Delta-method standard error of ρ: sd(‖r‖²/(σ_r² dy)) / (2 ρ √n)."""
    r = _as_2d("r", r)
    sigma_r = _check_sigma_r(sigma_r)
    n, dy = r.shape
    q = np.sum(r**2, axis=1) / (sigma_r**2 * dy)
    rho_hat = math.sqrt(float(np.mean(q)))
    if n < 2 or rho_hat == 0.0:
        return 0.0
    return float(np.std(q, ddof=1) / (2.0 * rho_hat * math.sqrt(n)))


def violation_rate(r: Any, sigma_r: float, k: float = 3.0) -> float:
    """P̂(‖r‖ > k σ_r √dy)."""
    r = _as_2d("r", r)
    sigma_r = _check_sigma_r(sigma_r)
    check_positive("k", k)
    return float(np.mean(np.linalg.norm(r, axis=1) > k * sigma_r * math.sqrt(r.shape[1])))


def chi2_upper_tail(dof: int, threshold: float) -> float:
    """P(χ²_dof > threshold), exact closed form for integer dof (float64).

    Q(a, x) with a = dof/2: for integer a, e^{−x} Σ_{j<a} x^j/j!; for half-integer
    a = m + ½, erfc(√x) + e^{−x} Σ_{j<m} x^{j+½}/Γ(j + 3/2); x = threshold/2.
    Terms are summed in log space so large dof does not underflow."""
    dof = check_int("dof", dof, minimum=1)
    check_positive("threshold", threshold, allow_zero=True)
    x = 0.5 * float(threshold)
    if x == 0.0:
        return 1.0
    if dof % 2 == 0:
        logs = [j * math.log(x) - math.lgamma(j + 1) - x for j in range(dof // 2)]
        base = 0.0
    else:
        logs = [(j + 0.5) * math.log(x) - math.lgamma(j + 1.5) - x for j in range(dof // 2)]
        base = math.erfc(math.sqrt(x))
    if not logs:
        return base
    m = max(logs)
    return float(min(1.0, base + math.exp(m) * sum(math.exp(v - m) for v in logs)))


def truth_violation_rate(dy: int, k: float = 3.0) -> float:
    """The truth's own P(‖σ_r ε‖ > k σ_r √dy) = P(χ²_dy > k² dy); dy = 1: erfc(k/√2)."""
    dy = check_int("dy", dy, minimum=1)
    check_positive("k", k)
    return chi2_upper_tail(dy, k * k * dy)


def w1_to_gaussian(samples: Any, scale: float, mean: float = 0.0) -> float:
    """Exact W1 between the empirical measure of 1-D `samples` and N(mean, scale²).

    W1 = ∫₀¹ |F̂⁻¹(u) − mean − scale Φ⁻¹(u)| du. On u ∈ ((i−1)/m, i/m] the empirical
    quantile is the i-th order statistic c = r_(i) − mean; substituting u = Φ(v),
    ∫ |c − scale·v| φ(v) dv over [v_{i−1}, v_i] (v_i = Φ⁻¹(i/m)) has the antiderivative
    G(v) = c Φ(v) + scale φ(v); the integrand changes sign only at v* = c/scale, so the
    piece is |G(v*) − G(v_{i−1})| + |G(v_i) − G(v*)| with v* clipped into the interval."""
    s = np.asarray(samples, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise ValueError("samples must be non-empty")
    if not np.all(np.isfinite(s)):
        raise ValueError("samples contain non-finite values")
    check_positive("scale", scale)
    m = s.size
    c = np.sort(s) - mean
    edges = _normal_quantile_edges(m)  # −inf .. +inf
    lo, hi = edges[:-1], edges[1:]
    v_star = np.clip(c / scale, lo, hi)
    # Φ at the edges is exactly (i−1)/m and i/m; only Φ(v*) needs evaluating.
    cdf_lo, cdf_hi = np.arange(m) / m, np.arange(1, m + 1) / m
    cdf_star = _ndtr(v_star)
    g_lo = c * cdf_lo + scale * _phi(lo)
    g_hi = c * cdf_hi + scale * _phi(hi)
    g_star = c * cdf_star + scale * _phi(v_star)
    return float(np.sum(np.abs(g_star - g_lo) + np.abs(g_hi - g_star)))


def w1_1d(a: Any, b: Any) -> float:
    """Exact W1 between the empirical measures of two 1-D samples (any sizes):
    ∫ |F_a(t) − F_b(t)| dt over the merged order statistics."""
    a = np.sort(np.asarray(a, dtype=np.float64).reshape(-1))
    b = np.sort(np.asarray(b, dtype=np.float64).reshape(-1))
    if a.size == 0 or b.size == 0:
        raise ValueError("both samples must be non-empty")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("samples contain non-finite values")
    allv = np.sort(np.concatenate([a, b]))
    deltas = np.diff(allv)
    fa = np.searchsorted(a, allv[:-1], side="right") / a.size
    fb = np.searchsorted(b, allv[:-1], side="right") / b.size
    return float(np.sum(np.abs(fa - fb) * deltas))


def marginal_w1(x: Any, x_reference: Any, *, n_projections: int = 64, seed: int = 0) -> float:
    """W1 of x̂ [n, dx] against a reference sample [m, dx] of p_x: exact for dx = 1,
    sliced (mean over `n_projections` random unit directions, from `seed`) for dx > 1."""
    x, ref = _as_2d("x", x), _as_2d("x_reference", x_reference)
    if x.shape[1] != ref.shape[1]:
        raise ValueError(f"x has dx={x.shape[1]} but x_reference has dx={ref.shape[1]}")
    if x.shape[1] == 1:
        return w1_1d(x[:, 0], ref[:, 0])
    n_projections = check_int("n_projections", n_projections, minimum=1)
    dirs = np.random.default_rng(seed).standard_normal((n_projections, x.shape[1]))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return float(np.mean([w1_1d(x @ d, ref @ d) for d in dirs]))


def quantile_bins(key_values: Any, n_bins: int) -> list[np.ndarray]:
    """Indices of `n_bins` equal-count bins (sizes differ by ≤ 1) by the quantiles of a 1-D key."""
    k = np.asarray(key_values, dtype=np.float64).reshape(-1)
    n_bins = check_int("n_bins", n_bins, minimum=1)
    if k.size < 2 * n_bins:
        raise ValueError(f"need at least 2 samples per bin: n={k.size} < 2 * n_bins = {2 * n_bins}")
    order = np.argsort(k, kind="stable")
    return np.array_split(order, n_bins)


def default_bin_key(x: Any) -> np.ndarray:
    """x̂ for dx = 1; for dx > 1 the projection on the first principal component of x̂."""
    x = _as_2d("x", x)
    if x.shape[1] == 1:
        return x[:, 0]
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return xc @ vt[0]


def binned_rule_errors(r: Any, bin_key: Any, sigma_r: float, n_bins: int = 10) -> dict:
    """Per-bin quantities on residuals r [n, dy] binned by quantiles of bin_key [n]:
    conditional W1 (σ_r units, averaged over bins and coordinates), coarse (trend) error,
    coarse_ratio and the fine error ρ_fine (module docstring)."""
    r = _as_2d("r", r)
    sigma_r = _check_sigma_r(sigma_r)
    key = np.asarray(bin_key, dtype=np.float64).reshape(-1)
    if key.shape[0] != r.shape[0]:
        raise ValueError(f"bin_key has {key.shape[0]} entries but r has {r.shape[0]} rows")
    n, dy = r.shape
    bins = quantile_bins(key, n_bins)
    w1s, coarse_sq, fine_sq = [], 0.0, 0.0
    for idx in bins:
        rb = r[idx]
        mean_b = rb.mean(axis=0)
        coarse_sq += len(idx) / n * float(np.sum(mean_b**2))
        fine_sq += float(np.sum((rb - mean_b) ** 2)) / n
        w1s.append(np.mean([w1_to_gaussian(rb[:, j], sigma_r) for j in range(dy)]))
    norm = sigma_r * math.sqrt(dy)
    coarse = math.sqrt(coarse_sq)
    return {
        "cond_w1": float(np.mean(w1s)) / sigma_r,
        "coarse_error": coarse,
        "coarse_ratio": coarse / norm,
        "rho_fine": math.sqrt(fine_sq) / norm,
    }


def nearest_distance(samples: Any, reference: Any, *, chunk: int = 2048) -> np.ndarray:
    """Euclidean distance from each row of samples [n, d] to its nearest row of reference [m, d]."""
    a, b = _as_2d("samples", samples), _as_2d("reference", reference)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"samples have dimension {a.shape[1]} but reference has {b.shape[1]}")
    b_sq = np.sum(b**2, axis=1)
    out = np.empty(a.shape[0])
    for start in range(0, a.shape[0], chunk):
        blk = a[start : start + chunk]
        d2 = np.sum(blk**2, axis=1)[:, None] - 2.0 * blk @ b.T + b_sq[None, :]
        out[start : start + chunk] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def memorisation_rate(samples: Any, train_set: Any, threshold: float) -> float:
    """Fraction of samples within `threshold` (Euclidean) of some training point."""
    check_positive("threshold", threshold)
    return float(np.mean(nearest_distance(samples, train_set) < threshold))


def gaussian_conditional_kl(x: Any, y: Any, A: Any, b: Any, sigma_r: float, mu_x: Any, cov_x: Any) -> dict:
    """Exact Gaussian KLs between the fitted linear conditional of (x, y) and the truth
    N(A x + b, σ_r² I), averaged over x ~ N(mu_x, cov_x) (module docstring). Returns
    {'gaussian_kl': KL(true‖fit), 'gaussian_kl_reverse': KL(fit‖true)} in nats."""
    x, y = _as_2d("x", x), _as_2d("y", y)
    n = _same_n(x=x, y=y)
    sigma_r = _check_sigma_r(sigma_r)
    dx, dy = x.shape[1], y.shape[1]
    A = np.atleast_2d(np.asarray(A, dtype=np.float64))
    b = np.atleast_1d(np.asarray(b, dtype=np.float64))
    mu_x = np.atleast_1d(np.asarray(mu_x, dtype=np.float64))
    cov_x = np.atleast_2d(np.asarray(cov_x, dtype=np.float64))
    if A.shape != (dy, dx) or b.shape != (dy,) or mu_x.shape != (dx,) or cov_x.shape != (dx, dx):
        raise ValueError(
            f"truth parameters must have A {(dy, dx)}, b {(dy,)}, mu_x {(dx,)}, cov_x {(dx, dx)}; got "
            f"{A.shape}, {b.shape}, {mu_x.shape}, {cov_x.shape}"
        )
    if n < dx + dy + 2:
        raise ValueError(f"need at least dx + dy + 2 = {dx + dy + 2} samples to fit the conditional, got {n}")
    design = np.concatenate([x, np.ones((n, 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    B, c = coef[:dx].T, coef[dx]
    res = y - design @ coef
    S = res.T @ res / n
    sign, logdet_s = np.linalg.slogdet(S)
    if sign <= 0:
        raise ValueError("the fitted residual covariance is singular (degenerate samples)")
    s_inv = np.linalg.inv(S)
    D = B - A
    dm = D @ mu_x + c - b  # mean of Δμ(x) = (B − A) x + (c − b) under p_x
    # E_x[Δμᵀ M Δμ] = dmᵀ M dm + tr(M D Σx Dᵀ)
    quad_fit = float(dm @ s_inv @ dm + np.trace(s_inv @ D @ cov_x @ D.T))
    quad_true = float(dm @ dm + np.trace(D @ cov_x @ D.T)) / sigma_r**2
    s2 = sigma_r**2
    logdet_true = dy * math.log(s2)
    kl_true_fit = 0.5 * (s2 * np.trace(s_inv) - dy + logdet_s - logdet_true + quad_fit)
    kl_fit_true = 0.5 * (np.trace(S) / s2 - dy + logdet_true - logdet_s + quad_true)
    return {"gaussian_kl": float(kl_true_fit), "gaussian_kl_reverse": float(kl_fit_true)}


# ----------------------------------------------------------------------------------
# front doors
# ----------------------------------------------------------------------------------
def rule_metrics_xy(
    x: Any,
    y: Any,
    rule: Callable,
    sigma_r: float,
    *,
    x_reference: Any = None,
    train_set: Any = None,
    n_bins: int = 10,
    bin_key: Any = None,
    memorisation_threshold: float | None = None,
    gaussian_truth: dict | None = None,
    n_projections: int = 64,
    seed: int = 0,
) -> dict:
    """All rule metrics of samples (x̂ [n, dx], ŷ [n, dy]) against y = rule(x) + σ_r ε.

    Optional: x_reference [m, dx] (marginal W1), train_set [m, dx + dy] in (x, y)
    coordinates (memorisation rate, threshold default σ_r/2), bin_key [n] (default
    `default_bin_key(x)`), gaussian_truth = {'A', 'b', 'mu_x', 'cov_x'} for the exact
    Gaussian KL. Keys that need an absent input are None. Returns a dict of floats:
    n, dx, dy, sigma_r, rho, rho_se, violation_rate, violation_rate_truth, cond_w1,
    coarse_error, coarse_ratio, rho_fine, marginal_w1, memorisation_rate,
    memorisation_threshold, gaussian_kl, gaussian_kl_reverse."""
    x, y = _as_2d("x", x), _as_2d("y", y)
    n = _same_n(x=x, y=y)
    sigma_r = _check_sigma_r(sigma_r)
    r = residuals(x, y, rule)
    dy = y.shape[1]
    key = default_bin_key(x) if bin_key is None else np.asarray(bin_key, dtype=np.float64).reshape(-1)
    out: dict[str, Any] = {
        "n": n,
        "dx": x.shape[1],
        "dy": dy,
        "sigma_r": sigma_r,
        "rho": rho(r, sigma_r),
        "rho_se": rho_standard_error(r, sigma_r),
        "violation_rate": violation_rate(r, sigma_r),
        "violation_rate_truth": truth_violation_rate(dy),
    }
    out.update(binned_rule_errors(r, key, sigma_r, n_bins))
    out["marginal_w1"] = (
        None if x_reference is None else marginal_w1(x, x_reference, n_projections=n_projections, seed=seed)
    )
    threshold = 0.5 * sigma_r if memorisation_threshold is None else float(memorisation_threshold)
    out["memorisation_threshold"] = threshold
    if train_set is None:
        out["memorisation_rate"] = None
    else:
        out["memorisation_rate"] = memorisation_rate(np.concatenate([x, y], axis=1), train_set, threshold)
    if gaussian_truth is None:
        out["gaussian_kl"] = out["gaussian_kl_reverse"] = None
    else:
        missing = {"A", "b", "mu_x", "cov_x"} - set(gaussian_truth)
        if missing:
            raise ValueError(f"gaussian_truth is missing {sorted(missing)}")
        out.update(gaussian_conditional_kl(x, y, gaussian_truth["A"], gaussian_truth["b"], sigma_r,
                                           gaussian_truth["mu_x"], gaussian_truth["cov_x"]))
    return out


def _gaussian_truth_of(family: Any) -> dict | None:
    """The linear-Gaussian parameters of a family (or of the base of an embedded family), else None."""
    from dsmtheory.families.linear_gaussian import LinearGaussian

    for cand in (family, getattr(family, "base", None)):
        if isinstance(cand, LinearGaussian):
            return {"A": cand.A, "b": cand.b, "mu_x": cand.mu_x, "cov_x": cand.cov_x}
    return None


def rule_metrics(
    z: Any,
    family: Any,
    *,
    key: Array | None = None,
    x_reference: Any = None,
    train_set: Any = None,
    n_bins: int = 10,
    memorisation_threshold: float | None = None,
    n_reference: int | None = None,
) -> dict:
    """Rule metrics of generated samples z [n, family.dim] against the family's rule.

    x_reference: a sample of p_x for the marginal W1; if None and `key` is given, n_reference
    (default n) fresh samples are drawn from the family. With `key`, also reported:
    the truth's own values of the finite-sample quantities at the same n
    (`rho_truth_mc`, `cond_w1_truth_mc`, `coarse_ratio_truth_mc`, and
    `memorisation_rate_truth` when train_set is given), from a fresh sample of n points.
    train_set: training points in z-space [m, dim] (memorisation measured in z-space); if None
    and the family is an `EmpiricalMeasure`, its (unpadded) points are used. For an
    EmpiricalMeasure the "truth" (reference sample, truth MC values, Gaussian KL) is its
    generating family `base`, not the point masses.
    Returns a dict of Python floats (None where an input is missing)."""
    if not hasattr(family, "features") or not hasattr(family, "rule"):
        raise TypeError(f"family must be a dsmtheory Family, got {type(family).__name__}")
    z = _as_2d("z", z, allow_1d=False)
    if z.shape[1] != family.dim:
        raise ValueError(f"z must have last dimension family.dim = {family.dim}, got shape {z.shape}")
    n = z.shape[0]
    x, y = (np.asarray(a, dtype=np.float64) for a in family.features(jnp.asarray(z)))
    # the distribution the rule comes from: an empirical measure's generating family
    truth_family = _generating_family(family)
    if train_set is None and truth_family is not family:
        mask = np.asarray(family.mask)
        train_set = np.asarray(family.points, dtype=np.float64)[mask]
    truth_z = None
    if key is not None:
        n_ref = n if n_reference is None else check_int("n_reference", n_reference, minimum=1)
        k_ref, k_truth = jax.random.split(key)
        if x_reference is None:
            x_reference = np.asarray(truth_family.features(truth_family.sample(k_ref, n_ref))[0])
        truth_z = np.asarray(truth_family.sample(k_truth, n), dtype=np.float64)
    gaussian_truth = _gaussian_truth_of(truth_family)
    out = rule_metrics_xy(x, y, family.rule, family.sigma_r, x_reference=x_reference, n_bins=n_bins,
                          memorisation_threshold=memorisation_threshold, gaussian_truth=gaussian_truth)
    threshold = out["memorisation_threshold"]
    out["memorisation_rate"] = None if train_set is None else memorisation_rate(z, train_set, threshold)
    out["memorisation_rate_truth"] = None
    for k_name in ("rho_truth_mc", "cond_w1_truth_mc", "coarse_ratio_truth_mc"):
        out[k_name] = None
    if truth_z is not None:
        tx, ty = (np.asarray(a, dtype=np.float64) for a in truth_family.features(jnp.asarray(truth_z)))
        tm = rule_metrics_xy(tx, ty, family.rule, family.sigma_r, n_bins=n_bins)
        out["rho_truth_mc"] = tm["rho"]
        out["cond_w1_truth_mc"] = tm["cond_w1"]
        out["coarse_ratio_truth_mc"] = tm["coarse_ratio"]
        if train_set is not None:
            out["memorisation_rate_truth"] = memorisation_rate(truth_z, train_set, threshold)
    return out


def _generating_family(family: Any) -> Any:
    """For an EmpiricalMeasure its generating family (`base`), else the family itself."""
    from dsmtheory.families.empirical import EmpiricalMeasure

    return family.base if isinstance(family, EmpiricalMeasure) else family
