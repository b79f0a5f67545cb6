"""Oracle check: where the sampler's own floor sits when the score is EXACT (issue 2).

    python -m experiments.oracle_check --quick     # < 2 min on 2 CPU cores
    python -m experiments.oracle_check             # more samples, t_min values, step counts, samplers
    python -m experiments.oracle_check --check     # recompute one stored cell and compare

Every family (linear-Gaussian; sin(kx); the shadow rule h·cot θ; a clustered Gaussian
mixture; sin(kx) embedded in R^8; the empirical measure of a sin(kx) training set) is
sampled with its exact score (`family.score_fn(schedule)`) under every schedule
(VP linear, VP cosine, VE, EDM) by ≥ 2 samplers, and the rule error ratio ρ (THEORY §4)
is measured

(a) against the noise left at t_min, σ(t_min)/α(t_min) in units of σ_r, on the raw
    samples z_{t_min} — the floor is visible: ρ² ≈ 1 + E[1 + f'(x)²]·(σ/α)²/σ_r² (dashed
    grey; the linearised noise-only prediction, from samples of the true family);
(b) the same after the final Tweedie denoising step;
(c) against the number of sampler steps (denoised, at σ(t_min)/α(t_min) = 0.05 σ_r).

A horizontal line marks ρ = 1 (the truth). For the empirical measure, ρ is about
memorisation (the samples collapse onto training points as t_min → 0), so its
memorisation rate (fraction of samples within σ_r/2 of a training point, against the
same rate for fresh samples of the generating family) is reported too.

Step counts share one compilation per (family, schedule, sampler): the grids are
padded with identity steps (`samplers.padded_time_grid`), and all t_min values and
step counts of one (family, schedule, sampler) run as one vmapped call. Stochastic
samplers get per-configuration keys, so each cell has its own noise.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from dsmtheory import metrics, plotting, samplers
from dsmtheory.families import EmpiricalMeasure, Embedded, GaussianMixture, LinearGaussian, NonlinearRule
from dsmtheory.families.nonlinear import GaussianX, UniformX
from dsmtheory.results import read_json, write_results
from dsmtheory.rules import Sine
from dsmtheory.schedules import EDM, VE, VPCosine, VPLinear
from experiments._cli import experiment_parser

EXPERIMENT = "oracle_check"
SCHEDULE_NAMES = ("vp_linear", "vp_cosine", "ve", "edm")
FAMILY_NAMES = ("linear_gaussian", "sin", "shadow", "gmm", "embedded", "empirical")
# steps_floor must be one of floors and max(steps) is the step count of the floor sweep,
# so the cell (steps_floor, max(steps)) is shared by both sweeps.
# sampler_families: a sampler listed there runs only on those families (quick mode keeps
# one compilation per (family, schedule, sampler) cell affordable: PF-Heun everywhere,
# Euler–Maruyama on the linear-Gaussian and sin families).
MODES = {
    "quick": {"n_samples": 400, "floors": [0.05, 0.3, 1.0], "steps": [8, 24, 64],
              "samplers": ["pf_heun", "euler_maruyama"], "n_train": 128, "steps_floor": 0.05,
              "sampler_families": {"euler_maruyama": ["linear_gaussian", "sin"]}},
    "full": {"n_samples": 2000, "floors": [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0],
             "steps": [8, 16, 32, 64, 128, 256], "samplers": ["pf_heun", "euler_maruyama", "ddpm", "ddim"],
             "n_train": 512, "steps_floor": 0.05, "sampler_families": {}},
}
CHECK_RTOL = 1e-3  # same seed and code: agreement up to float reassociation across batch sizes


# ----------------------------------------------------------------------------------
# the objects under test
# ----------------------------------------------------------------------------------
def build_schedules() -> dict:
    # VE with σ_min = 1e-3 so that its noise floor can go below σ_r/10 (σ(t) ≥ σ_min always)
    return {"vp_linear": VPLinear(), "vp_cosine": VPCosine(), "ve": VE(sigma_min=1e-3, sigma_max=50.0),
            "edm": EDM()}


def build_families(seed: int, n_train: int, names: Sequence[str] = FAMILY_NAMES) -> dict:
    """The families named (in FAMILY_NAMES order; keys derived from seed identically for any subset)."""
    key = jax.random.PRNGKey(seed)
    k_embed, k_train = jax.random.split(key)
    builders = {
        "linear_gaussian": lambda: LinearGaussian.create(mu_x=(0.0,), cov_x=[[1.0]], A=[[1.0]], b=[0.0],
                                                         sigma_r=0.1),
        "sin": _sin_family,
        "shadow": lambda: NonlinearRule.create(UniformX(0.5, 1.2), "shadow", 0.05, rule_params={"height": 1.0}),
        "gmm": lambda: GaussianMixture.clustered_rule([-1.5, -0.5, 0.5, 1.5], Sine(k=1.5), sigma_x=0.15,
                                                      sigma_r=0.1),
        "embedded": lambda: Embedded.create(_sin_family(), D=8, key=k_embed, sigma_b=1.0),
        "empirical": lambda: EmpiricalMeasure.from_samples(_sin_family().sample(k_train, n_train), _sin_family()),
    }
    return {name: builders[name]() for name in FAMILY_NAMES if name in names}


def _sin_family():
    return NonlinearRule.create(GaussianX(0.0, 1.0), "sin", 0.1, rule_params={"k": 2.0})


def family_label(name: str, fam) -> str:
    s = f"(σ_r={fam.sigma_r:g})"
    if name == "linear_gaussian":
        return f"linear-Gaussian y = x + σ_r ε {s}"
    if name == "sin":
        return f"y = sin(2x) + σ_r ε, x ~ N(0,1) {s}"
    if name == "shadow":
        return f"shadow y = cot θ + σ_r ε, θ ~ U(0.5, 1.2) {s}"
    if name == "gmm":
        return f"clustered rule: 4-component GMM on sin(1.5x) {s}"
    if name == "embedded":
        return f"sin(2x) embedded in R^{fam.dim}, background σ_b = 1 {s}"
    if name == "empirical":
        return f"empirical measure of n = {int(fam.n)} sin(2x) points {s}"
    raise ValueError(f"unknown family {name!r}")


def t_min_for_noise_floor(schedule, target: float) -> float:
    """The t with σ(t)/α(t) = target (bisection in log t; σ/α increases with t)."""
    lo, hi = math.log(1e-9), math.log(float(schedule.t_max) * 0.5)
    f = lambda lt: float(schedule.noise_to_signal(jnp.asarray(math.exp(lt), jnp.float32)))  # noqa: E731
    if f(lo) > target:
        raise ValueError(f"schedule {schedule.name} cannot reach noise floor {target:g} (min {f(lo):g})")
    if f(hi) < target:
        raise ValueError(f"schedule {schedule.name} cannot reach noise floor {target:g} below t_max/2")
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    return math.exp(0.5 * (lo + hi))


# ----------------------------------------------------------------------------------
# one compiled call per (family, schedule, sampler): every configuration at once
# ----------------------------------------------------------------------------------
def _make_runner(method: str, n: int, dim: int):
    @jax.jit
    def run(family, schedules, grids, keys):
        def one(schedule, grid, key):
            score = family.score_fn(schedule)
            k0, k1 = jax.random.split(key)
            z0 = schedule.prior_sample(k0, (n, dim))
            raw = samplers.sample_core(score, schedule, k1, z0, grid, method=method, denoise=False)
            return raw, samplers.tweedie_x0(score, schedule, raw, grid[-1])

        return jax.vmap(one)(schedules, grids, keys)

    return run


_RUNNERS: dict = {}


def run_configs(family, schedule, method: str, t_mins: Sequence[float], n_steps: Sequence[int], n_total: int,
                n: int, key) -> tuple[np.ndarray, np.ndarray]:
    """Samples (raw z_{t_min}, Tweedie-denoised), each [C, n, dim], for configurations
    c = (t_mins[c], n_steps[c]). Non-finite rows are left in place (the caller counts them)."""
    scheds = [schedule.with_t_min(float(t)) for t in t_mins]
    grids = jnp.stack([samplers.padded_time_grid(s, int(k), n_total) for s, k in zip(scheds, n_steps)])
    stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack([jnp.asarray(v, jnp.float32) for v in leaves]),
                                     *scheds)
    keys = jnp.stack([jax.random.fold_in(key, c) for c in range(len(scheds))])
    rk = (method, n, family.dim)
    if rk not in _RUNNERS:
        _RUNNERS[rk] = _make_runner(method, n, family.dim)
    raw, den = _RUNNERS[rk](family, stacked, grids, keys)
    return np.asarray(raw, np.float64), np.asarray(den, np.float64)


def _configs(cfg: dict) -> tuple[list[float], list[int]]:
    """(noise floors in σ_r units, step counts) of the configurations of one call."""
    n_total = max(cfg["steps"])
    if cfg["steps_floor"] not in cfg["floors"]:
        raise ValueError("steps_floor must be one of floors")
    floors = list(cfg["floors"]) + [cfg["steps_floor"]] * (len(cfg["steps"]) - 1)
    steps = [n_total] * len(cfg["floors"]) + [k for k in cfg["steps"] if k != n_total]
    return floors, steps


def _rho(family, z: np.ndarray) -> float | None:
    """ρ of one configuration's samples; None if the sampler produced non-finite values
    there (counted separately, never folded into a number)."""
    if not np.all(np.isfinite(z)):
        return None
    x, y = family.features(jnp.asarray(z))
    return metrics.rho(metrics.residuals(x, y, family.rule), family.sigma_r)


def _noise_only_slope_factor(family, key, n: int = 4000) -> float:
    """E[1 + ‖∇f(x)‖²] over the true p_x (for the linearised noise-floor curve)."""
    truth = family.base if isinstance(family, EmpiricalMeasure) else family
    x, _ = truth.features(truth.sample(key, n))
    grad = jax.vmap(jax.grad(lambda u: family.rule(u[None])[0, 0]))(x)
    return float(1.0 + jnp.mean(jnp.sum(grad**2, axis=-1)))


def cell_key(seed: int, fi: int, si: int, mi: int):
    return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), fi), si), mi)


def compute(cfg: dict, seed: int, *, only: tuple[str, str, str] | None = None, log=print) -> dict:
    """All cells (or the one named by `only` = (family, schedule, sampler)) -> nested results dict."""
    schedules = build_schedules()
    families = build_families(seed, cfg["n_train"], [only[0]] if only else cfg.get("family_names", FAMILY_NAMES))
    floors, steps, n = cfg["floors"], cfg["steps"], cfg["n_samples"]
    n_total = max(steps)
    out: dict = {}
    for fname, fam in families.items():
        fi = FAMILY_NAMES.index(fname)  # keys do not depend on which subset is run
        if (only and fname != only[0]) or fname not in cfg.get("family_names", FAMILY_NAMES):
            continue
        sigma_r = float(fam.sigma_r)
        fres = {"label": family_label(fname, fam), "sigma_r": sigma_r, "dim": fam.dim,
                "noise_slope_factor": _noise_only_slope_factor(fam, jax.random.PRNGKey(seed + 1)), "schedules": {}}
        for si, sname in enumerate(SCHEDULE_NAMES):
            if (only and sname != only[1]) or sname not in cfg.get("schedule_names", SCHEDULE_NAMES):
                continue
            sch = schedules[sname]
            floors_c, steps_c = _configs(cfg)
            t_mins = [t_min_for_noise_floor(sch, r * sigma_r) for r in floors_c]
            nf = len(floors)
            # configuration index of each step count in cfg["steps"] (max(steps) is shared)
            step_idx = [cfg["floors"].index(cfg["steps_floor"]) if k == n_total else nf + [
                kk for kk in steps if kk != n_total].index(k) for k in steps]
            sres = {"t_min_floor_sweep": t_mins[:nf], "t_min_steps_sweep": t_mins[step_idx[0]],
                    "noise_floor_over_sigma_r": [float(sch.with_t_min(t).noise_floor()) / sigma_r
                                                 for t in t_mins[:nf]],
                    "samplers": {}}
            for mi, method in enumerate(cfg["samplers"]):
                if only and method != only[2]:
                    continue
                if fname not in cfg.get("sampler_families", {}).get(method, [fname]):
                    continue
                t0 = time.time()
                raw, den = run_configs(fam, sch, method, t_mins, steps_c, n_total, n, cell_key(seed, fi, si, mi))
                mres = {
                    "rho_raw_vs_floor": [_rho(fam, raw[c]) for c in range(nf)],
                    "rho_denoised_vs_floor": [_rho(fam, den[c]) for c in range(nf)],
                    "rho_raw_vs_steps": [_rho(fam, raw[c]) for c in step_idx],
                    "rho_denoised_vs_steps": [_rho(fam, den[c]) for c in step_idx],
                    "nonfinite_samples_per_config": [int(np.sum(~np.all(np.isfinite(raw[c]), axis=-1)))
                                                     for c in range(len(steps_c))],
                }
                # full metrics at the most accurate cell (max steps, σ/α = steps_floor·σ_r, denoised)
                best = den[step_idx[-1]]
                mres["metrics_best_cell"] = (metrics.rule_metrics(best, fam, key=jax.random.PRNGKey(seed + 2))
                                             if np.all(np.isfinite(best)) else None)
                mres["seconds"] = time.time() - t0
                sres["samplers"][method] = mres
                bad = sum(mres["nonfinite_samples_per_config"])
                full = mres["metrics_best_cell"] or {}
                log(f"  {fname:16s} {sname:9s} {method:15s} ρ(best cell)={full.get('rho', float('nan')):.4f}  "
                    f"memorised={full.get('memorisation_rate')}  non-finite samples={bad}  "
                    f"({mres['seconds']:.1f}s)")
            fres["schedules"][sname] = sres
        out[fname] = fres
    return out


# ----------------------------------------------------------------------------------
# figure
# ----------------------------------------------------------------------------------
LINESTYLES = {"euler_maruyama": "-", "pf_heun": "--", "ddpm": ":", "ddim": "-."}
SAMPLER_LABELS = {"euler_maruyama": "reverse SDE, Euler–Maruyama", "pf_heun": "PF-ODE, Heun",
                  "ddpm": "DDPM ancestral", "ddim": "DDIM (η=0)"}


def _nan(values) -> np.ndarray:
    """None (non-finite samples in that cell) -> a gap in the line."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def make_figure(results: dict, cfg: dict):
    fams = list(results)
    fig, axes = plotting.figure(len(fams), 3, panel_size=(3.9, 2.7),
                                title="Oracle check: ρ of samples drawn with the EXACT score "
                                      f"({cfg['mode']} mode, {cfg['n_samples']} samples per cell)")
    floors = np.asarray(cfg["floors"])
    for r, fname in enumerate(fams):
        fres = results[fname]
        for c in range(3):
            ax = axes[r, c]
            for si, sname in enumerate(fres["schedules"]):
                sres = fres["schedules"][sname]
                for method, mres in sres["samplers"].items():
                    kw = dict(color=plotting.color(si), ls=LINESTYLES[method], marker=plotting.MARKERS[si],
                              markersize=3, lw=1.2)
                    if c == 0:
                        ax.plot(sres["noise_floor_over_sigma_r"], _nan(mres["rho_raw_vs_floor"]), **kw)
                    elif c == 1:
                        ax.plot(sres["noise_floor_over_sigma_r"], _nan(mres["rho_denoised_vs_floor"]), **kw)
                    else:
                        ax.plot(cfg["steps"], _nan(mres["rho_denoised_vs_steps"]), **kw)
            plotting.reference_line(ax, 1.0)
            ax.set_xscale("log")
            ax.set_yscale("log")
            lo, hi = ax.get_ylim()
            subs = (0.5, 0.6, 0.7, 0.8, 1.0, 1.5, 2.0, 3.0) if hi / lo < 10 else (1.0, 2.0, 5.0)
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            if c == 0:  # the linearised noise-only prediction applies to the raw samples only
                grid = np.geomspace(floors.min(), floors.max(), 50)
                ax.plot(grid, np.sqrt(1 + fres["noise_slope_factor"] * grid**2), color=plotting.color("truth"),
                        ls=(0, (2, 2)), lw=1.0)
            if c < 2:
                ax.set_xticks(floors, [f"{v:g}" for v in floors])
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set_xlabel("noise at t_min, σ(t_min)/α(t_min)  [units of σ_r]")
            else:
                ax.set_xticks(cfg["steps"], [str(k) for k in cfg["steps"]])
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set_xlabel("sampler steps")
            ax.set_ylabel("ρ  (rule error ratio; truth = 1)")
        axes[r, 0].set_title(f"{fres['label']}\n(a) raw z at t_min ({max(cfg['steps'])} steps)", loc="left",
                             fontsize=8)
        axes[r, 1].set_title(f"(b) after the Tweedie denoising step ({max(cfg['steps'])} steps)", loc="left",
                             fontsize=8)
        bad = {f"{sn}/{m}": sum(mr["nonfinite_samples_per_config"]) for sn, sr in fres["schedules"].items()
               for m, mr in sr["samplers"].items() if sum(mr["nonfinite_samples_per_config"])}
        if bad:
            plotting.verdict_box(axes[r, 0], "non-finite samples (cells left out):\n" + "\n".join(
                f"{k}: {v}" for k, v in bad.items()), ok=False, loc="upper left")
        axes[r, 2].set_title(f"(c) vs steps, denoised, σ/α = {cfg['steps_floor']:g}·σ_r", loc="left", fontsize=8)
        if fname == "empirical":
            memo = [m["metrics_best_cell"] for s in fres["schedules"].values() for m in s["samplers"].values()
                    if m["metrics_best_cell"] is not None]
            rates = [m["memorisation_rate"] for m in memo]
            truth = memo[0]["memorisation_rate_truth"]
            plotting.verdict_box(axes[r, 2], f"memorised (within σ_r/2 of a training point):\n"
                                             f"{min(rates):.0%}–{max(rates):.0%} of samples;\n"
                                             f"fresh truth samples: {truth:.0%}", ok=None, loc="upper right")
    # one shared legend: colours = schedules, line styles = samplers, grey = references
    from matplotlib.lines import Line2D

    sched_names = list(next(iter(results.values()))["schedules"])
    handles = [Line2D([], [], color=plotting.color(i), marker=plotting.MARKERS[i], lw=1.2, label=s)
               for i, s in enumerate(sched_names)]
    handles += [Line2D([], [], color="k", ls=LINESTYLES[m], lw=1.2, label=SAMPLER_LABELS[m]) for m in cfg["samplers"]]
    handles += [Line2D([], [], color=plotting.color("truth"), ls="--", lw=1.0, label="ρ = 1 (truth)"),
                Line2D([], [], color=plotting.color("truth"), ls=(0, (2, 2)), lw=1.0,
                       label="noise only: √(1 + E[1+f′²]·(σ/α)²/σ_r²)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    return fig


# ----------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = experiment_parser("python -m experiments.oracle_check", __doc__.split("\n\n")[0],
                          quick_help="small grid (< 2 min on 2 CPU cores)",
                          check_help="recompute one stored cell (first family, schedule and sampler in the JSON) "
                                     "and compare; exit 1 on disagreement")
    p.add_argument("--families", nargs="+", choices=FAMILY_NAMES, default=None, help="subset of families")
    p.add_argument("--schedules", nargs="+", choices=SCHEDULE_NAMES, default=None, help="subset of schedules")
    p.add_argument("--samplers", nargs="+", choices=samplers.METHODS, default=None)
    p.add_argument("--n-samples", type=int, default=None, help="samples per cell")
    p.add_argument("--floors", nargs="+", type=float, default=None, help="σ(t_min)/α(t_min) values in σ_r units")
    p.add_argument("--steps", nargs="+", type=int, default=None, help="step counts (the max is used for the floors)")
    p.add_argument("--quiet", action="store_true")
    return p


def _config(args) -> dict:
    mode = "quick" if args.quick else "full"
    cfg = {"mode": mode, **MODES[mode]}
    for name in ("samplers", "floors", "steps"):
        if getattr(args, name) is not None:
            cfg[name] = list(getattr(args, name))
    if args.samplers is not None:
        cfg["sampler_families"] = {}
    if args.n_samples is not None:
        cfg["n_samples"] = args.n_samples
    if cfg["steps_floor"] not in cfg["floors"]:
        cfg["steps_floor"] = min(cfg["floors"])
    if args.n_samples is not None and args.n_samples < 20:
        raise SystemExit("error: --n-samples must be >= 20 (10 bins of >= 2 samples for the metrics)")
    cfg["family_names"] = list(args.families or FAMILY_NAMES)
    cfg["schedule_names"] = list(args.schedules or SCHEDULE_NAMES)
    cfg["schedules"] = {k: v.to_config() for k, v in build_schedules().items() if k in cfg["schedule_names"]}
    cfg["memorisation_threshold"] = "sigma_r / 2"
    return cfg


def _check(path: Path, cfg_stored: dict, seed: int, log) -> dict:
    """Recompute the first stored (family, schedule, sampler) cell and compare its ρ values."""
    stored_res = read_json(path)["results"]["families"]
    fname = next(iter(stored_res))
    sname = next(iter(stored_res[fname]["schedules"]))
    method = cfg_stored["samplers"][0]
    only = (fname, sname, method)
    stored = stored_res[fname]["schedules"][sname]["samplers"][method]
    fresh = compute(cfg_stored, seed, only=only, log=log)[fname]["schedules"][sname]["samplers"][method]
    pairs = []
    for k in ("rho_raw_vs_floor", "rho_denoised_vs_floor", "rho_denoised_vs_steps"):
        pairs += list(zip(stored[k], fresh[k]))
    if any((a is None) != (b is None) for a, b in pairs):
        return {"cell": list(only), "max_rel_diff": None, "rtol": CHECK_RTOL, "agree": False}
    worst = max((abs(a - b) / abs(a) for a, b in pairs if a is not None), default=0.0)
    return {"cell": list(only), "max_rel_diff": worst, "rtol": CHECK_RTOL, "agree": bool(worst <= CHECK_RTOL)}


def main(argv: Sequence[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    log = (lambda *a, **k: None) if args.quiet else print
    out_dir = Path(args.out)
    path = out_dir / f"{EXPERIMENT}.json"
    if args.check:
        if not path.exists():
            raise SystemExit(f"error: --check needs the stored results {path}; run the experiment first")
        stored = read_json(path)
        result = _check(path, stored["config"], stored["seed"], log)
        log(f"[check] {'agree' if result['agree'] else 'DISAGREE'}: cell {result['cell']} max relative "
            f"difference {result['max_rel_diff']} (rtol {CHECK_RTOL:g})")
        return {"check": result}
    cfg = _config(args)
    t0 = time.time()
    log(f"oracle check ({cfg['mode']}): {len(cfg['family_names'])} families × {len(cfg['schedule_names'])} schedules × "
        f"{len(cfg['samplers'])} samplers")
    res = compute(cfg, args.seed, log=log)
    fig = make_figure(res, cfg)
    results = {"families": res, "seconds": time.time() - t0}
    write_results(path, experiment=EXPERIMENT, config=cfg, seed=args.seed, results=results, fig=fig)
    log(f"wrote {path} and {path.with_suffix('.png')} in {time.time() - t0:.0f} s")
    return results


if __name__ == "__main__":
    from experiments._cli import run as run_cli

    run_cli(main)
