"""Smoke tests of the guidance experiments at tiny sizes: outputs written, numbers finite and
in range, --check agrees with a fresh run and fails on a tampered JSON."""

import json
import math

import pytest

from experiments import classifier_signal, filtering, guidance

# one tiny training configuration and sample size for all three experiments, so that the
# compiled classifier-training and sampler programs are shared between the tests
TRAIN = ["--train-steps", "20", "--train-n", "256", "--seeds", "1", "--hidden", "16"]
SAMPLES = ["--samples", "200", "--sample-steps", "10"]


def _tamper(path, edit):
    d = json.loads(path.read_text())
    edit(d["results"])
    path.write_text(json.dumps(d))


def test_guidance_experiment_tiny(tmp_path):
    res = guidance.main(["--quick", "--out", str(tmp_path), *SAMPLES, *TRAIN, "--w-grid", "0", "2"])
    assert (tmp_path / "guidance.json").exists() and (tmp_path / "guidance.png").exists()
    stored = json.loads((tmp_path / "guidance.json").read_text())
    assert stored["config"]["base"]["kind"].startswith("mis-specified")
    for rule in ("coarse rule", "fine rule"):
        for cname in ("exact", "learned"):
            cells = res[rule][cname]["cells"]
            assert [c["w"] for c in cells] == [0.0, 2.0]
            assert all(math.isfinite(c["rho"]) and c["rho"] > 0 for c in cells)
            assert 0.0 <= cells[1]["clip_fraction"] <= 1.0
        # common random numbers: w = 0 is the same base run for both classifiers
        assert res[rule]["exact"]["cells"][0]["rho"] == res[rule]["learned"]["cells"][0]["rho"]
    assert guidance.main(["--check", "--out", str(tmp_path)]) == {"check": "ok"}
    _tamper(tmp_path / "guidance.json",
            lambda r: [c.update(rho=c["rho"] * 1.1) for c in r["fine rule"]["exact"]["cells"]])
    with pytest.raises(SystemExit) as err:
        guidance.main(["--check", "--out", str(tmp_path)])
    assert err.value.code == 1
    with pytest.raises(SystemExit, match="--w-grid") as err:  # refused before any computation
        guidance.main(["--quick", "--out", str(tmp_path), "--w-grid", "0", "-1"])
    assert "w must be finite and >= 0" in str(err.value.code)


def test_classifier_signal_experiment_tiny(tmp_path):
    res = classifier_signal.main(["--quick", "--out", str(tmp_path), *TRAIN, "--n-heldout", "200"])
    assert (tmp_path / "classifier_signal.png").exists()
    for kind in classifier_signal.KINDS:
        assert len(res["auc_exact"][kind]) == len(res["t"]) == len(res["auc_learned"][kind])
        assert all(0.0 <= a <= 1.0 for a in res["auc_exact"][kind])
    assert res["auc_exact"]["coarse"][0] > 0.8  # exact classifier at t ≈ 2 t_min, coarse negatives
    assert classifier_signal.main(["--check", "--out", str(tmp_path)]) == {"check": "ok"}
    _tamper(tmp_path / "classifier_signal.json", lambda r: r["auc_exact"]["coarse"].__setitem__(0, 0.5))
    with pytest.raises(SystemExit) as err:
        classifier_signal.main(["--check", "--out", str(tmp_path)])
    assert err.value.code == 1


def test_filtering_experiment_tiny(tmp_path):
    res = filtering.main(["--quick", "--out", str(tmp_path), *SAMPLES, *TRAIN])
    assert (tmp_path / "filtering.png").exists()
    for rule in ("coarse rule", "fine rule"):
        gen = res[rule]["generated"]
        assert set(gen) == set(filtering.DETECTORS)
        for d in filtering.DETECTORS:
            assert 0.0 <= gen[d]["acceptance"] <= 1.0
            assert gen[d]["rho_after"] is None or math.isfinite(gen[d]["rho_after"])
    # the base is too wide (σ_r × 2): the oracle filter lowers ρ (coarse rule: at 10 sampler
    # steps the fine rule's samples are so far off that too few may be accepted to measure ρ)
    d = res["coarse rule"]["generated"]["oracle c=2"]
    assert d["rho_after"] < d["rho_before"]
    assert filtering.main(["--check", "--out", str(tmp_path)]) == {"check": "ok"}
