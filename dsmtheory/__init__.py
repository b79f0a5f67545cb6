"""dsmtheory: exact scores and small DSM-trained models for checking whether
diffusion models learn hidden inter-feature rules y = f(x).

The flow (one module per box; see THEORY.md in shared/ for the mathematics):

    families (exact p_t, exact score) ─┐
    schedules (α, σ, f, g², t_min) ────┼─> scores: ExactScore | LearnedScore | GuidedScore
                                       │        └─> samplers ─> samples ─> metrics ─> results
                                       └─> dsm (training, ensembles) ─> params
    diagnostics (Fisher split), guidance (classifiers, filtering), images (synthetic tasks),
    sweep + study + stats (the constant-error check), measure (CLI for external tables).

Submodules are imported on first attribute access, so `import dsmtheory as dt` is
cheap and `dt.families.LinearGaussian` works in IPython.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "checkpoint",
    "diagnostics",
    "distributed",
    "dsm",
    "families",
    "guidance",
    "images",
    "measure",
    "metrics",
    "networks",
    "plotting",
    "results",
    "rules",
    "samplers",
    "schedules",
    "scores",
    "stats",
    "study",
    "sweep",
)

__all__ = list(_SUBMODULES) + ["__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'dsmtheory' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
