"""Helpers shared by the study experiments built on `dsmtheory.study` cells
(coarse_vs_fine, capacity, loss_share): the common CLI flags, size overrides, running
and checking cells through the sweep runner, per-seed summaries and plotting helpers.
Experiments stay thin: they pick their slice of the grid and compose these."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dsmtheory.stats import mean_ci
from dsmtheory.study import CURVES, compute_cell, make_cell
from dsmtheory.sweep import run_sweep, shape_key
from experiments._cli import experiment_parser

CURVE_LABELS = {"learned": "learned (DSM network)", "oracle": "oracle (exact score)",
                "empirical": "empirical-optimal"}
CHECK_RTOL = 1e-5  # --check: relative tolerance of a recomputed cell against its stored JSON
SCALAR_OVERRIDES = ("seeds", "width", "train_steps", "samples", "sample_steps", "empirical_samples",
                    "diagnostic_samples", "n")


def study_parser(prog: str, description: str, cells_dir_default: str,
                 quick_help: str = "small grid (a smoke run of the pipeline)") -> argparse.ArgumentParser:
    """The parser of an experiment made of `dsmtheory.study` cells: the flags every experiment
    takes, --cells-dir, the per-cell size overrides (None = the mode's value) and --quiet."""
    p = experiment_parser(prog, description, quick_help=quick_help, seed_help="base seed of every cell",
                          check_help="recompute one stored cell and compare with its JSON (exit 1 on mismatch)")
    p.add_argument("--cells-dir", default=None, help=f"per-cell JSON directory (default {cells_dir_default})")
    p.add_argument("--seeds", type=int, default=None, help="seeds per cell (vmapped, >= 2 for CIs)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--samples", type=int, default=None, help="generated samples per seed")
    p.add_argument("--sample-steps", type=int, default=None)
    p.add_argument("--empirical-samples", type=int, default=None,
                   help="samples per seed for the empirical-optimal score (its cost grows with n)")
    p.add_argument("--diagnostic-samples", type=int, default=None,
                   help="Monte Carlo draws of the score-level rule-normal split")
    p.add_argument("--quiet", action="store_true")
    return p


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags every issue-4 experiment takes (COMMON conventions) plus size overrides."""
    p = study_parser(prog, description, "runs/NAME[_quick]")
    p.add_argument("--n", type=int, default=None, help="training-set size of every cell")
    p.add_argument("--no-empirical", action="store_true",
                   help="skip the empirical-optimal baseline (learned vs oracle only; for smoke tests)")
    return p


def apply_overrides(settings: dict, args, keys: Sequence[str]) -> dict:
    """Copy of `settings` with every non-None `args.<key>` (list flags become sorted lists)."""
    s = dict(settings)
    for key in keys:
        value = getattr(args, key, None)
        if value is not None:
            s[key] = sorted(value) if isinstance(value, list) else value
    s["empirical"] = not getattr(args, "no_empirical", False)
    for key in ("n", "width", "train_steps", "samples", "sample_steps", "empirical_samples", "grid"):
        value = s.get(key)
        if isinstance(value, int) and value < (2 if key == "grid" else 1):
            flag = "--" + key.replace("_", "-")
            raise SystemExit(f"error: {flag} must be >= {2 if key == 'grid' else 1}, got {value}")
    if s.get("seeds", 2) < 2:
        raise SystemExit("error: --seeds must be >= 2 (CIs over seeds)")
    return s


def cells_dir_for(args, experiment: str) -> Path:
    return Path(args.cells_dir) if args.cells_dir else Path("runs") / (experiment + ("_quick" if args.quick else ""))


def common_cell(settings: dict, seed: int, **overrides: Any) -> dict:
    """`study.make_cell` with the mode's sizes (seeds, width, steps, samples) and `overrides`."""
    kw = dict(n=settings["n"], n_max=settings["n"], n_seeds=settings["seeds"], seed=seed, width=settings["width"],
              train_steps=settings["train_steps"], n_samples=settings["samples"],
              sample_steps=settings["sample_steps"], n_samples_empirical=settings["empirical_samples"],
              diagnostic_samples=settings["diagnostic_samples"], empirical=settings.get("empirical", True))
    kw.update(overrides)
    return make_cell(**kw)


def run_cells(cells: list[dict], cells_dir: Path, quiet: bool = False,
              compute: Callable[[dict], dict] = compute_cell) -> list[dict]:
    """All cells through `dsmtheory.sweep.run_sweep` (atomic per-cell JSON, resumable); cells
    that differ only in n share a group (one compiled program)."""
    return run_sweep(cells, compute, cells_dir, group_key=shape_key(("n",)), quiet=quiet)


def run_axes(cells: dict[str, list[dict]], cells_dir: Path, quiet: bool = False,
             compute: Callable[[dict], dict] = compute_cell) -> dict[str, list[dict]]:
    """The cells of every axis ({axis: cells}) as ONE sweep (shared compilations and cache),
    returned as {axis: records} in the same order."""
    recs = run_cells([c for axis_cells in cells.values() for c in axis_cells], cells_dir, quiet=quiet,
                     compute=compute)
    out, start = {}, 0
    for axis, axis_cells in cells.items():
        out[axis] = recs[start:start + len(axis_cells)]
        start += len(axis_cells)
    return out


def _compare(a: Any, b: Any, path: str = "$") -> list[str]:
    """Differences between two JSON trees (numbers compared with relative tolerance CHECK_RTOL)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys differ ({sorted(set(a) ^ set(b))})"]
        return [d for k in a for d in _compare(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _compare(x, y, f"{path}[{i}]")]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if not math.isclose(a, b, rel_tol=CHECK_RTOL, abs_tol=1e-9):
            return [f"{path}: stored {b!r}, recomputed {a!r}"]
        return []
    return [] if a == b else [f"{path}: stored {b!r}, recomputed {a!r}"]


def check_stored_cell(cells: list[dict], cells_dir: Path, compute: Callable[[dict], dict] = compute_cell) -> dict:
    """Recompute the first (for a sweep over n, the cheapest) cell, the oracle samples
    included, and compare it with its stored JSON (relative tolerance CHECK_RTOL); prints
    the outcome."""
    from dsmtheory.results import read_json
    from dsmtheory.study import clear_oracle_memo
    from dsmtheory.sweep import cell_id, cell_path

    cell = cells[0]
    path = cell_path(cells_dir, cell)
    if not path.exists():
        raise SystemExit(f"error: --check needs the stored cell {path}; run the experiment first")
    stored = read_json(path)
    if stored.get("status") != "ok":
        raise SystemExit(f"error: stored cell {path} is a failure record: {stored.get('error')}")
    clear_oracle_memo()
    cid = cell_id(cell)
    return report_check(compute(dict(cell)), stored["result"], f": cell {cid} recomputed vs stored", cell_id=cid)


def report_check(fresh: Any, stored: Any, what: str = "", **ids: Any) -> dict:
    """{"check": ...} for --check: the recomputed numbers `fresh` against the `stored` JSON tree
    (relative tolerance CHECK_RTOL), with the outcome printed; `ids` lead the result dict."""
    from dsmtheory.results import to_jsonable

    diffs = _compare(to_jsonable(fresh), stored)
    result = {**ids, "agree": not diffs, "n_differences": len(diffs), "differences": diffs[:20], "rtol": CHECK_RTOL}
    print(f"[check] {'AGREE' if result['agree'] else 'MISMATCH'}{what} "
          f"({result['n_differences']} differences at rtol {CHECK_RTOL:g})")
    for line in result["differences"]:
        print("   ", line)
    return {"check": result}


def per_seed(records: list[dict], curve: str, metric: str) -> np.ndarray:
    """metric of `curve` per seed for each record: [seeds, cells]."""
    return np.array([r["result"][curve][metric] for r in records], dtype=np.float64).T


def paired_ci(a: np.ndarray, b: np.ndarray | None = None) -> dict:
    """Mean and 95% t-CI over seeds of a [seeds] (or of a − b, paired by seed)."""
    d = np.asarray(a, np.float64) - (0.0 if b is None else np.asarray(b, np.float64))
    return mean_ci(d).to_dict()


def curve_summary(records: list[dict], metric: str) -> dict:
    """Per curve present in the records: per-seed values [seeds, cells], mean and CI per cell."""
    out = {}
    for curve in CURVES:
        if curve not in records[0]["result"]:
            continue
        v = per_seed(records, curve, metric)
        cis = [mean_ci(v[:, j]) for j in range(v.shape[1])]
        out[curve] = {"per_seed": v.tolist(), "mean": [c.mean for c in cis], "ci_lo": [c.lo for c in cis],
                      "ci_hi": [c.hi for c in cis]}
    return out


def band(ax, x, curve: dict, role: str, label: str, floor: float | None = None) -> None:
    """Mean line with its CI band (lower end clipped at `floor` on log axes)."""
    from dsmtheory.plotting import line_with_band

    lo = np.array(curve["ci_lo"])
    if floor is not None:
        lo = np.maximum(lo, floor)
    line_with_band(ax, x, curve["mean"], lo, curve["ci_hi"], role=role, label=label)


def log_axes(ax, x, curves: dict, headroom: float = 12.0, base: float = 10) -> None:
    """Log-log axes with ticks at the swept values and room above the curves for a text box."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log", base=base)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(list(x)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{v:g}" for v in x])
    top = max(max(np.max(c["ci_hi"]), np.max(c["mean"])) for c in curves.values())
    bottom = min(np.min(c["mean"]) for c in curves.values())
    ax.set_ylim(min(bottom * 0.5, 0.5), top * headroom)


def fmt_ci(d: dict, digits: int = 3) -> str:
    return f"{d['mean']:+.{digits}g} [{d['lo']:+.{digits}g}, {d['hi']:+.{digits}g}]"


# =========================================================================== this experiment
