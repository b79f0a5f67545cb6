"""Smoke and logic tests of the issue-4 experiments coarse_vs_fine, capacity, loss_share,
score_field and of scripts/results_table.py.

The smoke runs use tiny cells (few training steps, few samples, 2 seeds) that share
shapes where possible so the compiled programs are reused; they check the pipeline end
to end (sweep cache, JSON, PNG, --check) and that the reported verdicts are the ones the
stored numbers imply. The logic tests feed synthetic per-seed records whose answer is
known (e.g. the oracle's numbers as the "learned" ones) and check the verdicts flip.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from experiments import capacity, coarse_vs_fine, loss_share, score_field

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--seeds", "2", "--n", "64", "--width", "8", "--train-steps", "20", "--samples", "60",
        "--sample-steps", "10", "--empirical-samples", "20", "--diagnostic-samples", "64", "--no-empirical", "--quiet"]


def _load_results_table():
    spec = importlib.util.spec_from_file_location("results_table", ROOT / "scripts" / "results_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------- logic (synthetic records)
def _record(learned: dict, oracle: dict) -> dict:
    return {"cell_id": "x", "result": {"learned": learned, "oracle": oracle}}


def _metrics(rng, rho_fine, coarse_ratio, seeds=4, jitter=0.01):
    rf = np.asarray(rho_fine) + jitter * rng.standard_normal(seeds)
    cr = np.asarray(coarse_ratio) + jitter * rng.standard_normal(seeds)
    return {"rho_fine": rf.tolist(), "coarse_ratio": cr.tolist(), "coarse_error": (0.1 * cr).tolist(),
            "rho": np.sqrt(rf**2 + cr**2).tolist()}


def test_compare_cell_verdicts_follow_the_numbers():
    rng = np.random.default_rng(0)
    oracle = _metrics(rng, 1.0, 0.2)
    # oracle's own numbers fed as "learned": no excess anywhere, the claim must not hold
    same = coarse_vs_fine.compare_cell(_record(oracle, oracle))
    assert same["coarse_verdict"] == "coarse ≈ oracle"
    assert same["fine_verdict"] == "fine ≈ oracle"
    assert same["claim_holds"] is False
    # fine error inflated 5x with the same trend: coarse ≈ oracle, fine ≫ oracle, claim holds
    # (same trend up to a zero-mean per-seed wobble, so the paired coarse CI must contain 0)
    wobble = np.array([0.01, -0.01, 0.02, -0.02])
    fine_bad = _metrics(rng, 5.0, 0.2)
    fine_bad["coarse_ratio"] = (np.array(oracle["coarse_ratio"]) + wobble).tolist()
    fine_bad["rho"] = np.sqrt(np.array(fine_bad["rho_fine"]) ** 2 + np.array(fine_bad["coarse_ratio"]) ** 2).tolist()
    c = coarse_vs_fine.compare_cell(_record(fine_bad, oracle))
    assert c["fine_verdict"] == "fine ≫ oracle" and c["coarse_verdict"] == "coarse ≈ oracle"
    assert c["claim_holds"] is True
    assert c["rho_fine_ratio"]["lo"] > 4.0
    # fine share of the excess squared error: all of it is fine here (≈ 1)
    assert c["fine_share_of_excess_sq"]["mean"] == pytest.approx(1.0, abs=0.05)
    # trend wrong too: coarse worse than oracle, claim fails
    both_bad = _metrics(rng, 5.0, 3.0)
    c = coarse_vs_fine.compare_cell(_record(both_bad, oracle))
    assert c["coarse_verdict"] == "coarse worse than oracle" and c["claim_holds"] is False


def test_capacity_reading_flips_with_the_slope():
    rng = np.random.default_rng(1)
    widths = [16, 32, 64, 128]
    oracle = [{"rho": (1.0 + 0.01 * rng.standard_normal(4)).tolist()} for _ in widths]
    plateau = [{"rho": (3.0 + 0.01 * rng.standard_normal(4)).tolist()} for _ in widths]
    falling = [{"rho": (1.0 + 40.0 / w + 0.01 * rng.standard_normal(4)).tolist()} for w in widths]
    s = {"width_values": widths, "steps_values": [1, 2], "train_steps": 2, "width": 128}
    train = {"training": {}}

    def recs(curve):
        return [{"cell_id": str(i), "result": {"learned": c, "oracle": o, **train}}
                for i, (c, o) in enumerate(zip(curve, oracle))]

    out = capacity.summarise({"width": recs(plateau)}, s)
    assert out["axes"]["width"]["reading"].startswith("plateau survives width")
    assert out["axes"]["width"]["excess_at_largest"]["lo"] > 1.5
    out = capacity.summarise({"width": recs(falling)}, s)
    assert "decreasing with width" in out["axes"]["width"]["reading"]
    out = capacity.summarise({"width": recs(oracle)}, s)  # learned = oracle: no excess
    assert not out["axes"]["width"]["verdict_vs_axis"]["constant_error"]


# ----------------------------------------------------------------------------- results table
def _write_synthetic(figures: Path) -> None:
    figures.mkdir(parents=True, exist_ok=True)
    verdict = {"verdict": "constant error", "reasons": [], "slope": {"slope": 0.01, "lo": -0.02, "hi": 0.04},
               "excess": {"mean": 1.5, "lo": 1.2, "hi": 1.8}}
    doc = {"experiment": "constant_error", "config": {"settings": {"mode": "quick"}}, "seed": 0,
           "results": {"schedules": {"vp_linear": {"verdicts": {"learned": verdict}}}}}
    (figures / "constant_error_quick.json").write_text(json.dumps(doc))
    doc2 = {"experiment": "guidance", "config": {}, "seed": 0, "results": {"scales": [1, 2], "rho": [3.0, 2.0]}}
    (figures / "guidance.json").write_text(json.dumps(doc2))
    (figures / "broken.json").write_text("{not json")


def test_results_table_on_synthetic_json(tmp_path):
    rt = _load_results_table()
    figures, out = tmp_path / "figures", tmp_path / "docs" / "results_table.md"
    _write_synthetic(figures)
    res = rt.main(["--figures", str(figures), "--out", str(out)])
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| constant_error"))
    cols = [c.strip() for c in row.strip("|").split("|")]
    assert cols[1] == "quick" and cols[3] == "constant error"
    assert cols[4] == "+0.01 [-0.02, +0.04]" and cols[5] == "+1.5 [+1.2, +1.8]"
    # a file without verdicts is listed with its keys, a broken one with the error; nothing crashes
    assert any("guidance.json" in s and "scales" in s for s in res["no_verdicts"])
    assert any("broken.json" in s and "unreadable" in s for s in res["no_verdicts"])
    assert "coarse_vs_fine" in res["missing_known"] and "constant_error" not in res["missing_known"]
    # the flipped verdict shows up in the table
    doc = json.loads((figures / "constant_error_quick.json").read_text())
    doc["results"]["schedules"]["vp_linear"]["verdicts"]["learned"].update(
        verdict="no constant error", reasons=["error decreasing with n"])
    (figures / "constant_error_quick.json").write_text(json.dumps(doc))
    text = rt.main(["--figures", str(figures), "--out", str(out)])["table"]
    assert "| no constant error |" in text and "error decreasing with n" in text


# ----------------------------------------------------------------------------- smoke runs (tiny)
def _check_outputs(out: dict, out_dir: Path, name: str) -> dict:
    stored = json.loads((out_dir / f"{name}.json").read_text())
    assert (out_dir / f"{name}.png").stat().st_size > 10_000
    assert stored["experiment"] == name
    return stored


@pytest.mark.slow
def test_coarse_vs_fine_tiny(tmp_path):
    out_dir, cells = tmp_path / "fig", tmp_path / "cells"
    args = TINY + ["--sigma-r-values", "0.1", "0.3", "--k-values", "2", "3", "--out", str(out_dir),
                   "--cells-dir", str(cells)]
    out = coarse_vs_fine.main(args)
    stored = _check_outputs(out, out_dir, "coarse_vs_fine")
    for axis in ("sigma_r", "k"):
        sm = stored["results"]["axes"][axis]
        assert len(sm["comparisons"]) == 2
        for c in sm["comparisons"]:
            # the stored verdict is the one its stored CI implies
            e = c["rho_fine_excess"]
            assert (c["fine_verdict"] == "fine ≫ oracle") == (e["lo"] > 0)
            assert c["claim_holds"] == (c["fine_verdict"] == "fine ≫ oracle" and c["coarse_verdict"] == "coarse ≈ oracle")
    # 3 unique cells on disk (the (σ_r=0.1, k=2) cell is shared by both axes); a rerun recomputes none
    assert len(list(cells.glob("*.json"))) == 3
    again = coarse_vs_fine.main(args)
    assert again["compute_seconds_all_cells"] == pytest.approx(out["compute_seconds_all_cells"])
    assert coarse_vs_fine.main(args + ["--check"])["check"]["agree"]
    # a tampered stored number must be caught by --check (it recomputes the first cell: σ_r = 0.1, k = 2)
    first = next(p for p in cells.glob("*.json")
                 if json.loads(p.read_text())["config"]["sigma_r"] == 0.1
                 and json.loads(p.read_text())["config"]["rule_params"]["k"] == 2.0)
    record = json.loads(first.read_text())
    record["result"]["learned"]["rho"][0] *= 1.01
    first.write_text(json.dumps(record))
    assert not coarse_vs_fine.main(args + ["--check"])["check"]["agree"]


@pytest.mark.slow
@pytest.mark.extended  # opt-in (`pytest -m extended`): the suite's time budget; logic covered above
def test_capacity_tiny(tmp_path):
    out_dir = tmp_path / "fig"
    args = TINY + ["--width-values", "8", "16", "--steps-values", "10", "20", "--out", str(out_dir),
                   "--cells-dir", str(tmp_path / "cells")]
    capacity.main(args)
    stored = _check_outputs({}, out_dir, "capacity")
    axes = stored["results"]["axes"]
    assert axes["width"]["values"] == [8, 16] and axes["train_steps"]["values"] == [10, 20]
    for sm in axes.values():
        v = sm["verdict_vs_axis"]
        assert v["constant_error"] == (v["slope"]["lo"] <= 0 <= v["slope"]["hi"] and v["excess"]["lo"] > 0)


@pytest.mark.slow
@pytest.mark.extended  # opt-in (`pytest -m extended`): the suite's time budget; logic covered above
def test_loss_share_tiny(tmp_path):
    out_dir = tmp_path / "fig"
    args = TINY + ["--sigma-r-values", "0.1", "0.3", "--D-values", "2", "4", "--out", str(out_dir),
                   "--cells-dir", str(tmp_path / "cells")]
    loss_share.main(args)
    stored = _check_outputs({}, out_dir, "loss_share")
    for axis in ("sigma_r", "D"):
        for v, c in zip(stored["results"]["axes"][axis]["values"], stored["results"]["axes"][axis]["cells"]):
            assert 0.0 <= c["normal_share"]["mean"] <= 1.0
            D = v if axis == "D" else 2
            assert c["isotropic_share"] == pytest.approx(1.0 / D)
            prof = c["profile"]
            assert len(prof["t"]) == loss_share.PROFILE_N_T
            # the rule-normal part of F(t) never exceeds F(t) (F = F_⊥ + F_∥ exactly)
            assert np.all(np.array(prof["normal_per_seed"]) <= np.array(prof["total_per_seed"]) * (1 + 1e-5) + 1e-9)
    # the study's diagnostics step is restored after the wrapped compute
    from dsmtheory import study

    assert study._score_diagnostics.__name__ == "_score_diagnostics"


@pytest.mark.slow
def test_score_field_tiny(tmp_path):
    out_dir = tmp_path / "fig"
    args = ["--n", "64", "--width", "8", "--train-steps", "20", "--samples", "60", "--sample-steps", "10",
            "--grid", "5", "--out", str(out_dir)]
    score_field.main(args)
    stored = _check_outputs({}, out_dir, "score_field")
    fields = stored["results"]["fields"]
    assert len(fields) == 3
    nts = [f["noise_to_signal"] for f in fields]
    assert nts[0] > nts[1] > nts[2]  # three distinct noise levels, high to low
    for f in fields:
        assert np.array(f["exact"]).shape == (25, 2) and np.array(f["learned"]).shape == (25, 2)
        assert f["fisher_normal"] <= f["fisher_total"] * (1 + 1e-5)
    assert score_field.main(args + ["--check"])["check"]["agree"]
