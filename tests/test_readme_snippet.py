"""The README's interactive snippet (docs/interactive_snippet.py, pasted verbatim into
the README) runs and prints what it promises."""

import contextlib
import io
import re
from pathlib import Path

SNIPPET = Path(__file__).resolve().parents[1] / "docs" / "interactive_snippet.py"


def test_interactive_snippet_runs_and_prints_rho():
    source = SNIPPET.read_text()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, str(SNIPPET), "exec"), {"__name__": "__snippet__"})
    text = out.getvalue()
    rhos = [float(v) for v in re.findall(r"rho = ([0-9.]+)", text)]
    assert len(rhos) == 4, text
    # a trained linear-Gaussian model: finite, positive ρ of order one or a few (the truth has ρ = 1)
    assert all(0.5 < r < 20 for r in rhos), text
    assert "excess loss L - L* per seed" in text
