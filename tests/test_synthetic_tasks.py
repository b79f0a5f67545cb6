"""Smoke test of experiments/synthetic_tasks.py at a tiny size (THEORY §7)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import synthetic_tasks

# 256 training images and 2 × 128 generated ones: the same batch shapes as tests/test_images.py,
# so the compiled renderer and extractor are shared when both modules run in one process
TINY = ["--quick", "--tasks", "ratio", "--n-values", "128,256", "--train-steps", "20",
        "--samples", "128", "--sample-steps", "5", "--width", "16", "--seed", "3"]


def test_tiny_run_writes_results_and_check_detects_tampering(tmp_path):
    out = ["--out", str(tmp_path)]
    res = synthetic_tasks.main(TINY + out)
    json_path = tmp_path / "synthetic_tasks_quick.json"
    assert json_path.exists() and (tmp_path / "synthetic_tasks_quick.png").exists()
    task = res["tasks"]["ratio"]
    assert [g["n"] for g in task["generated"]] == [128, 256]
    # the training images measured through the extractor obey the rule (ρ near 1 for 256
    # samples, whose ρ has standard error ≈ 1/√512 ≈ 0.045) and the extractor is exact
    train = task["training_data"]
    assert 0.8 < train["metrics"]["rho"] < 1.2
    assert abs(train["metrics"]["rho"] / train["rho_true_features"] - 1) < 0.01
    assert train["extractor_error"]["max_abs_y_error_over_sigma_r"] < 0.1
    for g in task["generated"]:
        assert np.isfinite(g["metrics"]["rho"]) and g["metrics"]["rho"] > 0
        assert 0.0 <= g["metrics"]["violation_rate"] <= 1.0

    assert synthetic_tasks.main(TINY + out + ["--check"])["check_ok"]
    payload = json.loads(json_path.read_text())
    payload["results"]["tasks"]["ratio"]["training_data"]["metrics"]["rho"] *= 1.5
    json_path.write_text(json.dumps(payload))
    with pytest.raises(SystemExit) as exc:
        synthetic_tasks.main(TINY + out + ["--check"])
    assert exc.value.code == 1


def test_bad_task_name_is_refused():
    with pytest.raises(SystemExit):
        synthetic_tasks.main(["--quick", "--tasks", "teapot"])
