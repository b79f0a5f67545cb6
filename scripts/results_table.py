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
- score_field: per noise level the relative Fisher divergence and its rule-normal share;
- oracle_check: per family, the range over schedules × samplers of ρ with the exact
  score at the most accurate cell (most steps, smallest steps floor, denoised), which
  schedule/sampler gave the lowest and highest, ρ of fresh truth samples, the raw ρ at
  the largest noise floor and (empirical measure) the memorisation rate;
- guidance: per rule, ρ of the unguided base and of the exact score (the oracle floor),
  then per classifier (exact, learned) the w with ρ closest to 1, the lowest ρ and its
  w, the reduction over w = 0 and ρ / clip fraction at the largest w;
- classifier_signal: per kind of negative, the first t (and σ/α, σ/α/δ) where the exact
  AUC is at chance, and both classifiers' AUC at the smallest t; the null sd;
- filtering: per rule, ρ of the generated samples and of the truth before filtering,
  then per detector the acceptance rate and ρ / coarse ratio after filtering;
- synthetic_tasks: per task, ρ / coarse ratio / violation rate of the generated images
  at the largest n (and at the other n), of the training images, and the settings.

`±` values are Monte Carlo standard errors as stored (`rho_se`); bracketed ones are
95% CIs. Files without any of these are listed with their top-level result keys, so
the table says what it found and what it could not summarise; unreadable files are
listed with the error. The mode is taken from the JSON's config ("quick"/"full"; else
from a `_quick` file-name suffix, which is also used when the config's mode is the
dict of the mode's settings, as synthetic_tasks writes it). Nothing is recomputed:
every number is copied from the JSON (ranges are min–max of stored numbers). The
table is printed and written to --out.
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
    """"quick"/"full" from the config (its own or its "settings"), else from the file name.

    Files named NAME.json may hold quick results (oracle_check, guidance, classifier_signal
    and filtering write NAME.json in both modes and record the mode as a string), so the
    config wins over the name. synthetic_tasks stores the mode's settings dict under
    "mode" and marks a quick run by the file name NAME_quick.json, so the name decides there.
    """
    cfg = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    for where in (cfg, cfg.get("settings") if isinstance(cfg.get("settings"), dict) else {}):
        m = where.get("mode")
        if isinstance(m, str):
            return m
        if isinstance(where.get("quick"), bool):
            return "quick" if where["quick"] else "full"
    quick = path.stem.endswith("_quick")
    if isinstance(cfg.get("mode"), dict):  # settings without a name: the writer encodes the mode in the file name
        return "quick" if quick else "full"
    return "quick" if quick else "full (assumed: no mode in config)"


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


def coarse_fine_rows(results: dict, _cfg: dict) -> list[dict]:
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


def capacity_rows(results: dict, _cfg: dict) -> list[dict]:
    rows = []
    for axis, sm in (results.get("axes") or {}).items():
        if isinstance(sm, dict) and "reading" in sm:
            rows.append({"where": f"{axis} (excess at largest)", "verdict": sm["reading"], "slope": "",
                         "excess": _ci(sm.get("excess_at_largest")), "notes": ""})
    if "plateau_survives_both" in results:
        rows.append({"where": "both axes", "verdict": f"plateau survives both: {results['plateau_survives_both']}",
                     "slope": "", "excess": "", "notes": ""})
    return rows


def loss_share_rows(results: dict, _cfg: dict) -> list[dict]:
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


def score_field_rows(results: dict, _cfg: dict) -> list[dict]:
    rows = []
    for f in results.get("fields", []) if isinstance(results.get("fields"), list) else []:
        rows.append({"where": f"t = {f['t']:.3g} (σ/α = {f['noise_to_signal']:.2g})",
                     "verdict": f"F(t)/E‖∇log p_t‖² = {_num(f['relative_fisher'])}", "slope": "", "excess": "",
                     "notes": f"rule-normal share {_num(f['normal_share'])}"})
    for name, m in (results.get("sample_metrics") or {}).items():
        rows.append({"where": f"{name} samples", "verdict": f"ρ = {_num(m.get('rho'))}", "slope": "", "excess": "",
                     "notes": f"ρ_fine {_num(m.get('rho_fine'))}, coarse/σ_r {_num(m.get('coarse_ratio'))}"})
    return rows


# ----------------------------------------------------------------------------- THEORY §4/§6/§7 experiments
def _v(v: Any, digits: int = 3) -> str:
    """An unsigned value (ρ, AUC, a rate; counts and whole numbers in full); 'n/a' for a missing one."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if not math.isfinite(v):
            return str(v)
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e9 else f"{v:.{digits}g}"
    return "n/a" if v is None else str(v)


def _pm(v: Any, se: Any) -> str:
    """'v ± se' (se: the stored Monte Carlo standard error), 'v' without one."""
    return f"{_v(v)} ± {_v(se, 2)}" if isinstance(se, (int, float)) else _v(v)


def _span(values: list) -> str:
    """'lo–hi' of the finite stored numbers (one number when they agree), 'n/a' when none."""
    xs = [x for x in values if isinstance(x, (int, float)) and math.isfinite(x)]
    if not xs:
        return "n/a"
    lo, hi = _v(min(xs)), _v(max(xs))
    return lo if lo == hi else f"{lo}–{hi}"


def _row(where: str, verdict: str, notes: str = "", slope: str = "", excess: str = "") -> dict:
    return {"where": where, "verdict": verdict, "slope": slope, "excess": excess, "notes": notes}


def oracle_check_rows(results: dict, cfg: dict) -> list[dict]:
    """Per family: ρ with the EXACT score at the most accurate cell, range over schedules × samplers."""
    steps, floors = cfg.get("steps"), cfg.get("floors")
    i_steps = steps.index(max(steps)) if isinstance(steps, list) and steps else -1
    i_raw = floors.index(max(floors)) if isinstance(floors, list) and floors else -1
    cell = (f"{max(steps)} steps" if i_steps >= 0 else "most steps") + (
        f", σ/α = {cfg['steps_floor']:g}·σ_r" if isinstance(cfg.get("steps_floor"), (int, float)) else "")
    raw_at = f"σ/α = {max(floors):g}·σ_r" if i_raw >= 0 else "the largest floor"
    rows = []
    for fname, fam in (results.get("families") or {}).items():
        if not isinstance(fam, dict) or not isinstance(fam.get("schedules"), dict):
            continue
        cells = [{"name": f"{sname}/{method}", "rho": m["rho_denoised_vs_steps"][i_steps],
                  "raw": m["rho_raw_vs_floor"][i_raw], "metrics": m.get("metrics_best_cell") or {},
                  "nonfinite": any(m.get("nonfinite_samples_per_config") or [])}
                 for sname, sch in fam["schedules"].items() for method, m in (sch.get("samplers") or {}).items()]
        if not cells:
            continue
        finite = [c for c in cells if isinstance(c["rho"], (int, float)) and math.isfinite(c["rho"])]
        notes = []
        if len(finite) > 1:
            notes.append(f"lowest {min(finite, key=lambda c: c['rho'])['name']}, "
                         f"highest {max(finite, key=lambda c: c['rho'])['name']}")
        notes.append(f"MC se {_span([c['metrics'].get('rho_se') for c in cells])}")
        truth = next((c["metrics"]["rho_truth_mc"] for c in cells if "rho_truth_mc" in c["metrics"]), None)
        if truth is not None:
            notes.append(f"fresh truth samples ρ = {_v(truth)}")
        notes.append(f"raw ρ (no denoising step) at {raw_at}: {_span([c['raw'] for c in cells])}")
        memo = [c["metrics"].get("memorisation_rate") for c in cells]
        if any(isinstance(x, (int, float)) for x in memo):
            mt = next((c["metrics"]["memorisation_rate_truth"] for c in cells
                       if "memorisation_rate_truth" in c["metrics"]), None)
            notes.append(f"memorisation rate (share within {cfg.get('memorisation_threshold', 'the threshold')} of a "
                         f"training point): {_span(memo)}; "
                         f"fresh truth samples: {_v(mt)}")
        bad = [c["name"] for c in cells if c["nonfinite"]]
        if bad:
            notes.append("non-finite samples in " + ", ".join(bad))
        rows.append(_row(str(fam.get("label", fname)),
                         f"ρ with the exact score ({cell}, denoised): {_span([c['rho'] for c in cells])} "
                         f"over {len(cells)} schedule × sampler cells", "; ".join(notes)))
    return rows


def guidance_rows(results: dict, cfg: dict) -> list[dict]:
    """Per rule: unguided base and oracle, then per classifier the best w and the breakdown at the largest w."""
    base = cfg.get("base") if isinstance(cfg.get("base"), dict) else {}
    base_text = (f"{base['kind']}, σ_r × {_v(base['base_inflation'])}" if "kind" in base and "base_inflation" in base
                 else "")
    rows = []
    for rule, r in results.items():
        if not isinstance(r, dict) or not all(isinstance(r.get(c), dict) for c in ("exact", "learned")):
            continue
        where = f"{rule} (σ_r = {_v(r.get('sigma_r'))})"
        w0 = r["exact"]["cells"][0]
        rows.append(_row(f"{where}, w = 0",
                         f"base ρ = {_pm(w0['rho'], w0.get('rho_se'))}; exact score (oracle floor) ρ = "
                         f"{_pm(r.get('oracle_rho'), r.get('oracle_rho_se'))}",
                         f"base: {base_text}" if base_text else ""))
        for cname in ("exact", "learned"):
            sm, last = r[cname]["summary"], max(r[cname]["cells"], key=lambda c: c["w"])
            measurable = "measurable" if sm.get("measurably_reduced") else "not measurable"
            notes = [f"reduction of ρ over w = 0: {_pm(sm['rho_reduction'], sm.get('rho_reduction_se'))} "
                     f"(z = {_v(sm.get('z_score'))}, {measurable})",
                     f"largest w = {_v(last['w'])}: ρ = {_pm(last['rho'], last.get('rho_se'))}, clip fraction "
                     f"{_v(last.get('clip_fraction'))}, violation rate {_v(last.get('violation_rate'))}"]
            if cname == "learned" and "classifier_final_loss" in r:
                notes.append(f"classifier final loss {_v(r['classifier_final_loss'])}")
            if sm["w_closest_to_truth"] == sm["best_w"]:
                verdict = f"best ρ = {_v(sm['rho_best'])} at w = {_v(sm['best_w'])} (lowest, and closest to 1)"
            else:
                verdict = (f"ρ closest to 1: {_v(sm['rho_closest_to_truth'])} at w = {_v(sm['w_closest_to_truth'])}; "
                           f"lowest ρ {_v(sm['rho_best'])} at w = {_v(sm['best_w'])}")
            if isinstance(sm["rho_best"], (int, float)) and sm["rho_best"] < 1:
                verdict += " (ρ < 1: over-sharpened, not an improvement)"
            rows.append(_row(f"{where}, {cname} classifier", verdict, "; ".join(notes)))
    return rows


def classifier_signal_rows(results: dict, cfg: dict) -> list[dict]:
    """Per kind of negative: where the exact classifier's AUC reaches chance; AUCs at the smallest t."""
    vanish, t = results.get("signal_vanishes"), results.get("t")
    if not isinstance(vanish, dict) or not isinstance(t, list) or not t:
        return []
    neg = cfg.get("negatives") if isinstance(cfg.get("negatives"), dict) else {}
    trained = [float(s) for s in neg.get("fine_scales", [])]
    rows = []
    for kind, v in vanish.items():
        base, _, scale = kind.partition(":")
        where = f"{kind} negatives"
        if base == "fine" and scale:
            where = f"fine negatives, δ = {scale}·σ_r"
            if trained and float(scale) not in trained:
                where += " (outside the training mixture)"
        if v.get("t") is None:
            verdict = f"exact AUC never at chance on the grid (t ≤ {_v(t[-1])})"
        else:
            verdict = f"exact AUC at chance from t = {_v(v['t'])} (σ/α = {_v(v.get('noise_to_signal'))}"
            verdict += f" = {_v(v['noise_over_delta'])}·δ)" if v.get("noise_over_delta") is not None else ")"
        rows.append(_row(where, verdict, f"AUC at t = {_v(t[0])}: exact {_v(results['auc_exact'][kind][0])}, "
                                         f"learned {_v(results['auc_learned'][kind][0])}"))
    rows.append(_row("held-out AUC noise", f"null sd {_v(results.get('null_std'))} "
                                           f"({_v(results.get('n_heldout_per_class'))} pairs per class)",
                     "chance: the exact AUC inside the experiment's null band around 0.5; "
                     f"learned classifier final loss {_v(results.get('classifier_final_loss'))}"))
    return rows


def filtering_rows(results: dict, cfg: dict) -> list[dict]:
    """Per rule: ρ before filtering (generated, truth), then per detector acceptance and ρ after."""
    base = cfg.get("base") if isinstance(cfg.get("base"), dict) else {}
    rows = []
    for rule, r in results.items():
        if not isinstance(r, dict) or not isinstance(r.get("generated"), dict) or not r["generated"]:
            continue
        where = f"{rule} (σ_r = {_v(r.get('sigma_r'))})"
        truth = r.get("truth") if isinstance(r.get("truth"), dict) else {}
        g0, t0 = next(iter(r["generated"].values())), next(iter(truth.values()), {})  # "before" is per rule
        rows.append(_row(f"{where}, before filtering",
                         f"generated ρ = {_pm(g0['rho_before'], g0.get('rho_before_se'))}, coarse/σ_r "
                         f"{_v(g0.get('coarse_ratio_before'))}; "
                         f"truth ρ = {_pm(t0.get('rho_before'), t0.get('rho_before_se'))}",
                         f"generated by {base['kind']}, σ_r × {_v(base.get('base_inflation'))}"
                         if "kind" in base else ""))
        for det, g in r["generated"].items():
            t = truth.get(det, {})
            rows.append(_row(f"{where}, {det}",
                             f"accepts {_v(g['acceptance'])} of generated; "
                             f"ρ after = {_pm(g['rho_after'], g.get('rho_after_se'))}",
                             f"coarse/σ_r after {_v(g.get('coarse_ratio_after'))}; "
                             f"truth: accepts {_v(t.get('acceptance'))}, "
                             f"ρ after = {_pm(t.get('rho_after'), t.get('rho_after_se'))}"))
    return rows


def synthetic_tasks_rows(results: dict, cfg: dict) -> list[dict]:
    """Per task: generated images at the largest n against the training images; then the settings."""
    rows = []
    for name, task in (results.get("tasks") or {}).items():
        if not isinstance(task, dict) or not isinstance(task.get("generated"), list) or not task["generated"]:
            continue
        sigma_r = (task.get("task") or {}).get("sigma_r")
        gen = sorted(task["generated"], key=lambda c: c["n"])  # the largest n last
        last = gen[-1]["metrics"]
        td = task.get("training_data") if isinstance(task.get("training_data"), dict) else {}
        tm = td.get("metrics") or {}
        notes = []
        if tm:
            notes.append(f"training images: ρ = {_pm(tm.get('rho'), tm.get('rho_se'))}, coarse/σ_r "
                         f"{_v(tm.get('coarse_ratio'))}, violation rate {_v(tm.get('violation_rate'))} "
                         f"(truth {_v(tm.get('violation_rate_truth'))})")
        notes += [f"n = {_v(c['n'])}: ρ = {_pm(c['metrics']['rho'], c['metrics'].get('rho_se'))}" for c in gen[:-1]]
        err = td.get("extractor_error") or {}
        if "max_abs_y_error_over_sigma_r" in err:
            notes.append(f"extractor error on clean renders: max Δy {_v(err['max_abs_y_error_over_sigma_r'])}·σ_r, "
                         f"max f′·Δx {_v(err.get('max_abs_slope_x_error_over_sigma_r'))}·σ_r")
        rows.append(_row(f"{name} (σ_r = {_v(sigma_r)})",
                         f"generated, n = {_v(gen[-1]['n'])}: ρ = {_pm(last['rho'], last.get('rho_se'))}, coarse/σ_r "
                         f"{_v(last.get('coarse_ratio'))}, violation rate {_v(last.get('violation_rate'))}",
                         "; ".join(notes)))
    mode = results.get("mode") if isinstance(results.get("mode"), dict) else cfg.get("mode")
    if rows and isinstance(mode, dict):
        rows.append(_row("settings", ", ".join(f"{k} {v if isinstance(v, list) else 'none' if v is None else _v(v)}"
                                               for k, v in mode.items()),
                         f"{_v(results.get('size'))}×{_v(results.get('size'))} px; sampler {results.get('sampler')}; "
                         f"{results.get('parameterisation')}-parameterised"))
    return rows


SPECIFIC = {"coarse_vs_fine": coarse_fine_rows, "capacity": capacity_rows, "loss_share": loss_share_rows,
            "score_field": score_field_rows, "oracle_check": oracle_check_rows, "guidance": guidance_rows,
            "classifier_signal": classifier_signal_rows, "filtering": filtering_rows,
            "synthetic_tasks": synthetic_tasks_rows}


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
    cfg = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    rows, failure = [], None
    if experiment in SPECIFIC and isinstance(results, dict):
        try:
            rows += SPECIFIC[experiment](results, cfg)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            failure = f"unexpected structure for the {experiment} summariser: {type(err).__name__}: {err}"
    rows = verdict_rows(results) + rows
    if rows and failure:
        rows.append({"where": "", "verdict": f"({failure})", "slope": "", "excess": "", "notes": ""})
    problem = None
    if not rows:
        keys = sorted(results) if isinstance(results, dict) else [type(results).__name__]
        problem = (f"{failure}; " if failure else "") + "no verdicts found; result keys: " + ", ".join(keys[:12])
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
             "every number is copied from the experiments' JSON (95% Student-t CIs over seeds in brackets; "
             "`±` = the stored Monte Carlo standard error; a–b = the range of the stored values)."]
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
