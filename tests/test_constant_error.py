"""The constant-error study: a real (tiny) cell end to end, and the experiment's
summary / verdict / figure / --check logic on synthetic cells with known curves."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import experiments.constant_error as ce
from dsmtheory import study
from dsmtheory.results import read_json, to_jsonable
from dsmtheory.stats import constant_error_verdict
from dsmtheory.sweep import cell_path, load_sweep, run_sweep

# ----------------------------------------------------------------------------- a real cell
# One tiny real cell (linear-Gaussian family: cheap exact score). Its cost is JAX compilation
# (training, three samplers, metrics, diagnostics): ~40 s of CPU time, hence `slow`.

TINY = dict(family="linear_gaussian", rule="linear", rule_params={"a": 1.0, "b": 0.0}, sigma_r=0.1, n=48,
            n_max=64, width=8, train_steps=16, batch_size=32, eval_size=128, n_samples=96, sample_steps=12,
            n_samples_empirical=64, n_seeds=2, diagnostic_samples=256, seed=3)


@pytest.fixture(scope="module")
def tiny_result():
    cell = study.make_cell(**TINY)
    return cell, study.compute_cell(cell)


@pytest.mark.slow
def test_real_cell_measures_all_three_scores_per_seed(tiny_result):
    cell, res = tiny_result
    json.dumps(to_jsonable(res))  # JSON-ready, no NaN
    for curve in study.CURVES:
        assert len(res[curve]["rho"]) == 2  # one value per vmapped seed
        assert all(np.isfinite(res[curve]["rho"])) and min(res[curve]["rho"]) > 0
        for key in ("coarse_ratio", "rho_fine", "violation_rate", "cond_w1", "marginal_w1", "memorisation_rate"):
            assert len(res[curve][key]) == 2, (curve, key)
        # THEORY §4 decomposition holds for every curve: ρ² = ρ_fine² + coarse_ratio²
        np.testing.assert_allclose(np.square(res[curve]["rho"]),
                                   np.square(res[curve]["rho_fine"]) + np.square(res[curve]["coarse_ratio"]),
                                   rtol=1e-6)
    assert res["empirical"]["n"] == [64, 64] and res["learned"]["n"] == [96, 96]
    # the empirical-optimal sampler reproduces training points (THEORY §2.4): it memorises far
    # more than the exact score's samples do
    assert min(res["empirical"]["memorisation_rate"]) > max(res["oracle"]["memorisation_rate"])
    # the oracle ignores the training set: both seeds ran the same exact score
    assert res["t_min"] == pytest.approx(1e-3) and res["schedule"]["name"] == "vp_linear"
    # score-level diagnostics: the rule-normal share of the excess is a fraction, per seed
    share = res["diagnostics"]["normal_share"]
    assert len(share) == 2 and all(0.0 <= s <= 1.0 for s in share)
    np.testing.assert_allclose(np.add(res["diagnostics"]["normal"], res["diagnostics"]["rest"]),
                               res["diagnostics"]["excess"], rtol=1e-5)
    assert len(res["training"]["fisher_excess"]) == 2


@pytest.mark.slow
def test_real_cell_is_reproducible(tiny_result):
    cell, res = tiny_result
    study.clear_oracle_memo()  # recompute the oracle samples too
    again = to_jsonable(study.compute_cell(dict(cell)))  # compiled programs are reused: cheap
    assert again == to_jsonable(res)


@pytest.mark.parametrize(
    "overrides, exc, word",
    [
        ({"bogus": 1}, ValueError, "unknown cell keys"),
        ({"n": 128, "n_max": 64}, ValueError, "n_max"),
        ({"sigma_r": 0.0}, ValueError, "sigma_r"),
        ({"family": "banana"}, ValueError, "family"),
        ({"sampler": "rk45"}, ValueError, "sampler"),
        ({"n_seeds": 0}, ValueError, "n_seeds"),
        ({"width": 2.5}, TypeError, "width"),
        ({"empirical": "yes"}, TypeError, "empirical"),
        ({"rule_params": [1]}, TypeError, "rule_params"),
    ],
)
def test_make_cell_rejects_bad_values(overrides, exc, word):
    with pytest.raises(exc, match=word):
        study.make_cell(**overrides)


def test_compute_cell_requires_complete_cells():
    cell = study.make_cell()
    del cell["sampler"]
    with pytest.raises(ValueError, match="missing"):
        study.compute_cell(cell)


# ----------------------------------------------------------------------------- the experiment

N_SYN = [256, 1024, 4096, 16384]


def synthetic_compute(cell: dict) -> dict:
    """Known curves: learned flat at 3 (+ noise), oracle ≈ 1.2, empirical decaying as n^-1/2."""
    rng = np.random.default_rng([cell["seed"], cell["n"], len(cell["schedule"])])
    E, n = cell["n_seeds"], cell["n"]
    curves = {
        "learned": 3.0 + 0.02 * rng.normal(size=E),
        "oracle": 1.2 + 0.02 * rng.normal(size=E),
        "empirical": 1.2 + 40.0 * n**-0.5 * (1 + 0.01 * rng.normal(size=E)),
    }
    out = {"t_min": 1e-3, "noise_floor": 1e-3, "training": {"fisher_excess": [0.1] * E}}
    for name, rho in curves.items():
        out[name] = {"rho": rho.tolist(), "coarse_ratio": (0.1 * rho).tolist(), "rho_fine": rho.tolist(),
                     "memorisation_rate": [0.0] * E}
    return out


def _argv(tmp_path, *extra):
    return ["--quick", "--n-values", *map(str, N_SYN), "--seeds", "4", "--schedules", "vp_linear", "edm",
            "--out", str(tmp_path / "fig"), "--cells-dir", str(tmp_path / "cells"), "--quiet", *extra]


def test_experiment_summary_verdicts_figure_resume_and_check(tmp_path, monkeypatch, capsys):
    calls = []

    def counting(cell):
        calls.append(cell["n"])
        return synthetic_compute(cell)

    monkeypatch.setattr(ce, "compute_cell", counting)
    out = ce.main(_argv(tmp_path))
    assert len(calls) == 8  # 2 schedules x 4 n
    stored = read_json(tmp_path / "fig" / "constant_error_quick.json")
    assert (tmp_path / "fig" / "constant_error_quick.png").stat().st_size > 10_000
    assert {"git_commit", "versions"} <= set(stored["provenance"])
    printed = capsys.readouterr().out
    for schedule in ("vp_linear", "edm"):
        s = stored["results"]["schedules"][schedule]
        assert s["n_values"] == N_SYN
        # verdicts are recomputed from the stored per-seed numbers, not assumed
        learned = np.array(s["curves"]["learned"]["rho_per_seed"])
        oracle = np.array(s["curves"]["oracle"]["rho_per_seed"])
        assert learned.shape == (4, 4)
        v = constant_error_verdict(N_SYN, learned, oracle)
        assert s["verdicts"]["learned"]["verdict"] == v.verdict == "constant error"
        assert s["verdicts"]["learned"]["excess"]["mean"] == pytest.approx(1.8, abs=0.05)
        assert s["verdicts"]["empirical"]["verdict"] == "no constant error"
        assert "error decreasing with n" in s["verdicts"]["empirical"]["reasons"]
        assert f"[{schedule}] learned: constant error" in printed
        np.testing.assert_allclose(s["curves"]["learned"]["mean"], learned.mean(axis=0))
    assert out["schedules"]["edm"]["verdicts"]["learned"]["constant_error"] is True
    # a rerun resumes from the stored cells: nothing is recomputed
    ce.main(_argv(tmp_path))
    assert len(calls) == 8 and len(load_sweep(tmp_path / "cells")) == 8

    # --check recomputes one cell and agrees with the stored JSON ...
    assert ce.main(_argv(tmp_path, "--check"))["check"]["agree"] is True
    # ... and reports a tampered stored number
    cells = ce.build_cells(ce._settings(ce._parser().parse_args(_argv(tmp_path))), seed=0)
    path = cell_path(tmp_path / "cells", cells[0])
    record = read_json(path)
    record["result"]["learned"]["rho"][1] *= 1.001
    path.write_text(json.dumps(record))
    check = ce.main(_argv(tmp_path, "--check"))["check"]
    assert check["agree"] is False and "learned.rho[1]" in check["differences"][0]


def test_feeding_the_oracle_as_learned_flips_the_experiment_verdict(tmp_path):
    """Issue 4 acceptance, through the experiment's summary: learned := oracle ⇒ 'no constant error'."""

    def oracle_as_learned(cell):
        out = synthetic_compute(cell)
        out["learned"] = out["oracle"]
        return out

    settings = ce._settings(ce._parser().parse_args(_argv(tmp_path)))
    cells = ce.build_cells(settings, seed=0)
    honest = ce.summarise(cells, run_sweep(cells, synthetic_compute, tmp_path / "a"), settings)
    flipped = ce.summarise(cells, run_sweep(cells, oracle_as_learned, tmp_path / "b"), settings)
    for schedule in ("vp_linear", "edm"):
        assert honest[schedule]["verdicts"]["learned"]["verdict"] == "constant error"
        v = flipped[schedule]["verdicts"]["learned"]
        assert v["verdict"] == "no constant error"
        assert v["reasons"] == ["no excess over oracle (CI contains 0)"]


def test_check_without_stored_cells_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="run the experiment first"):
        ce.main(_argv(tmp_path, "--check"))


def test_bad_experiment_options(tmp_path):
    with pytest.raises(SystemExit, match="n-values"):
        ce.main(["--n-values", "256", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="seeds"):
        ce.main(["--seeds", "1", "--out", str(tmp_path)])
