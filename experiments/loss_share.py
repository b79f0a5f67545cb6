"""Loss share (THEORY §3-§4): how much of the DSM objective the fine rule moves.

    python -m experiments.loss_share --quick     # small grid
    python -m experiments.loss_share             # full grid
    python -m experiments.loss_share --check     # recompute one stored cell, compare

At a fixed n, one sweep cell (`dsmtheory.study.compute_cell`) per rule
granularity σ_r (ambient D = 2) and per ambient dimension D of the embedded rule
(THEORY §2.5, at σ_r = S0). For the learned score of every seed the cell records
(score-level diagnostics, `dsmtheory.diagnostics`):

- `rule_normal_share`: the DSM excess E_t λ(t) F(t), F(t) = E‖s_θ − ∇log p_t‖² with t
  from the training law, its rule-normal part E_t λ F_⊥ and their ratio (the share
  of the excess carried by the rule-normal direction; an isotropic error gives 1/D);
- `fisher_profile` (added by this experiment's compute function, see
  `compute_cell_with_profile`): F(t), F_⊥(t), F_∥(t) and λ(t) on a geometric t-grid,
  i.e. the excess DSM loss by t and its rule-normal part;
- the training run's irreducible loss L* (THEORY §3), so the rule-normal excess can be
  expressed as a fraction of the whole objective: E λ F_⊥ / L* ("how little of the
  objective the fine rule moves");
- ρ of learned / oracle / empirical-optimal samples (ρ against D at fixed n).

All values are per seed with 95% t-CIs over seeds (`dsmtheory.stats.mean_ci`).

Modes (sin(2x), x ~ N(0,1), vp_linear, MLP, Euler–Maruyama):
- quick: n = 2048, σ_r ∈ {0.03, 0.1, 0.3} at D = 2, D ∈ {2, 8} at σ_r = 0.1, 3 seeds,
  width 32, 300 steps, 400 samples × 100 steps (a smoke run);
- full: n = 16384, σ_r ∈ {0.01, 0.03, 0.1, 0.3, 1.0}, D ∈ {2, 8, 32, 128}, 4 seeds,
  width 128, 8000 steps, 2000 samples × 200 steps.
Cells are stored under --cells-dir (default runs/loss_share[_quick]).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from dsmtheory import study
from dsmtheory.results import write_results
from dsmtheory.stats import mean_ci
from experiments._study_helpers import (CURVE_LABELS, SCALAR_OVERRIDES, apply_overrides, band, base_parser,
                                        cells_dir_for, check_stored_cell, common_cell, curve_summary, fmt_ci, log_axes,
                                        run_axes)

EXPERIMENT = "loss_share"
PROFILE_N_T = 12  # t-grid points of the Fisher profile (geometric on [t_min, t_max])
PROFILE_N_PER_T = 1024  # draws of z_t per t (common random numbers across t)
MODES = {
    "quick": {"n": 2048, "k": 2.0, "sigma_r0": 0.1, "sigma_r_values": [0.03, 0.1, 0.3], "D_values": [2, 8],
              "seeds": 3, "width": 32, "train_steps": 300, "samples": 400, "sample_steps": 100,
              "empirical_samples": 200, "diagnostic_samples": 2048},
    "full": {"n": 16384, "k": 2.0, "sigma_r0": 0.1, "sigma_r_values": [0.01, 0.03, 0.1, 0.3, 1.0],
             "D_values": [2, 8, 32, 128], "seeds": 4, "width": 128, "train_steps": 8000, "samples": 2000,
             "sample_steps": 200, "empirical_samples": 500, "diagnostic_samples": 8192},
}


def compute_cell_with_profile(cell: dict) -> dict:
    """`study.compute_cell` plus the Fisher profile F(t), F_⊥(t) of the learned scores.

    The profile needs the trained networks, which only exist inside compute_cell, so
    study's score-diagnostics step is wrapped for the duration of this call (restored
    afterwards, also on error) to add `diagnostics.fisher_profile` on the same learned
    ensemble. Deterministic: the profile's key is fixed by the cell's seed."""
    from dsmtheory.diagnostics import fisher_profile
    from dsmtheory.dsm import ensemble_axes

    original = study._score_diagnostics

    def with_profile(learned, family, schedule, cell_):
        out = original(learned, family, schedule, cell_)
        key = jax.random.fold_in(jax.random.PRNGKey(cell_["seed"]), 0xF15E)
        prof = fisher_profile(key, learned, family, schedule, n_t=PROFILE_N_T,
                              n_per_t=min(PROFILE_N_PER_T, cell_["diagnostic_samples"]),
                              weighting=cell_["weighting"], member_axes=ensemble_axes(learned))
        out["profile"] = {k: np.asarray(v).tolist() for k, v in prof.items()}
        return out

    study._score_diagnostics = with_profile
    try:
        return study.compute_cell(cell)
    finally:
        study._score_diagnostics = original


def _settings(args) -> dict:
    mode = "quick" if args.quick else "full"
    s = apply_overrides(MODES[mode], args, SCALAR_OVERRIDES + ("sigma_r_values", "D_values"))
    if len(s["sigma_r_values"]) < 2 or len(s["D_values"]) < 2:
        raise SystemExit("error: --sigma-r-values and --D-values need at least 2 values each")
    s["mode"] = mode
    return s


def build_cells(s: dict, seed: int) -> dict[str, list[dict]]:
    rule = {"rule": "sin", "rule_params": {"k": s["k"]}}
    return {"sigma_r": [common_cell(s, seed, **rule, sigma_r=v, D=2) for v in s["sigma_r_values"]],
            "D": [common_cell(s, seed, **rule, sigma_r=s["sigma_r0"], D=d) for d in s["D_values"]]}


def _cell_numbers(rec: dict) -> dict:
    res = rec["result"]
    diag, train = res["diagnostics"], res["training"]
    normal, excess = np.asarray(diag["normal"]), np.asarray(diag["excess"])
    loss_star = np.asarray(train["loss_star"], np.float64)
    prof = diag["profile"]
    lam = np.asarray(prof["weight"])
    return {
        "excess": mean_ci(excess).to_dict(),
        "normal_excess": mean_ci(normal).to_dict(),
        "normal_share": mean_ci(diag["normal_share"]).to_dict(),
        "isotropic_share": diag["isotropic_share"],
        "loss_star": mean_ci(loss_star).to_dict(),
        "excess_over_loss_star": mean_ci(excess / loss_star).to_dict(),
        "normal_excess_over_loss_star": mean_ci(normal / loss_star).to_dict(),
        "normal_share_grid": mean_ci(prof["normal_share_grid"]).to_dict(),
        "profile": {"t": prof["t"], "weight": prof["weight"],
                    "weighted_total_mean": (lam * np.asarray(prof["total"])).mean(0).tolist(),
                    "weighted_normal_mean": (lam * np.asarray(prof["normal"])).mean(0).tolist(),
                    "total_per_seed": prof["total"], "normal_per_seed": prof["normal"]},
    }


def summarise(records: dict[str, list[dict]], s: dict) -> dict:
    out = {}
    for axis, recs in records.items():
        out[axis] = {"values": list(s["sigma_r_values"] if axis == "sigma_r" else s["D_values"]),
                     "cells": [_cell_numbers(r) for r in recs],
                     "rho": curve_summary(recs, "rho"),
                     # how far the generated x-marginal is from the data's: tells a diverged sampler
                     # (a huge ρ that is not a rule error) from a rule error
                     "marginal_w1": curve_summary(recs, "marginal_w1"),
                     "cell_ids": [r["cell_id"] for r in recs]}
    return out


def plot(summary: dict, s: dict):
    from dsmtheory.plotting import color, figure, reference_line, verdict_box

    fig, axes = figure(2, 2, panel_size=(5.4, 4.2),
                       title=f"Where the DSM excess sits ({s['mode']} mode): sin({s['k']:g}x), n = {s['n']}, "
                             f"MLP width {s['width']}, {s['train_steps']} steps; {s['seeds']} seeds, 95% t-CIs")
    # (a) excess integrand by t, per σ_r (D = 2) and per D
    ax = axes[0, 0]
    series = [(f"σ_r={v:g}, D=2", c) for v, c in zip(summary["sigma_r"]["values"], summary["sigma_r"]["cells"])]
    series += [(f"σ_r={s['sigma_r0']:g}, D={d}", c) for d, c in zip(summary["D"]["values"], summary["D"]["cells"])
               if d != 2]
    for i, (label, c) in enumerate(series):
        p = c["profile"]
        ax.plot(p["t"], p["weighted_total_mean"], "-", color=color(i), lw=1.3, label=label + " total")
        ax.plot(p["t"], p["weighted_normal_mean"], "--", color=color(i), lw=1.1)
    ax.plot([], [], "k--", lw=1.1, label="dashed: rule-normal part")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("diffusion time t (schedule units)")
    ax.set_ylabel("excess integrand λ(t)·E‖s_θ − ∇log p_t‖²")
    ax.set_title("excess DSM loss by t (mean over seeds)")
    ax.legend(fontsize=6.5, loc="lower left")
    # (b) share vs σ_r, (c) share vs D
    for ax, axis, xlabel in ((axes[0, 1], "sigma_r", "rule granularity σ_r (data units), D = 2"),
                             (axes[1, 0], "D", f"ambient dimension D (σ_r = {s['sigma_r0']:g})")):
        sm = summary[axis]
        x = np.array(sm["values"], float)
        share = {"mean": [c["normal_share"]["mean"] for c in sm["cells"]],
                 "ci_lo": [c["normal_share"]["lo"] for c in sm["cells"]],
                 "ci_hi": [c["normal_share"]["hi"] for c in sm["cells"]]}
        band(ax, x, share, "learned", "rule-normal share of the DSM excess (learned)")
        ax.plot(x, [c["isotropic_share"] for c in sm["cells"]], ":", color=color("truth"),
                label="isotropic error: 1/D")
        frac = {"mean": [c["normal_excess_over_loss_star"]["mean"] for c in sm["cells"]],
                "ci_lo": [c["normal_excess_over_loss_star"]["lo"] for c in sm["cells"]],
                "ci_hi": [c["normal_excess_over_loss_star"]["hi"] for c in sm["cells"]]}
        band(ax, x, frac, "other", "rule-normal excess / L* (fraction of the objective)")
        log_axes(ax, x, {"share": share, "frac": frac}, headroom=30.0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("share / fraction (dimensionless)")
        ax.set_title("rule-normal share of the excess vs " + ("σ_r" if axis == "sigma_r" else "D"))
        ax.legend(fontsize=6.5, loc="lower left")
        lines = [f"{v:g}: share {fmt_ci(c['normal_share'], 2)}, normal/L* {c['normal_excess_over_loss_star']['mean']:.2g}"
                 for v, c in zip(x, sm["cells"])]
        verdict_box(ax, "\n".join(lines), ok=None, loc="upper right")
    # (d) ρ vs D
    ax = axes[1, 1]
    sm = summary["D"]
    x = np.array(sm["values"], float)
    floor = 0.3 * min(min(c["mean"]) for c in sm["rho"].values())
    for curve, c in sm["rho"].items():
        band(ax, x, c, curve, CURVE_LABELS[curve], floor=floor)
    reference_line(ax, 1.0, "truth (ρ = 1)")
    log_axes(ax, x, sm["rho"], headroom=4.0, base=2)
    w1 = sm.get("marginal_w1", {})
    if "learned" in w1 and "oracle" in w1:
        for xi, rho, w_learned, w_oracle in zip(x, sm["rho"]["learned"]["mean"], w1["learned"]["mean"],
                                                w1["oracle"]["mean"]):
            if w_learned > max(1.0, 10.0 * w_oracle):  # x-marginal off by more than the data's own scale
                ax.annotate(f"sampler diverged:\nmarginal W1 {w_learned:.2g}\n(oracle {w_oracle:.2g})",
                            (xi, rho), xytext=(-6, -4), textcoords="offset points", ha="right", va="top",
                            fontsize=7, color=color("learned"))
    ax.set_xlabel(f"ambient dimension D (σ_r = {s['sigma_r0']:g}, n = {s['n']})")
    ax.set_ylabel("rule error ratio ρ = RMS residual / σ_r")
    ax.set_title("ρ vs ambient dimension at fixed n")
    ax.legend(fontsize=7, loc="upper left")
    return fig


def main(argv: Sequence[str] | None = None) -> dict:
    p = base_parser("python -m experiments.loss_share", __doc__.split("\n\n")[0])
    p.add_argument("--sigma-r-values", nargs="+", type=float, default=None)
    p.add_argument("--D-values", dest="D_values", nargs="+", type=int, default=None)
    args = p.parse_args(argv)
    s = _settings(args)
    cells_dir = cells_dir_for(args, EXPERIMENT)
    cells = build_cells(s, args.seed)
    if args.check:
        return check_stored_cell(cells["sigma_r"], cells_dir, compute=compute_cell_with_profile)
    start = time.perf_counter()
    records = run_axes(cells, cells_dir, quiet=args.quiet, compute=compute_cell_with_profile)
    summary = summarise(records, s)
    elapsed = time.perf_counter() - start
    fig = plot(summary, s)
    suffix = "_quick" if args.quick else ""
    config = {"settings": s, "base_cell": cells["sigma_r"][0], "cells_dir": str(cells_dir),
              "profile": {"n_t": PROFILE_N_T, "n_per_t": PROFILE_N_PER_T},
              "measured": "per seed: DSM excess E_t λ‖s_θ − ∇log p_t‖² (training law of t), its rule-normal part "
                          "and share, the Fisher profile by t, L*, and ρ of learned/oracle/empirical samples"}
    results = {"axes": summary, "wall_seconds_this_run": elapsed,
               "compute_seconds_all_cells": float(sum(r["compute_seconds"] for rs in records.values() for r in rs))}
    path = write_results(Path(args.out) / f"{EXPERIMENT}{suffix}.json", experiment=EXPERIMENT, config=config,
                         seed=args.seed, results=results, fig=fig)
    for axis, sm in summary.items():
        for v, c in zip(sm["values"], sm["cells"]):
            print(f"[{axis}={v:g}] rule-normal share {fmt_ci(c['normal_share'])} (isotropic {c['isotropic_share']:.3g}); "
                  f"excess/L* {fmt_ci(c['excess_over_loss_star'])}; normal excess/L* "
                  f"{fmt_ci(c['normal_excess_over_loss_star'])}")
    for d, m in zip(summary["D"]["values"], summary["D"]["rho"]["learned"]["mean"]):
        print(f"[D={d}] rho learned {m:.3g}")
    print(f"this run {elapsed:.0f} s; wrote {path} and {path.with_suffix('.png')}")
    return {"path": str(path), **results}


if __name__ == "__main__":
    from experiments._cli import run as run_cli

    run_cli(main)
