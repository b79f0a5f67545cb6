"""Capacity and optimisation (THEORY §5): does the ρ plateau survive a wider network and longer training?

    python -m experiments.capacity --quick     # small grid
    python -m experiments.capacity             # full grid
    python -m experiments.capacity --check     # recompute one stored cell, compare

At a fixed large n, one sweep cell (`dsmtheory.study.compute_cell`) per network
width (at the largest number of training steps) and per number of training steps
(at the largest width): E networks trained by DSM, then the same sampler on the
learned scores, the exact score (oracle) and the empirical-optimal scores; ρ per
seed (THEORY §4).

What is computed, per axis (x = width or training steps), with
`dsmtheory.stats.constant_error_verdict` applied to ρ against x instead of n:

- the log-log slope d log ρ / d log x on the upper half of x (per-seed slopes,
  95% t-interval);
- the excess ρ(learned) − ρ(oracle) on the upper half of x (paired by seed, t-CI),
  and separately at the largest x;
- reading: slope CI ∋ 0 AND excess CI > 0 ⇒ "plateau survives <axis>" (more
  capacity / optimisation does not remove the excess in this range); slope CI < 0
  ⇒ "error still decreasing with <axis>" (a capacity/optimisation effect in this
  range); otherwise the failed conditions are listed. Nothing is assumed.

Modes (sin(2x), x ~ N(0,1), σ_r = 0.1, vp_linear, MLP depth 2, Euler–Maruyama):
- quick: n = 4096, widths {16, 64} at 400 steps, steps {150, 400} at width 64, 3 seeds,
  400 samples × 100 steps (a smoke run);
- full: n = 65536, widths {16, 32, 64, 128, 256} at 16000 steps, steps {1000, 2000,
  4000, 8000, 16000} at width 256, 4 seeds, 2000 samples × 200 steps.
Cells are stored under --cells-dir (default runs/capacity[_quick]).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from dsmtheory.results import write_results
from dsmtheory.stats import constant_error_verdict
from experiments._study_helpers import (CURVE_LABELS, SCALAR_OVERRIDES, apply_overrides, band, base_parser,
                                        cells_dir_for, check_stored_cell, common_cell, curve_summary, fmt_ci, log_axes,
                                        paired_ci, per_seed, run_axes)

EXPERIMENT = "capacity"
RULE = {"rule": "sin", "rule_params": {"k": 2.0}, "sigma_r": 0.1}
MODES = {
    "quick": {"n": 4096, "width_values": [16, 64], "steps_values": [150, 400], "seeds": 3, "width": 64,
              "train_steps": 400, "samples": 400, "sample_steps": 100, "empirical_samples": 200,
              "diagnostic_samples": 1024},
    "full": {"n": 65536, "width_values": [16, 32, 64, 128, 256], "steps_values": [1000, 2000, 4000, 8000, 16000],
             "seeds": 4, "width": 256, "train_steps": 16000, "samples": 2000, "sample_steps": 200,
             "empirical_samples": 500, "diagnostic_samples": 4096},
}
AXIS_LABEL = {"width": "network width (hidden units per layer)", "train_steps": "training steps (optimiser updates)"}


def _settings(args) -> dict:
    mode = "quick" if args.quick else "full"
    s = apply_overrides(MODES[mode], args, SCALAR_OVERRIDES + ("width_values", "steps_values"))
    for key in ("width_values", "steps_values"):
        if len(set(s[key])) < 2:
            raise SystemExit(f"error: --{key.replace('_', '-')} needs at least 2 distinct values")
    # the fixed value of each axis is the largest of the other sweep (the shared cell is computed once)
    s["width"], s["train_steps"] = max(s["width_values"]), max(s["steps_values"])
    s["mode"] = mode
    return s


def build_cells(s: dict, seed: int) -> dict[str, list[dict]]:
    return {
        "width": [common_cell(s, seed, **RULE, width=w) for w in s["width_values"]],
        "train_steps": [common_cell(s, seed, **RULE, train_steps=t) for t in s["steps_values"]],
    }


def _reading(verdict: dict, axis: str) -> str:
    if verdict["constant_error"]:
        return f"plateau survives {axis} (slope CI ∋ 0, excess over oracle > 0)"
    if "error decreasing with n" in verdict["reasons"]:
        return f"error still decreasing with {axis}: capacity/optimisation-limited in this range"
    return "; ".join(r.replace("with n", f"with {axis}") for r in verdict["reasons"])


def summarise(records: dict[str, list[dict]], s: dict) -> dict:
    out = {}
    for axis, recs in records.items():
        x = s["width_values"] if axis == "width" else s["steps_values"]
        rho_l, rho_o = per_seed(recs, "learned", "rho"), per_seed(recs, "oracle", "rho")
        verdict = constant_error_verdict(x, rho_l, rho_o).to_dict()
        out[axis] = {
            "values": list(x),
            "fixed": {"train_steps": s["train_steps"]} if axis == "width" else {"width": s["width"]},
            "rho": curve_summary(recs, "rho"),
            "verdict_vs_axis": verdict,
            "reading": _reading(verdict, axis),
            "excess_at_largest": paired_ci(rho_l[:, -1], rho_o[:, -1]),
            "learned_fisher_excess": [r["result"]["training"].get("fisher_excess") for r in recs],
            "cell_ids": [r["cell_id"] for r in recs],
        }
        if "empirical" in recs[0]["result"]:
            out[axis]["empirical_verdict_vs_axis"] = constant_error_verdict(
                x, per_seed(recs, "empirical", "rho"), rho_o).to_dict()
    both = all(v["verdict_vs_axis"]["constant_error"] for v in out.values())
    out_all = {"axes": out, "plateau_survives_both": both}
    return out_all


def plot(summary: dict, s: dict):
    from dsmtheory.plotting import figure, reference_line, verdict_box

    fig, axes = figure(1, 2, panel_size=(5.6, 4.6),
                       title=f"Capacity / optimisation ({s['mode']} mode): ρ at n = {s['n']}, sin(2x), σ_r = "
                             f"{RULE['sigma_r']}; {s['seeds']} seeds, 95% t-bands")
    for ax, (axis, sm) in zip(axes[0], summary["axes"].items()):
        x = np.array(sm["values"], dtype=float)
        floor = 0.3 * min(min(c["mean"]) for c in sm["rho"].values())
        for curve, c in sm["rho"].items():
            band(ax, x, c, curve, CURVE_LABELS[curve], floor=floor)
        reference_line(ax, 1.0, "truth (ρ = 1)")
        log_axes(ax, x, sm["rho"], headroom=25.0, base=2)
        ax.set_xlabel(AXIS_LABEL[axis] + (f" at {s['train_steps']} steps" if axis == "width" else f" at width {s['width']}"))
        ax.set_ylabel("rule error ratio ρ = RMS residual / σ_r")
        ax.set_title(f"ρ vs {axis.replace('_', ' ')}")
        v = sm["verdict_vs_axis"]
        sl = v["slope"]
        text = (f"learned: {sm['reading']}\n"
                f"slope d log ρ/d log {axis}: {sl['slope']:+.3f} [{_f(sl['lo'])}, {_f(sl['hi'])}]\n"
                f"excess over oracle (upper half): {fmt_ci(v['excess'])}\n"
                f"excess at largest {axis}: {fmt_ci(sm['excess_at_largest'])}")
        verdict_box(ax, text, ok=None, loc="upper right")
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.76), fontsize=7)
    return fig


def _f(v) -> str:
    return "±inf" if v is None else f"{v:+.3f}"


def main(argv: Sequence[str] | None = None) -> dict:
    p = base_parser("python -m experiments.capacity", __doc__.split("\n\n")[0])
    p.add_argument("--width-values", nargs="+", type=int, default=None)
    p.add_argument("--steps-values", nargs="+", type=int, default=None)
    args = p.parse_args(argv)
    s = _settings(args)
    cells_dir = cells_dir_for(args, EXPERIMENT)
    cells = build_cells(s, args.seed)
    if args.check:
        return check_stored_cell(cells["width"], cells_dir)
    start = time.perf_counter()
    records = run_axes(cells, cells_dir, quiet=args.quiet)
    summary = summarise(records, s)
    elapsed = time.perf_counter() - start
    fig = plot(summary, s)
    suffix = "_quick" if args.quick else ""
    config = {"settings": s, "base_cell": cells["width"][0], "cells_dir": str(cells_dir),
              "measured": "ρ per seed of learned, oracle and empirical-optimal samples against network width "
                          "(at the largest step count) and training steps (at the largest width), fixed n; "
                          "slope of log ρ vs log axis on the upper half and excess over oracle, 95% t-CIs"}
    results = {**summary, "wall_seconds_this_run": elapsed,
               "compute_seconds_all_cells": float(sum(r["compute_seconds"] for rs in records.values() for r in rs))}
    path = write_results(Path(args.out) / f"{EXPERIMENT}{suffix}.json", experiment=EXPERIMENT, config=config,
                         seed=args.seed, results=results, fig=fig)
    for axis, sm in summary["axes"].items():
        print(f"[{axis}] learned: {sm['verdict_vs_axis']['summary']} -> {sm['reading']}; "
              f"excess at largest {fmt_ci(sm['excess_at_largest'])}")
    print(f"plateau survives both: {summary['plateau_survives_both']}; this run {elapsed:.0f} s; wrote {path}")
    return {"path": str(path), **results}


if __name__ == "__main__":
    from experiments._cli import run as run_cli

    run_cli(main)
