"""Shared command-line entry for the experiments.

`run(main)` calls `main(sys.argv[1:])` and turns a bad-input error (ValueError or
TypeError raised by the library's argument checks, including a diverging training
run, whose message names the step and config) into one line on stderr and exit
code 2, instead of a traceback from deep inside the library. A `--check` that
disagrees with the stored JSON exits 1. Set DSMTHEORY_TRACEBACK=1 to see the full
traceback while debugging.
"""

from __future__ import annotations

import os
import sys
from typing import Callable


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
