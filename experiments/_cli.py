"""Shared command-line entry for the experiments.

`experiment_parser(...)` builds the argument parser with the flags every experiment
takes (--quick, --out, --seed, --check); `with_overrides(settings, {...})` applies the
size flags a user gave (None = not given) to a mode's settings.

`run(main)` calls `main(sys.argv[1:])` and turns a bad-input error (ValueError or
TypeError raised by the library's argument checks, including a diverging training
run, whose message names the step and config) into one line on stderr and exit
code 2, instead of a traceback from deep inside the library. A `--check` that
disagrees with the stored JSON exits 1. Set DSMTHEORY_TRACEBACK=1 to see the full
traceback while debugging.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Mapping

from dsmtheory.distributed import add_cpu_devices_flag


def experiment_parser(prog: str, description: str, *, quick_help: str, check_help: str,
                      seed_help: str | None = None) -> argparse.ArgumentParser:
    """A parser with --quick, --out (default figures/), --seed (default 0), --check and
    --cpu-devices (default: one device)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--out", default="figures", help="directory of the PNG and JSON (default figures/)")
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--check", action="store_true", help=check_help)
    add_cpu_devices_flag(p, help_suffix="; the numbers agree up to float rounding")
    return p


def with_overrides(settings: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict:
    """A copy of `settings` with every override that is not None."""
    out = dict(settings)
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


def run(main: Callable) -> None:
    try:
        out = main(sys.argv[1:])
    except (ValueError, TypeError) as err:
        if os.environ.get("DSMTHEORY_TRACEBACK"):
            raise
        message = " ".join(str(err).split())
        print(f"error: {type(err).__name__}: {message}", file=sys.stderr)
        sys.exit(2)
    check = out.get("check") if isinstance(out, dict) else None
    if isinstance(check, dict) and not check.get("agree", True):
        sys.exit(1)
    sys.exit(0)
