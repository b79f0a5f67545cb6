"""Write the README's results table from the experiments' JSON files.

    python scripts/results_table.py [--figures figures] [--out docs/results_table.md]

Reads every figures/*.json written by `dsmtheory.results.write_results` (known
experiments: constant_error, coarse_vs_fine, capacity, loss_share, score_field,
oracle_check, guidance, classifier_signal, filtering, synthetic_tasks; any other
JSON is read the same way) and writes one markdown table with one row per
computed verdict / curve, with the numbers the verdict came from:

- any dict in the results holding a string "verdict" (e.g. the THEORY §5
  verdicts of constant_error, capacity's verdict against width / steps): its
  slope with CI and its excess over the oracle with CI;
- coarse_vs_fine: per cell the coarse and fine comparisons (learned − oracle, CI);
- loss_share: per cell the rule-normal share of the DSM excess (CI) against 1/D;
- score_field: per noise level the relative Fisher divergence and its rule-normal share.

Files without any of these are listed with their top-level result keys, so the
table says what it found and what it could not summarise; unreadable files are
listed with the error. The mode is taken from the JSON's config ("quick"/"full";
else from a `_quick` file-name suffix). Nothing is recomputed: every number is
copied from the JSON. The table is printed and written to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

KNOWN = ("constant_error", "coarse_vs_fine", "capacity", "loss_share", "score_field", "oracle_check", "guidance",
         "classifier_signal", "filtering", "synthetic_tasks")
HEADER = ("| experiment | mode | where | verdict / quantity | slope [95% CI] | excess over oracle [95% CI] | notes |\n"
          "|---|---|---|---|---|---|---|")


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "±inf"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:+.{digits}g}" if math.isfinite(v) else str(v)
    return str(v)


def _ci(d: Any, value_key: str = "mean") -> str:
    """'m [lo, hi]' of a dict with a value and lo/hi, '' when absent."""
    if not isinstance(d, dict) or value_key not in d:
        return ""
    return f"{_num(d[value_key])} [{_num(d.get('lo'))}, {_num(d.get('hi'))}]"


def mode_of(doc: dict, path: Path) -> str:
    cfg = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    for where in (cfg, cfg.get("settings") if isinstance(cfg.get("settings"), dict) else {}):
        m = where.get("mode")
        if isinstance(m, str):
            return m
        if isinstance(where.get("quick"), bool):
            return "quick" if where["quick"] else "full"
    return "quick" if path.stem.endswith("_quick") else "full (assumed: no mode in config)"


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list) and len(node) <= 64:
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def verdict_rows(results: Any) -> list[dict]:
    rows = []
    for where, node in _walk(results):
        if isinstance(node.get("verdict"), str):
            notes = "; ".join(node.get("reasons", [])) if isinstance(node.get("reasons"), list) else ""
            parts = where.split(".")
            if "axes" in parts[:-1]:  # a verdict against another axis than n (e.g. capacity: width, steps)
                notes = notes.replace("with n", f"with {parts[parts.index('axes') + 1]}")
            rows.append({"where": where, "verdict": node["verdict"],
                         "slope": _ci(node.get("slope"), "slope"), "excess": _ci(node.get("excess")), "notes": notes})
    return rows


def coarse_fine_rows(results: dict) -> list[dict]:
    rows = []
    for axis, sm in (results.get("axes") or {}).items():
        if not isinstance(sm, dict) or "comparisons" not in sm:
            continue
        for v, c in zip(sm.get("values", []), sm["comparisons"]):
            rows.append({"where": f"{axis} = {v:g}", "verdict": f"{c['coarse_verdict']}; {c['fine_verdict']}",
                         "slope": "", "excess": f"Δcoarse/σ_r {_ci(c['coarse_ratio_excess'])}; "
                                                f"Δρ_fine {_ci(c['rho_fine_excess'])}",
                         "notes": "claim holds" if c.get("claim_holds") else "claim does not hold"})
    return rows


def capacity_rows(results: dict) -> list[dict]:
    rows = []
    for axis, sm in (results.get("axes") or {}).items():
        if isinstance(sm, dict) and "reading" in sm:
            rows.append({"where": f"{axis} (excess at largest)", "verdict": sm["reading"], "slope": "",
                         "excess": _ci(sm.get("excess_at_largest")), "notes": ""})
    if "plateau_survives_both" in results:
        rows.append({"where": "both axes", "verdict": f"plateau survives both: {results['plateau_survives_both']}",
                     "slope": "", "excess": "", "notes": ""})
    return rows


def loss_share_rows(results: dict) -> list[dict]:
    rows = []
    for axis, sm in (results.get("axes") or {}).items():
        if not isinstance(sm, dict) or "cells" not in sm:
            continue
        for v, c in zip(sm.get("values", []), sm["cells"]):
            rows.append({"where": f"{axis} = {v:g}", "verdict": f"rule-normal share {_ci(c.get('normal_share'))}",
                         "slope": "", "excess": "",
                         "notes": f"isotropic 1/D = {_num(c.get('isotropic_share'))}; normal excess / L* = "
                                  f"{_ci(c.get('normal_excess_over_loss_star'))}"})
    return rows


def score_field_rows(results: dict) -> list[dict]:
    rows = []
    for f in results.get("fields", []) if isinstance(results.get("fields"), list) else []:
        rows.append({"where": f"t = {f['t']:.3g} (σ/α = {f['noise_to_signal']:.2g})",
                     "verdict": f"F(t)/E‖∇log p_t‖² = {_num(f['relative_fisher'])}", "slope": "", "excess": "",
                     "notes": f"rule-normal share {_num(f['normal_share'])}"})
    for name, m in (results.get("sample_metrics") or {}).items():
        rows.append({"where": f"{name} samples", "verdict": f"ρ = {_num(m.get('rho'))}", "slope": "", "excess": "",
                     "notes": f"ρ_fine {_num(m.get('rho_fine'))}, coarse/σ_r {_num(m.get('coarse_ratio'))}"})
    return rows


SPECIFIC = {"coarse_vs_fine": coarse_fine_rows, "capacity": capacity_rows, "loss_share": loss_share_rows,
            "score_field": score_field_rows}


def rows_for(path: Path) -> tuple[str, str, list[dict], str | None]:
    """(experiment, mode, rows, problem) for one JSON file."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return path.stem, "?", [], f"unreadable: {err}"
    if not isinstance(doc, dict) or "results" not in doc:
        return path.stem, "?", [], "not a write_results file (no 'results')"
    experiment = str(doc.get("experiment", path.stem))
    mode = mode_of(doc, path)
    results = doc["results"]
    rows = []
    if experiment in SPECIFIC and isinstance(results, dict):
        try:
            rows += SPECIFIC[experiment](results)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            rows.append({"where": "", "verdict": f"(unexpected structure: {type(err).__name__}: {err})",
                         "slope": "", "excess": "", "notes": ""})
    rows = verdict_rows(results) + rows
    problem = None
    if not rows:
        keys = sorted(results) if isinstance(results, dict) else [type(results).__name__]
        problem = "no verdicts found; result keys: " + ", ".join(keys[:12])
        scalars = _top_scalars(results)
        if scalars:
            problem += "; top-level values: " + ", ".join(scalars)
    return experiment, mode, rows, problem


def _top_scalars(results: Any, limit: int = 8) -> list[str]:
    """Booleans, strings and numbers one or two levels down (e.g. 'signal_vanishes: True')."""
    out = []
    for where, node in _walk(results):
        if where.count(".") > 1 or not isinstance(node, dict):
            continue
        for k, v in node.items():
            if isinstance(v, (bool, str)) or (isinstance(v, (int, float)) and "second" not in k):
                out.append(f"{where + '.' if where else ''}{k}: {_num(v) if not isinstance(v, (bool, str)) else v}")
    return out[:limit]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def build_table(figures: Path) -> tuple[str, dict]:
    files = sorted(p for p in figures.glob("*.json") if not p.name.startswith("."))
    found: dict[str, list[str]] = {"files": [p.name for p in files], "no_verdicts": [], "missing_known": []}
    lines = [HEADER]
    seen = set()
    for path in files:
        experiment, mode, rows, problem = rows_for(path)
        seen.add(experiment)
        if problem:
            found["no_verdicts"].append(f"{path.name}: {problem}")
            lines.append(f"| {_cell(experiment)} | {_cell(mode)} | {_cell(path.name)} | {_cell(problem)} |  |  |  |")
        for r in rows:
            lines.append("| " + " | ".join(_cell(x) for x in (experiment, mode, r["where"], r["verdict"], r["slope"],
                                                                r["excess"], r["notes"])) + " |")
    found["missing_known"] = [k for k in KNOWN if k not in seen]
    intro = [f"Generated by `python scripts/results_table.py` from {len(files)} file(s) in `{figures}/`; "
             "every number is copied from the experiments' JSON (95% Student-t CIs over seeds)."]
    if found["missing_known"]:
        intro.append("Not run yet (no JSON): " + ", ".join(found["missing_known"]) + ".")
    if not files:
        intro.append("No results found.")
    return "\n".join(intro) + "\n\n" + "\n".join(lines) + "\n", found


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python scripts/results_table.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--figures", default="figures", help="directory of the experiments' JSON (default figures/)")
    p.add_argument("--out", default="docs/results_table.md", help="markdown file to write")
    args = p.parse_args(argv)
    figures = Path(args.figures)
    if not figures.is_dir():
        raise SystemExit(f"error: --figures {figures} is not a directory")
    table, found = build_table(figures)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(table)
    tmp.replace(out)
    print(table)
    print(f"wrote {out}", file=sys.stderr)
    return {"path": str(out), "table": table, **found}


if __name__ == "__main__":
    main()
