"""Coarse vs fine (THEORY §4): is the trend learned and the conditional width not?

    python -m experiments.coarse_vs_fine --quick     # small grid
    python -m experiments.coarse_vs_fine             # full grid
    python -m experiments.coarse_vs_fine --check     # recompute one stored cell, compare

At a fixed training-set size n, one sweep cell (`dsmtheory.study.compute_cell`)
per rule granularity σ_r (at k = K0) and per rule complexity k of y = sin(k x)
(at σ_r = S0) trains E networks by DSM and runs the same sampler on the learned
scores, the exact score (oracle) and the empirical-optimal scores. From the
generated samples `dsmtheory.metrics` measures, per seed (THEORY §4):

- the coarse (trend) error  ‖Ê[ŷ|x̂] − f‖ over x-bins, in data units
  (`coarse_error`) and in σ_r units (`coarse_ratio`);
- the fine error ρ_fine: ρ of the residuals de-trended by their bin means
  (ρ² = ρ_fine² + coarse_ratio² exactly).

The paper's claim "coarse is learned, fine is not" is then COMPUTED per cell from
paired per-seed differences learned − oracle (Student-t CIs over seeds,
`dsmtheory.stats.mean_ci`):

- "coarse ≈ oracle"  ⇔ the CI of coarse_ratio(learned) − coarse_ratio(oracle) contains 0
  (else "coarse worse than oracle" / "coarse better than oracle");
- "fine ≫ oracle"    ⇔ the CI of ρ_fine(learned) − ρ_fine(oracle) excludes 0 on the
  positive side (reported with the ratio ρ_fine(learned)/ρ_fine(oracle) and its CI);
- "fine share of the excess" = (ρ_fine,L² − ρ_fine,O²)/(ρ_L² − ρ_O²) per seed: the part of
  the excess squared rule error carried by the conditional width (reported, not a verdict);
- the claim holds in a cell ⇔ both conditions hold. Nothing is assumed: any outcome
  is reported as measured.

Modes (family sin(k x), x ~ N(0, 1), vp_linear schedule, MLP, Euler–Maruyama):
- quick: n = 2048, σ_r ∈ {0.03, 0.1, 0.3} at k = 2, k ∈ {1, 4} at σ_r = 0.1 (k = 2
  reused from the σ_r axis), 3 seeds, width 32, 300 training steps, 400 samples × 100
  steps (a smoke run: the network is far from its DSM optimum);
- full: n = 16384, σ_r ∈ {0.01, 0.03, 0.1, 0.3, 1.0} (two decades), k ∈ {1, 2, 4, 8},
  4 seeds, width 64, 8000 training steps, 2000 samples × 200 steps.
Cells are stored one JSON each under --cells-dir (default runs/coarse_vs_fine[_quick]).

The helpers it shares with capacity and loss_share live in experiments/_study_helpers.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from dsmtheory.results import write_results
from experiments._study_helpers import (CURVE_LABELS, SCALAR_OVERRIDES, apply_overrides, band, base_parser,
                                        cells_dir_for, check_stored_cell, common_cell, curve_summary, fmt_ci,
                                        log_axes, paired_ci, run_axes)

EXPERIMENT = "coarse_vs_fine"
MODES = {
    "quick": {"n": 2048, "k0": 2.0, "sigma_r0": 0.1, "sigma_r_values": [0.03, 0.1, 0.3], "k_values": [1.0, 2.0, 4.0],
              "seeds": 3, "width": 32, "train_steps": 300, "samples": 400, "sample_steps": 100,
              "empirical_samples": 200, "diagnostic_samples": 1024},
    "full": {"n": 16384, "k0": 2.0, "sigma_r0": 0.1, "sigma_r_values": [0.01, 0.03, 0.1, 0.3, 1.0],
             "k_values": [1.0, 2.0, 4.0, 8.0], "seeds": 4, "width": 64, "train_steps": 8000, "samples": 2000,
             "sample_steps": 200, "empirical_samples": 500, "diagnostic_samples": 4096},
}


def _settings(args) -> dict:
    mode = "quick" if args.quick else "full"
    s = apply_overrides(MODES[mode], args, SCALAR_OVERRIDES + ("sigma_r_values", "k_values"))
    if len(s["sigma_r_values"]) < 2 or len(s["k_values"]) < 2:
        raise SystemExit("error: --sigma-r-values and --k-values need at least 2 values each")
    s["mode"] = mode
    return s


def build_cells(s: dict, seed: int) -> dict[str, list[dict]]:
    """Two axes at fixed n: σ_r (at k0) and k (at σ_r0); shared cells are computed once."""
    return {
        "sigma_r": [common_cell(s, seed, rule="sin", rule_params={"k": s["k0"]}, sigma_r=v)
                    for v in s["sigma_r_values"]],
        "k": [common_cell(s, seed, rule="sin", rule_params={"k": k}, sigma_r=s["sigma_r0"]) for k in s["k_values"]],
    }


def compare_cell(record: dict) -> dict:
    """Computed learned-vs-oracle comparisons of one cell (see module docstring)."""
    res = record["result"]
    L, O = res["learned"], res["oracle"]
    arr = lambda d, k: np.asarray(d[k], np.float64)  # noqa: E731
    coarse_excess = paired_ci(arr(L, "coarse_ratio"), arr(O, "coarse_ratio"))
    coarse_excess_data = paired_ci(arr(L, "coarse_error"), arr(O, "coarse_error"))
    fine_excess = paired_ci(arr(L, "rho_fine"), arr(O, "rho_fine"))
    fine_ratio = paired_ci(arr(L, "rho_fine") / arr(O, "rho_fine"))
    excess_sq = arr(L, "rho") ** 2 - arr(O, "rho") ** 2
    fine_share = (paired_ci((arr(L, "rho_fine") ** 2 - arr(O, "rho_fine") ** 2) / excess_sq)
                  if np.all(excess_sq > 0) else None)
    if coarse_excess["lo"] <= 0.0 <= coarse_excess["hi"]:
        coarse = "coarse ≈ oracle"
    else:
        coarse = "coarse worse than oracle" if coarse_excess["lo"] > 0 else "coarse better than oracle"
    if fine_excess["lo"] > 0:
        fine = "fine ≫ oracle"
    elif fine_excess["hi"] < 0:
        fine = "fine better than oracle"
    else:
        fine = "fine ≈ oracle"
    out = {"coarse_ratio_excess": coarse_excess, "coarse_error_excess_data_units": coarse_excess_data,
           "rho_fine_excess": fine_excess, "rho_fine_ratio": fine_ratio, "fine_share_of_excess_sq": fine_share,
           "coarse_verdict": coarse, "fine_verdict": fine,
           "claim_holds": coarse == "coarse ≈ oracle" and fine == "fine ≫ oracle"}
    if "empirical" in res:
        E = res["empirical"]
        out["empirical_coarse_ratio_excess"] = paired_ci(arr(E, "coarse_ratio"), arr(O, "coarse_ratio"))
        out["empirical_rho_fine_excess"] = paired_ci(arr(E, "rho_fine"), arr(O, "rho_fine"))
    return out


def summarise(cells: dict[str, list[dict]], records: dict[str, list[dict]], s: dict) -> dict:
    out = {}
    for axis, recs in records.items():
        x = s["sigma_r_values"] if axis == "sigma_r" else s["k_values"]
        comparisons = [compare_cell(r) for r in recs]
        out[axis] = {
            "values": list(x),
            "fixed": {"k": s["k0"]} if axis == "sigma_r" else {"sigma_r": s["sigma_r0"]},
            "coarse_error": curve_summary(recs, "coarse_error"),
            "coarse_ratio": curve_summary(recs, "coarse_ratio"),
            "rho_fine": curve_summary(recs, "rho_fine"),
            "rho": curve_summary(recs, "rho"),
            "comparisons": comparisons,
            "claim_holds_in": f"{sum(c['claim_holds'] for c in comparisons)}/{len(comparisons)} cells",
            "cell_ids": [r["cell_id"] for r in recs],
        }
    return out


def plot(summary: dict, s: dict):
    from dsmtheory.plotting import figure, reference_line, verdict_box

    fig, axes = figure(2, 2, panel_size=(5.4, 4.3),
                       title=f"Coarse vs fine error ({s['mode']} mode): y = sin(k x) + σ_r ε, x ~ N(0,1), n = {s['n']}; "
                             f"MLP width {s['width']}, {s['train_steps']} steps; {s['seeds']} seeds, 95% t-bands")
    for row, axis in enumerate(("sigma_r", "k")):
        sm = summary[axis]
        x = np.array(sm["values"])
        xlabel = ("rule granularity σ_r (data units, k = %g)" % s["k0"] if axis == "sigma_r"
                  else "rule complexity k of sin(k x) (rad per unit x, σ_r = %g)" % s["sigma_r0"])
        for col, (metric, ylabel) in enumerate((("coarse_error", "coarse (trend) error ‖Ê[ŷ|x̂] − f‖ (data units)"),
                                                ("rho_fine", "fine error ρ_fine (σ_r units)"))):
            ax = axes[row, col]
            curves = sm[metric]
            floor = 0.3 * min(min(c["mean"]) for c in curves.values())
            for curve, c in curves.items():
                band(ax, x, c, curve, CURVE_LABELS[curve], floor=floor)
            if metric == "rho_fine":
                reference_line(ax, 1.0, "truth (ρ_fine ≈ 1)")
            else:
                ax.plot(x, x if axis == "sigma_r" else np.full_like(x, s["sigma_r0"]), ":", color="0.5", lw=1,
                        label="σ_r (the rule's own noise)")
            log_axes(ax, x, curves)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.legend(loc="lower right", fontsize=7)
            comps = sm["comparisons"]
            if metric == "coarse_error":
                lines = [f"{v:g}: {c['coarse_verdict']}  Δcoarse/σ_r {fmt_ci(c['coarse_ratio_excess'], 2)}"
                         for v, c in zip(x, comps)]
                head = "learned − oracle, coarse (σ_r units):"
            else:
                lines = [f"{v:g}: {c['fine_verdict']}  Δρ_fine {fmt_ci(c['rho_fine_excess'], 2)}" for v, c in zip(x, comps)]
                head = f"learned − oracle, fine; claim holds in {sm['claim_holds_in']}:"
            verdict_box(ax, "\n".join([head] + lines), ok=None, loc="upper left")
            ax.set_title(("coarse" if metric == "coarse_error" else "fine") + " error vs "
                         + ("σ_r" if axis == "sigma_r" else "k"))
    return fig


def main(argv: Sequence[str] | None = None) -> dict:
    p = base_parser("python -m experiments.coarse_vs_fine", __doc__.split("\n\n")[0])
    p.add_argument("--sigma-r-values", nargs="+", type=float, default=None)
    p.add_argument("--k-values", nargs="+", type=float, default=None)
    args = p.parse_args(argv)
    s = _settings(args)
    cells_dir = cells_dir_for(args, EXPERIMENT)
    cells = build_cells(s, args.seed)
    if args.check:
        return check_stored_cell(cells["sigma_r"], cells_dir)
    start = time.perf_counter()
    records = run_axes(cells, cells_dir, quiet=args.quiet)
    summary = summarise(cells, records, s)
    elapsed = time.perf_counter() - start
    fig = plot(summary, s)
    suffix = "_quick" if args.quick else ""
    config = {"settings": s, "base_cell": cells["sigma_r"][0], "cells_dir": str(cells_dir),
              "measured": "per cell, per seed: coarse_error (data units), coarse_ratio and rho_fine (σ_r units) of "
                          "learned, oracle and empirical-optimal samples (same sampler, steps, t_min, keys); "
                          "comparisons are paired learned − oracle differences with 95% t-CIs over seeds"}
    results = {"axes": summary, "wall_seconds_this_run": elapsed,
               "compute_seconds_all_cells": float(sum(r["compute_seconds"] for rs in records.values() for r in rs))}
    path = write_results(Path(args.out) / f"{EXPERIMENT}{suffix}.json", experiment=EXPERIMENT, config=config,
                         seed=args.seed, results=results, fig=fig)
    for axis, sm in summary.items():
        for v, c in zip(sm["values"], sm["comparisons"]):
            print(f"[{axis}={v:g}] {c['coarse_verdict']} (Δcoarse/σ_r {fmt_ci(c['coarse_ratio_excess'])}); "
                  f"{c['fine_verdict']} (Δρ_fine {fmt_ci(c['rho_fine_excess'])}, ratio {fmt_ci(c['rho_fine_ratio'])})")
        print(f"[{axis}] claim 'coarse learned, fine not' holds in {sm['claim_holds_in']}")
    print(f"this run {elapsed:.0f} s; wrote {path} and {path.with_suffix('.png')}")
    return {"path": str(path), **results}


if __name__ == "__main__":
    from experiments._cli import run as run_cli

    run_cli(main)
