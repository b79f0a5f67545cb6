"""One small style for every dsmtheory figure.

- `figure(nrows, ncols)`: a figure + axes grid at a consistent size and font;
- `COLORS`: one colour per role (learned / oracle / empirical-optimal / truth ...),
  so the same thing looks the same in every figure;
- `line_with_band(ax, x, y, lo, hi, role=...)`: a line with its confidence band;
- `verdict_box(ax, text, ok=...)`: the computed verdict written on a panel;
- `reference_line(ax, y)`: a dashed horizontal reference (e.g. ρ = 1, the truth).
"""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # figures are written to files; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS: dict[str, str] = {
    "learned": "#1f77b4",  # blue
    "oracle": "#2ca02c",  # green: the exact score
    "empirical": "#d62728",  # red: the empirical-optimal score (memorises)
    "truth": "#444444",  # grey: reference values of the true distribution
    "guided": "#9467bd",  # purple
    "other": "#ff7f0e",  # orange
}
# extra colours for series that are not one of the roles (schedules, samplers, ...)
CYCLE: tuple[str, ...] = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")

_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def color(role_or_index: str | int) -> str:
    """The colour of a role ('learned', 'oracle', 'empirical', ...) or of series number i."""
    if isinstance(role_or_index, str):
        if role_or_index not in COLORS:
            raise ValueError(f"unknown colour role {role_or_index!r}; choose one of {sorted(COLORS)}")
        return COLORS[role_or_index]
    return CYCLE[int(role_or_index) % len(CYCLE)]


def figure(nrows: int = 1, ncols: int = 1, *, panel_size: tuple[float, float] = (3.6, 2.9), title: str | None = None,
           squeeze: bool = False, **kwargs):
    """A figure with an nrows × ncols grid of axes (a 2-D array unless squeeze=True)."""
    if nrows < 1 or ncols < 1:
        raise ValueError(f"nrows and ncols must be >= 1, got {nrows}, {ncols}")
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
                                 squeeze=squeeze, constrained_layout=True, **kwargs)
        for ax in np.ravel(axes):
            _style_axes(ax)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig, axes


def _style_axes(ax) -> None:
    ax.grid(True, alpha=_RC["grid.alpha"])
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=_RC["xtick.labelsize"])
    ax.title.set_fontsize(_RC["axes.titlesize"])
    ax.xaxis.label.set_fontsize(_RC["axes.labelsize"])
    ax.yaxis.label.set_fontsize(_RC["axes.labelsize"])


def line_with_band(ax, x: Sequence[float], y: Sequence[float], lo: Sequence[float] | None = None,
                   hi: Sequence[float] | None = None, *, role: str | int = "learned", label: str | None = None,
                   marker: str | None = "o", alpha: float = 0.2, **kwargs):
    """Plot y(x) with a shaded band [lo, hi] (e.g. a 95% CI) in the role's colour."""
    c = color(role)
    (line,) = ax.plot(x, y, color=c, marker=marker, markersize=3.5, lw=1.4, label=label, **kwargs)
    if lo is not None and hi is not None:
        ax.fill_between(x, lo, hi, color=c, alpha=alpha, lw=0)
    return line


def reference_line(ax, y: float, label: str | None = None, *, role: str = "truth", style: str = "--"):
    """A horizontal reference line (e.g. ρ = 1 for the truth)."""
    return ax.axhline(y, color=color(role), ls=style, lw=1.0, label=label, zorder=0.5)


def verdict_box(ax, text: str, *, ok: bool | None = None, loc: str = "upper left"):
    """Write a (computed) verdict on the panel; green if ok, red if not, grey if None."""
    positions = {"upper left": (0.03, 0.97, "left", "top"), "upper right": (0.97, 0.97, "right", "top"),
                 "lower left": (0.03, 0.03, "left", "bottom"), "lower right": (0.97, 0.03, "right", "bottom")}
    if loc not in positions:
        raise ValueError(f"loc must be one of {sorted(positions)}, got {loc!r}")
    x, y, ha, va = positions[loc]
    edge = {True: COLORS["oracle"], False: COLORS["empirical"], None: COLORS["truth"]}[ok]
    return ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, fontsize=7.5,
                   bbox=dict(boxstyle="round,pad=0.3", facecolor="white", edgecolor=edge, alpha=0.9))
