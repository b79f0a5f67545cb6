"""Smoke test of experiments/oracle_check.py at a tiny size: it runs, writes the PNG and the
JSON (config, seed, numbers), its numbers are sane, and --check agrees with a fresh run and
fails on a tampered file."""

from __future__ import annotations

import json
import math

import pytest

from experiments import oracle_check

TINY = ["--families", "linear_gaussian", "empirical", "--schedules", "vp_linear", "edm",
        "--samplers", "euler_maruyama", "pf_heun", "--n-samples", "200", "--floors", "0.05", "1.0",
        "--steps", "6", "48", "--seed", "3", "--quiet"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("oracle")
    res = oracle_check.main(TINY + ["--out", str(out)])
    return out, res


def test_writes_png_and_json(tiny_run):
    out, res = tiny_run
    assert (out / "oracle_check.png").stat().st_size > 10_000
    data = json.loads((out / "oracle_check.json").read_text())
    assert data["experiment"] == "oracle_check" and data["seed"] == 3
    assert data["config"]["samplers"] == ["euler_maruyama", "pf_heun"]
    fams = data["results"]["families"]
    assert set(fams) == {"linear_gaussian", "empirical"}
    for fres in fams.values():
        assert set(fres["schedules"]) == {"vp_linear", "edm"}
        for sres in fres["schedules"].values():
            for mres in sres["samplers"].values():
                assert len(mres["rho_raw_vs_floor"]) == 2 and len(mres["rho_denoised_vs_steps"]) == 2
                assert sum(mres["nonfinite_samples_per_config"]) == 0


def test_numbers_are_sane(tiny_run):
    _, res = tiny_run
    lg = res["families"]["linear_gaussian"]
    for sname, sres in lg["schedules"].items():
        # the requested noise floors were hit: σ(t_min)/α(t_min) = 0.05 σ_r and 1.0 σ_r
        assert sres["noise_floor_over_sigma_r"] == pytest.approx([0.05, 1.0], rel=1e-3)
        for method, mres in sres["samplers"].items():
            # more steps bring the oracle closer to the truth (ρ = 1): 6 steps vs 48 steps
            far, near = (abs(math.log(v)) for v in mres["rho_denoised_vs_steps"])
            assert near < far, (sname, method)
    heun = lg["schedules"]["edm"]["samplers"]["pf_heun"]
    # raw samples with noise σ_r on x and y (slope 1): ρ² = 1 + 2 = 3 (exact for a linear rule);
    # 200 samples give ρ to ~5%, 48 Heun steps on EDM's grid add little
    assert heun["rho_raw_vs_floor"][1] == pytest.approx(math.sqrt(3), rel=0.2)
    assert heun["rho_denoised_vs_floor"][0] == pytest.approx(1.0, abs=0.15)
    emp = res["families"]["empirical"]["schedules"]["edm"]["samplers"]["pf_heun"]["metrics_best_cell"]
    # the exact empirical score at σ(t_min) = 0.005 (= 0.05 σ_r) reproduces training points
    assert emp["memorisation_rate"] > 0.95
    assert emp["memorisation_rate"] >= emp["memorisation_rate_truth"]


def test_check_agrees_and_detects_tampering(tiny_run, tmp_path):
    out, _ = tiny_run
    res = oracle_check.main(["--check", "--out", str(out), "--quiet"])
    assert res["check"]["agree"], res
    data = json.loads((out / "oracle_check.json").read_text())
    fam = next(iter(data["results"]["families"].values()))
    cell = next(iter(fam["schedules"].values()))["samplers"]["euler_maruyama"]
    cell["rho_denoised_vs_steps"][0] *= 1.1
    (tmp_path / "oracle_check.json").write_text(json.dumps(data))
    bad = oracle_check.main(["--check", "--out", str(tmp_path), "--quiet"])
    assert not bad["check"]["agree"]
    with pytest.raises(SystemExit):
        oracle_check.main(["--check", "--out", str(tmp_path / "missing"), "--quiet"])
