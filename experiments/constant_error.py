"""Constant-error check (THEORY §5): ρ against n for learned vs oracle vs empirical-optimal.

    python -m experiments.constant_error --quick     # < 2 min on 2 CPU cores
    python -m experiments.constant_error             # the full grid
    python -m experiments.constant_error --check     # recompute one stored cell, compare

For every schedule (one panel each) and every n, one sweep cell
(`dsmtheory.study.compute_cell`) trains E networks by DSM on E training sets of
size n, then runs the same sampler on the learned scores, the exact score
(oracle) and the empirical-optimal scores, and measures the rule error ratio ρ
(THEORY §4) per seed. The figure shows ρ against n (log-log) with t-interval
bands over seeds; for the learned and empirical-optimal curves the fitted
log-log slope on the upper half of n, the excess over the oracle and the
THEORY §5 verdict (`dsmtheory.stats.constant_error_verdict`) are computed
from these numbers, printed, written on the panel and stored in the JSON.

Modes (the family is sin(k x) with x ~ N(0, 1), k = 2, σ_r = 0.05, D = 2, an MLP):
- quick: one schedule (vp_linear), n ∈ {256, 1024, 4096}, 4 seeds, width 64,
  3000 training steps, 600 samples × 300 Euler–Maruyama steps per seed (300 for the
  empirical-optimal score; 300 steps put the oracle's floor at ρ ≈ 1.08, 100 steps at
  ≈ 1.7). Measured: 35 s wall on 2 idle CPU cores. 3000 steps is still a short training
  (the learned ρ keeps falling with more steps at this size, see `capacity`), so the
  quick verdict is a statement about this budget, not about the theorem;
- full:  all four schedules, n ∈ {2^8, ..., 2^16} (6 values, ×3.03 apart), 4 seeds,
  width 64, 4000 training steps, 1000 samples × 200 Euler–Maruyama steps per seed
  (250 for the empirical-optimal score, whose cost grows with n). Measured: 8:14 wall
  on 2 idle CPU cores for all 24 cells (15-60 s per cell, the largest n costliest).
Each option can be overridden (--schedules, --n-values, --seeds, --train-steps,
--width, --samples, --sample-steps). Cells are stored one JSON each under
--cells-dir (default runs/constant_error[_quick]); a killed run resumes.
Outputs: OUT/constant_error.{png,json} (full) or OUT/constant_error_quick.{png,json}.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dsmtheory.results import read_json, write_results
from dsmtheory.stats import constant_error_verdict, curve_bands, loglog_slope
from dsmtheory.study import compute_cell, make_cell
from dsmtheory.sweep import run_sweep, shape_key
from experiments._cli import with_overrides
from experiments._study_helpers import CHECK_RTOL, check_stored_cell, study_parser

EXPERIMENT = "constant_error"
ALL_SCHEDULES = ("vp_linear", "vp_cosine", "ve", "edm")
CURVE_LABELS = {  # the colours are the shared roles of dsmtheory.plotting.COLORS
    "learned": "learned (DSM network)",
    "empirical": "empirical-optimal",
    "oracle": "oracle (exact score)",
}
MODES = {
    "quick": {"schedules": ["vp_linear"], "n_values": [256, 1024, 4096], "seeds": 4, "width": 64,
              "train_steps": 3000, "samples": 600, "sample_steps": 300, "empirical_samples": 300,
              "diagnostic_samples": 2048},
    "full": {"schedules": list(ALL_SCHEDULES),
             "n_values": [int(round(v)) for v in np.geomspace(2**8, 2**16, 6)],
             "seeds": 4, "width": 64, "train_steps": 4000, "samples": 1000, "sample_steps": 200,
             "empirical_samples": 250, "diagnostic_samples": 4096},
}
FAMILY_PRESETS = {
    "nonlinear": {"family": "nonlinear", "rule": "sin", "rule_params": {"k": 2.0}, "sigma_r": 0.05},
    "linear_gaussian": {"family": "linear_gaussian", "rule": "linear", "rule_params": {"a": 1.0, "b": 0.0},
                        "sigma_r": 0.05},
}


def _parser() -> argparse.ArgumentParser:
    p = study_parser("python -m experiments.constant_error", __doc__.split("\n\n")[0],
                     "runs/constant_error[_quick]", quick_help="small grid (< 2 min on 2 CPU cores)")
    p.add_argument("--family", choices=tuple(FAMILY_PRESETS), default="nonlinear",
                   help="nonlinear: y = sin(2x) + σ_r ε, x ~ N(0,1); linear_gaussian: y = x + σ_r ε")
    p.add_argument("--schedules", nargs="+", choices=ALL_SCHEDULES, default=None)
    p.add_argument("--n-values", nargs="+", type=int, default=None)
    p.add_argument("--replot", action="store_true",
                   help="redraw the PNG from the stored JSON of this mode (no computation; the JSON is unchanged)")
    return p


def _settings(args) -> dict:
    mode = "quick" if args.quick else "full"
    s = with_overrides(MODES[mode], {key: getattr(args, key) for key in (
        "schedules", "n_values", "seeds", "train_steps", "width", "samples", "sample_steps", "empirical_samples",
        "diagnostic_samples")})
    if len(s["n_values"]) < 2 or len(set(s["n_values"])) != len(s["n_values"]) or min(s["n_values"]) < 1:
        raise SystemExit("error: --n-values needs at least 2 distinct positive integers")
    if s["seeds"] < 2:
        raise SystemExit("error: --seeds must be >= 2 (CIs over seeds)")
    s["n_values"] = sorted(int(v) for v in s["n_values"])
    s["mode"] = mode
    s["family"] = args.family
    return s


def build_cells(settings: dict, seed: int) -> list[dict]:
    """One cell per (schedule, n); every n of a schedule shares n_max (one compilation)."""
    n_max = max(settings["n_values"])
    cells = []
    for schedule in settings["schedules"]:
        for n in settings["n_values"]:
            cells.append(make_cell(**FAMILY_PRESETS[settings["family"]], schedule=schedule, n=n, n_max=n_max, n_seeds=settings["seeds"], seed=seed,
                                   width=settings["width"], train_steps=settings["train_steps"],
                                   n_samples=settings["samples"], sample_steps=settings["sample_steps"],
                                   n_samples_empirical=settings["empirical_samples"],
                                   diagnostic_samples=settings["diagnostic_samples"]))
    return cells


def summarise(cells: list[dict], records: list[dict], settings: dict) -> dict:
    """Per schedule: ρ curves (mean, CI, per seed), slopes, excess and verdicts (THEORY §5)."""
    out = {}
    for schedule in settings["schedules"]:
        idx = [i for i, c in enumerate(cells) if c["schedule"] == schedule]
        idx.sort(key=lambda i: cells[i]["n"])
        n_values = [cells[i]["n"] for i in idx]
        res = [records[i]["result"] for i in idx]
        curves = {}
        for name in ("learned", "empirical", "oracle"):
            if name not in res[0]:
                continue
            rho = np.array([r[name]["rho"] for r in res]).T  # [seeds, n]
            bands = curve_bands(rho)
            curves[name] = {"rho_per_seed": rho.tolist(), "mean": bands["mean"].tolist(),
                            "ci_lo": bands["lo"].tolist(), "ci_hi": bands["hi"].tolist(),
                            "slope": loglog_slope(n_values, rho).to_dict()}
        oracle = np.array(curves["oracle"]["rho_per_seed"])
        verdicts = {name: constant_error_verdict(n_values, np.array(curves[name]["rho_per_seed"]), oracle).to_dict()
                    for name in curves if name != "oracle"}
        extra = {key: [r["learned"][key] for r in res] for key in ("coarse_ratio", "rho_fine", "memorisation_rate")
                 if key in res[0]["learned"]}
        out[schedule] = {"n_values": n_values, "curves": curves, "verdicts": verdicts,
                         "t_min": res[0]["t_min"], "noise_floor": res[0]["noise_floor"],
                         "learned_other_metrics": extra,
                         "training_fisher_excess": [r["training"].get("fisher_excess") for r in res],
                         "cell_ids": [records[i]["cell_id"] for i in idx]}
    return out


def plot(summary: dict, settings: dict, base_cell: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dsmtheory.plotting import COLORS

    schedules = list(summary)
    ncols = min(2, len(schedules))
    nrows = math.ceil(len(schedules) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.6 * ncols, 6.0 * nrows), squeeze=False)
    for ax in axes.flat[len(schedules):]:
        ax.set_visible(False)
    for ax, schedule in zip(axes.flat, schedules):
        s = summary[schedule]
        n = np.array(s["n_values"])
        shown = [np.ravel(c["mean"]) for c in s["curves"].values()] + [np.ones(1)]
        if "learned" in s["curves"]:  # the per-seed dots are drawn too
            shown.append(np.ravel(s["curves"]["learned"]["rho_per_seed"]))
        shown = np.concatenate(shown)
        y_lo, y_hi = shown.min() / 2.0, shown.max() * 1.6
        for name, curve in s["curves"].items():
            colour = COLORS[name]
            ax.plot(n, curve["mean"], "o-", color=colour, label=CURVE_LABELS[name], lw=1.8, ms=4)
            if name == "learned":  # each seed, so that one outlying seed is visible as such
                per_seed = np.array(curve["rho_per_seed"])
                ax.plot(np.broadcast_to(n, per_seed.shape).T, per_seed.T, ".", color=colour, alpha=0.45, ms=4,
                        label=None)
            # log axis: a t-interval reaching below zero is drawn down to the panel's floor
            lo = np.clip(np.array(curve["ci_lo"]), y_lo, None)
            ax.fill_between(n, lo, np.clip(np.array(curve["ci_hi"]), None, y_hi * 10), color=colour,
                            alpha=0.2, lw=0)
        ax.axhline(1.0, color="k", ls=":", lw=1, label="truth (ρ = 1)")
        ax.plot([], [], ".", color=COLORS["learned"], alpha=0.45, label="learned, each seed")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylim(y_lo, y_hi)
        ax.set_xlabel("training-set size n (samples)")
        ax.set_ylabel("rule error ratio ρ = RMS residual / σ_r")
        ax.set_title(f"schedule {schedule}  (t_min = {s['t_min']:.3g}; {settings['seeds']} seeds)")
        lines = []
        for name, v in s["verdicts"].items():
            sl, ex = v["slope"], v["excess"]
            lines.append(f"{name}: {v['verdict'].upper()}" + (f"  ({'; '.join(v['reasons'])})" if v["reasons"] else ""))
            lines.append(f"   slope {sl['slope']:+.3f} [{_fmt(sl['lo'])}, {_fmt(sl['hi'])}]   "
                         f"excess over oracle {ex['mean']:+.3g} [{_fmt(ex['lo'])}, {_fmt(ex['hi'])}]")
        ax.text(0.0, -0.16, "\n".join(lines), transform=ax.transAxes, fontsize=8, family="monospace",
                va="top", ha="left", bbox={"facecolor": "white", "alpha": 0.9, "edgecolor": "0.6"})
        ax.legend(fontsize=8, loc="best")
        ax.grid(True, which="both", alpha=0.25)
    rule = base_cell["rule"] + "(" + ", ".join(f"{k}={v:g}" for k, v in base_cell["rule_params"].items()) + ")"
    fig.suptitle(f"Constant-error check ({settings['mode']} mode): {base_cell['family']} family, rule {rule}, "
                 f"σ_r = {base_cell['sigma_r']:g}, D = {base_cell['D']}; {base_cell['network']} width "
                 f"{base_cell['width']}, {base_cell['train_steps']} training steps; {base_cell['sampler']} "
                 f"{base_cell['sample_steps']} steps\nbands: 95% t-intervals over seeds; slope of log ρ vs log n "
                 "on the upper half of n; verdict per THEORY §5", fontsize=10)
    fig.tight_layout()
    return fig


def _fmt(v: Any) -> str:
    return "±inf" if v is None else f"{v:+.3g}"


def replot(json_path: Path) -> dict:
    """Redraw NAME.png from NAME.json: the figure shows exactly the stored numbers."""
    from dsmtheory.results import save_figure_atomic

    if not json_path.exists():
        raise SystemExit(f"error: --replot needs {json_path}; run the experiment first")
    doc = read_json(json_path)
    fig = plot(doc["results"]["schedules"], doc["config"]["settings"], doc["config"]["base_cell"])
    png = save_figure_atomic(fig, json_path.with_suffix(".png"))
    print(f"redrew {png} from {json_path} (computed at commit {doc.get('provenance', {}).get('git_commit')})")
    return {"path": str(json_path), "png": str(png)}


def main(argv: Sequence[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    settings = _settings(args)
    suffix = "_quick" if args.quick else ""
    cells_dir = Path(args.cells_dir) if args.cells_dir else Path("runs") / f"{EXPERIMENT}{suffix}"
    cells = build_cells(settings, args.seed)
    if args.check:
        return check_stored_cell(cells, cells_dir, compute_cell)
    if args.replot:
        return replot(Path(args.out) / f"{EXPERIMENT}{suffix}.json")
    start = time.perf_counter()
    records = run_sweep(cells, compute_cell, cells_dir, group_key=shape_key(("n",)), quiet=args.quiet)
    summary = summarise(cells, records, settings)
    elapsed = time.perf_counter() - start
    fig = plot(summary, settings, cells[0])
    config = {"settings": settings, "base_cell": cells[0], "cells_dir": str(cells_dir),
              "check_rtol": CHECK_RTOL}
    results = {"schedules": summary, "wall_seconds_this_run": elapsed,
               "compute_seconds_all_cells": float(sum(r["compute_seconds"] for r in records))}
    path = write_results(Path(args.out) / f"{EXPERIMENT}{suffix}.json", experiment=EXPERIMENT, config=config,
                         seed=args.seed, results=results, fig=fig)
    for schedule, s in summary.items():
        for name, v in s["verdicts"].items():
            print(f"[{schedule}] {name}: {v['summary']}")
    print(f"cells: {sum(r['compute_seconds'] for r in records):.0f} s of compute; this run {elapsed:.0f} s; "
          f"wrote {path} and {path.with_suffix('.png')}")
    return {"path": str(path), **results}


if __name__ == "__main__":
    from experiments._cli import run as run_cli

    run_cli(main)
