"""scripts/results_table.py: the summarisers of oracle_check, guidance, classifier_signal,
filtering and synthetic_tasks, and the mode column.

Each summariser is fed a small synthetic JSON shaped like the experiment's real output
(with distinctive numbers), and the rows must carry those numbers; a file whose results
do not have the expected shape must fall back to the generic "no verdicts found" row.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rt():
    spec = importlib.util.spec_from_file_location("results_table", ROOT / "scripts" / "results_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _text(rows: list[dict]) -> str:
    return "\n".join(" | ".join(r[k] for k in ("where", "verdict", "slope", "excess", "notes")) for r in rows)


# ----------------------------------------------------------------------------- synthetic results
def _oracle_sampler(rho_best: float, raw_top: float, se: float, memo=None) -> dict:
    return {"rho_raw_vs_floor": [1.1, 1.2, raw_top], "rho_denoised_vs_floor": [rho_best, 0.9, 0.6],
            "rho_raw_vs_steps": [9.0, 1.5, 1.1], "rho_denoised_vs_steps": [8.0, 1.4, rho_best],
            "nonfinite_samples_per_config": [0, 0, 0, 0, 0],
            "metrics_best_cell": {"rho": rho_best, "rho_se": se, "rho_truth_mc": 0.9611,
                                  "memorisation_rate": memo, "memorisation_rate_truth": 0.4321 if memo else None},
            "seconds": 1.0}


ORACLE_CFG = {"mode": "quick", "floors": [0.05, 0.3, 1.0], "steps": [8, 24, 64], "steps_floor": 0.05,
              "memorisation_threshold": "sigma_r / 2"}
ORACLE = {"families": {
    "sin": {"label": "y = sin(2x)", "sigma_r": 0.1, "dim": 2, "noise_slope_factor": 3.0, "schedules": {
        "vp_linear": {"samplers": {"pf_heun": _oracle_sampler(1.0123, 2.111, 0.0311),
                                   "euler_maruyama": _oracle_sampler(1.3456, 2.444, 0.0502)}},
        "ve": {"samplers": {"pf_heun": _oracle_sampler(0.9351, 1.977, 0.0333)}}}},
    "empirical": {"label": "empirical measure", "sigma_r": 0.1, "dim": 2, "noise_slope_factor": 3.0, "schedules": {
        "edm": {"samplers": {"pf_heun": _oracle_sampler(0.9876, 1.888, 0.0388, memo=0.875)}}}}},
    "seconds": 12.0}


def _guidance_cells(rhos: list[float], clip_last: float) -> list[dict]:
    return [{"w": w, "rho": r, "rho_se": 0.0123, "violation_rate": 0.05,
             "clip_fraction": clip_last if w == 8.0 else 0.0} for w, r in zip([0.0, 1.0, 2.0, 8.0], rhos)]


def _guidance_summary(rho_w0, best_w, rho_best, closest_w, rho_closest) -> dict:
    return {"rho_w0": rho_w0, "best_w": best_w, "rho_best": rho_best, "rho_reduction": rho_w0 - rho_best,
            "rho_reduction_se": 0.0345, "z_score": 17.5, "measurably_reduced": True,
            "w_closest_to_truth": closest_w, "rho_closest_to_truth": rho_closest, "note": "rho below 1 ..."}


GUIDANCE_CFG = {"mode": "quick", "base": {"kind": "mis-specified exact score (NOT learned)", "base_inflation": 2.0}}
GUIDANCE = {
    "fine rule": {"sigma_r": 0.05, "oracle_rho": 1.4567, "oracle_rho_se": 0.0241, "classifier_final_loss": 0.6789,
                  "exact": {"cells": _guidance_cells([2.1432, 1.5511, 1.5522, 6.9413], 0.1427),
                            "summary": _guidance_summary(2.1432, 1.0, 1.5511, 1.0, 1.5511)},
                  "learned": {"cells": _guidance_cells([2.1432, 1.9, 1.7777, 1.8888], 0.0),
                              "summary": _guidance_summary(2.1432, 2.0, 1.7777, 2.0, 1.7777)}},
    "coarse rule": {"sigma_r": 0.5, "oracle_rho": 0.9711, "oracle_rho_se": 0.0154, "classifier_final_loss": 0.665,
                    "exact": {"cells": _guidance_cells([2.0365, 1.13, 0.8723, 0.4977], 0.0),
                              "summary": _guidance_summary(2.0365, 8.0, 0.4977, 2.0, 0.8723)},
                    "learned": {"cells": _guidance_cells([2.0365, 1.15, 0.8576, 0.4745], 0.0),
                                "summary": _guidance_summary(2.0365, 8.0, 0.4745, 2.0, 0.8576)}}}

SIGNAL_CFG = {"mode": "quick", "negatives": {"fine_scales": [1.0, 2.0, 4.0]}}
SIGNAL = {"t": [0.0021, 0.05, 1.0], "noise_to_signal": [0.0155, 0.2, 150.0],
          "auc_exact": {"coarse": [0.9573, 0.8, 0.5], "fine:1": [0.6189, 0.51, 0.5], "fine:8": [0.9991, 0.9, 0.7]},
          "auc_learned": {"coarse": [0.9494, 0.8, 0.5], "fine:1": [0.5999, 0.51, 0.5], "fine:8": [0.9987, 0.9, 0.7]},
          "null_std": 0.00913, "n_heldout_per_class": 2000, "classifier_final_loss": 0.6725,
          "signal_vanishes": {"coarse": {"t": 0.5013, "noise_to_signal": 3.4376, "noise_over_delta": None},
                              "fine:1": {"t": 0.0632, "noise_to_signal": 0.217, "noise_over_delta": 2.1699},
                              "fine:8": {"t": None, "noise_to_signal": None, "noise_over_delta": None}}}


def _det(acc, rho_after, cr_after, rho_before) -> dict:
    return {"acceptance": acc, "n_accepted": 1, "rho_before": rho_before, "rho_before_se": 0.0225,
            "coarse_ratio_before": 0.0699, "rho_after": rho_after, "rho_after_se": 0.0099,
            "coarse_ratio_after": cr_after}


FILTERING_CFG = {"mode": "quick", "base": {"kind": "mis-specified exact score (NOT learned)", "base_inflation": 2.0}}
FILTERING = {"fine rule": {
    "sigma_r": 0.05,
    "generated": {"oracle c=2": _det(0.6472, 1.0934, 0.0567, 2.2013),
                  "learned classifier": _det(0.2785, 1.7684, 0.6843, 2.2013)},
    "truth": {"oracle c=2": _det(0.958, 0.8834, 0.0279, 0.9913),
              "learned classifier": _det(0.3101, 0.9501, 0.2824, 0.9913)}}}


def _task_metrics(rho, coarse_ratio, violation) -> dict:
    return {"rho": rho, "rho_se": 0.0777, "violation_rate": violation, "violation_rate_truth": 0.0027,
            "coarse_error": 0.01, "coarse_ratio": coarse_ratio, "n": 256.0}


SYNTH_MODE = {"n_values": [256, 1024], "width": 256, "depth": 2, "train_steps": 600, "batch_size": 64,
              "ema": None, "samples": 256, "sample_steps": 100}
SYNTH = {"tasks_run": ["shadow"], "size": 24, "seed": 0, "mode": SYNTH_MODE, "sampler": "euler_maruyama",
         "parameterisation": "x0", "tasks": {"shadow": {
             "task": {"name": "shadow", "sigma_r": 0.015},
             "training_data": {"metrics": _task_metrics(0.9822, 0.0523, 0.00195),
                               "extractor_error": {"max_abs_y_error_over_sigma_r": 0.0106,
                                                   "max_abs_slope_x_error_over_sigma_r": 0.0074}},
             # stored out of n order on purpose: the row must report the largest n
             "generated": [{"n": 1024, "metrics": _task_metrics(1.8785, 1.6388, 0.125)},
                           {"n": 256, "metrics": _task_metrics(0.9485, 0.495, 0.0234)}]}}}


# ----------------------------------------------------------------------------- the summarisers
def test_oracle_check_rows(rt):
    rows = rt.oracle_check_rows(ORACLE, ORACLE_CFG)
    assert len(rows) == 2  # one per family
    sin = _text(rows[:1])
    assert "y = sin(2x)" in rows[0]["where"]
    # range of ρ at the best cell (64 steps, steps floor 0.05) over the 3 schedule × sampler cells, and who gave it
    assert "64 steps" in sin and "0.05·σ_r" in sin and "0.935–1.35" in sin and "over 3 " in sin
    assert "lowest ve/pf_heun" in sin and "highest vp_linear/euler_maruyama" in sin
    assert "0.961" in sin and "0.0311–0.0502" in sin  # truth ρ, MC se range
    assert "σ/α = 1·σ_r: 1.98–2.44" in sin  # raw ρ at the largest floor
    emp = _text(rows[1:])
    assert "0.988" in emp and "memorisation" in emp and "0.875" in emp and "0.432" in emp and "lowest" not in emp
    assert "memorisation" not in sin


def test_guidance_rows(rt):
    rows = rt.guidance_rows(GUIDANCE, GUIDANCE_CFG)
    assert len(rows) == 6  # per rule: w = 0, exact, learned
    by_where = {r["where"]: r for r in rows}
    w0 = _text([by_where["fine rule (σ_r = 0.05), w = 0"]])
    assert "2.14 ± 0.012" in w0 and "1.46 ± 0.024" in w0 and "σ_r × 2" in w0
    exact = _text([by_where["fine rule (σ_r = 0.05), exact classifier"]])
    assert "best ρ = 1.55 at w = 1" in exact
    assert "largest w = 8: ρ = 6.94" in exact and "clip fraction 0.143" in exact and "z = 17.5" in exact
    learned = _text([by_where["fine rule (σ_r = 0.05), learned classifier"]])
    assert "best ρ = 1.78 at w = 2" in learned and "1.89" in learned and "0.679" in learned
    coarse = by_where["coarse rule (σ_r = 0.5), exact classifier"]["verdict"]
    assert "closest to 1: 0.872 at w = 2" in coarse and "lowest ρ 0.498 at w = 8" in coarse
    assert "over-sharpened" in coarse and "over-sharpened" not in exact


def test_classifier_signal_rows(rt):
    rows = rt.classifier_signal_rows(SIGNAL, SIGNAL_CFG)
    assert len(rows) == 4  # 3 kinds + the null sd
    coarse, fine1, fine8, null = rows
    assert "t = 0.501" in coarse["verdict"] and "3.44" in coarse["verdict"] and "·δ" not in coarse["verdict"]
    assert "t = 0.0632" in fine1["verdict"] and "0.217" in fine1["verdict"] and "2.17·δ" in fine1["verdict"]
    assert "t = 0.0021" in fine1["notes"] and "0.619" in fine1["notes"] and "0.6" in fine1["notes"]
    assert "never" in fine8["verdict"] and "outside the training mixture" in fine8["where"]
    assert "outside" not in fine1["where"]
    assert "0.00913" in null["verdict"] and "2000" in null["verdict"] and "0.672" in null["notes"]


def test_filtering_rows(rt):
    rows = rt.filtering_rows(FILTERING, FILTERING_CFG)
    assert [r["where"] for r in rows] == ["fine rule (σ_r = 0.05), before filtering",
                                          "fine rule (σ_r = 0.05), oracle c=2",
                                          "fine rule (σ_r = 0.05), learned classifier"]
    assert "2.2 ± 0.022" in rows[0]["verdict"] and "0.991" in rows[0]["verdict"] and "NOT learned" in rows[0]["notes"]
    assert "accepts 0.647" in rows[1]["verdict"] and "1.09 ± 0.0099" in rows[1]["verdict"]
    assert "0.0567" in rows[1]["notes"] and "accepts 0.958" in rows[1]["notes"] and "0.883" in rows[1]["notes"]
    assert "accepts 0.279" in rows[2]["verdict"] and "1.77" in rows[2]["verdict"] and "0.31" in rows[2]["notes"]


def test_synthetic_tasks_rows(rt):
    rows = rt.synthetic_tasks_rows(SYNTH, {"mode": SYNTH_MODE})
    assert len(rows) == 2 and rows[0]["where"] == "shadow (σ_r = 0.015)"
    v, n = rows[0]["verdict"], rows[0]["notes"]
    assert "n = 1024" in v and "1.88 ± 0.078" in v and "1.64" in v and "0.125" in v
    assert "0.982" in n and "0.0523" in n and "n = 256: ρ = 0.949" in n and "0.0106" in n
    assert "train_steps 600" in rows[1]["verdict"] and "ema none" in rows[1]["verdict"] and "24×24" in rows[1]["notes"]


# ----------------------------------------------------------------------------- the whole table, and the mode
def _write(figures: Path, name: str, experiment: str, config: dict, results) -> None:
    figures.mkdir(parents=True, exist_ok=True)
    (figures / name).write_text(json.dumps({"experiment": experiment, "config": config, "seed": 0,
                                            "results": results}))


def test_table_rows_and_modes(rt, tmp_path):
    figures = tmp_path / "figures"
    _write(figures, "oracle_check.json", "oracle_check", ORACLE_CFG, ORACLE)  # quick results under NAME.json
    _write(figures, "guidance.json", "guidance", GUIDANCE_CFG, GUIDANCE)
    _write(figures, "classifier_signal.json", "classifier_signal", SIGNAL_CFG, SIGNAL)
    _write(figures, "filtering.json", "filtering", {**FILTERING_CFG, "mode": "full"}, FILTERING)
    _write(figures, "synthetic_tasks_quick.json", "synthetic_tasks", {"mode": SYNTH_MODE}, SYNTH)
    # full synthetic_tasks: the config's mode is a settings dict, the file name has no _quick suffix
    full_mode = dict(SYNTH_MODE, train_steps=8000)
    _write(figures, "synthetic_tasks.json", "synthetic_tasks", {"mode": full_mode}, dict(SYNTH, mode=full_mode))
    res = rt.main(["--figures", str(figures), "--out", str(tmp_path / "t.md")])
    assert res["no_verdicts"] == []
    modes = {}
    for line in res["table"].splitlines():
        if not line.startswith("| ") or line.startswith(("| experiment ", "|---")):
            continue
        cols = [c.strip() for c in line.strip("|").split("|")]
        modes.setdefault(cols[0], set()).add(cols[1])
    assert modes == {"oracle_check": {"quick"}, "guidance": {"quick"}, "classifier_signal": {"quick"},
                     "filtering": {"full"}, "synthetic_tasks": {"quick", "full"}}
    assert "train_steps 8000" in res["table"] and "accepts 0.647" in res["table"]


def test_mode_of(rt):
    assert rt.mode_of({"config": {"mode": "quick"}}, Path("guidance.json")) == "quick"
    assert rt.mode_of({"config": {"settings": {"mode": "full"}}}, Path("capacity_quick.json")) == "full"
    assert rt.mode_of({"config": {"mode": {"width": 256}}}, Path("synthetic_tasks_quick.json")) == "quick"
    assert rt.mode_of({"config": {"mode": {"width": 512}}}, Path("synthetic_tasks.json")) == "full"
    assert rt.mode_of({"config": {}}, Path("x.json")).startswith("full (assumed")


def test_unexpected_structure_falls_back(rt, tmp_path):
    figures = tmp_path / "figures"
    broken = json.loads(json.dumps(GUIDANCE))
    del broken["fine rule"]["exact"]["summary"]  # the right keys, but not the whole structure
    _write(figures, "guidance.json", "guidance", GUIDANCE_CFG, broken)
    _write(figures, "filtering.json", "filtering", FILTERING_CFG, {"scales": [1, 2]})  # nothing to summarise
    res = rt.main(["--figures", str(figures), "--out", str(tmp_path / "t.md")])
    g = next(s for s in res["no_verdicts"] if s.startswith("guidance.json"))
    assert "unexpected structure" in g and "summary" in g and "result keys: coarse rule, fine rule" in g
    assert any(s.startswith("filtering.json") and "result keys: scales" in s for s in res["no_verdicts"])
