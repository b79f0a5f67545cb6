"""Issue 8: reproducibility and provenance.

- the same config and seed give bit-identical numbers on the same machine (training,
  sampling with a learned score, a sweep cell computed twice into two directories),
  while a different seed gives different numbers (so the equality is not vacuous);
- every results JSON under figures/ carries config, seed, provenance.versions and
  provenance.git_commit;
- every experiment module exposes main(argv) and the common flags (--quick, --out,
  --seed, --check), and one --check runs end to end (oracle_check, the cheapest: no
  training) and agrees, and reports a disagreement when the stored JSON is tampered with.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsmtheory import samplers
from dsmtheory.dsm import TrainConfig, learned_score, train
from dsmtheory.families import LinearGaussian
from dsmtheory.networks import network_config
from dsmtheory.schedules import VPLinear

REPO = Path(__file__).resolve().parents[1]


def _family():
    return LinearGaussian.create(mu_x=(0.0,), cov_x=[[1.0]], A=[[0.5]], b=[0.0], sigma_r=0.2)


def _config(n_steps=8):
    return TrainConfig(network=network_config("mlp", 2, width=16, depth=1), n_steps=n_steps, batch_size=32,
                       warmup=0, log_every=4, eval_size=64, lr=1e-2)


def _train_and_sample(seed: int, n_steps: int = 8) -> dict:
    """Train a tiny model from `seed` and sample from it; everything derived from the seed."""
    key = jax.random.PRNGKey(seed)
    k_data, k_train, k_sample = jax.random.split(key, 3)
    fam = _family()
    sched = VPLinear()
    data = fam.sample(k_data, 64)
    result = train(k_train, data, sched, _config(n_steps), family=fam)
    samples = samplers.sample(learned_score(result), sched, k_sample, 32, 2, method="ddim", n_steps=6)
    return {
        "params": [np.asarray(x) for x in jax.tree_util.tree_leaves(result.params)],
        "history": {k: np.asarray(v) for k, v in result.history.items()},
        "samples": np.asarray(samples),
    }


def _assert_identical(a: dict, b: dict):
    assert len(a["params"]) == len(b["params"])
    for x, y in zip(a["params"], b["params"]):
        np.testing.assert_array_equal(x, y)
    assert a["history"].keys() == b["history"].keys()
    for k in a["history"]:
        np.testing.assert_array_equal(a["history"][k], b["history"][k])
    np.testing.assert_array_equal(a["samples"], b["samples"])


def test_training_and_sampling_are_reproducible():
    first = _train_and_sample(seed=11)
    second = _train_and_sample(seed=11)
    _assert_identical(first, second)
    assert np.all(np.isfinite(first["samples"]))
    # a different seed must change the numbers, or the equality above proves nothing
    other = _train_and_sample(seed=12)
    assert not np.array_equal(first["samples"], other["samples"])
    assert not all(np.array_equal(x, y) for x, y in zip(first["params"], other["params"]))


def test_exact_score_sampling_is_reproducible():
    fam, sched = _family(), VPLinear()
    for method in ("euler_maruyama", "ddim"):
        a = samplers.sample(fam.score_fn(sched), sched, jax.random.PRNGKey(5), 64, 2, method=method, n_steps=10)
        b = samplers.sample(fam.score_fn(sched), sched, jax.random.PRNGKey(5), 64, 2, method=method, n_steps=10)
        c = samplers.sample(fam.score_fn(sched), sched, jax.random.PRNGKey(6), 64, 2, method=method, n_steps=10)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(a), np.asarray(c))


def _cell_compute(cell: dict) -> dict:
    """A tiny sweep cell: train + sample + ρ, all keyed by the cell's seed."""
    from dsmtheory.metrics import rule_metrics

    out = _train_and_sample(cell["seed"], cell["train_steps"])
    m = rule_metrics(out["samples"], _family(), n_bins=2)
    return {"rho": m["rho"], "coarse_ratio": m["coarse_ratio"], "final_loss": float(out["history"]["loss"][-1])
            if "loss" in out["history"] else None, "sample_sum": float(out["samples"].sum())}


def test_sweep_cell_is_reproducible(tmp_path):
    from dsmtheory.sweep import run_sweep

    cells = [{"seed": 21, "train_steps": 8}, {"seed": 22, "train_steps": 8}]
    rec_a = run_sweep(cells, _cell_compute, tmp_path / "a")
    rec_b = run_sweep(cells, _cell_compute, tmp_path / "b")
    assert [r["status"] for r in rec_a + rec_b] == ["ok"] * 4
    for ra, rb in zip(rec_a, rec_b):
        assert ra["cell_id"] == rb["cell_id"]
        assert ra["result"] == rb["result"]  # exact equality of the stored floats
    assert rec_a[0]["result"]["sample_sum"] != rec_a[1]["result"]["sample_sum"]
    # both directories hold one stored record per cell
    assert len(list((tmp_path / "a").glob("*.json"))) == len(list((tmp_path / "b").glob("*.json"))) == 2


# ------------------------------------------------------------------------------------ provenance
FIGURE_JSONS = sorted(p for p in (REPO / "figures").rglob("*.json") if not any(
    part.startswith("_tmp") for part in p.relative_to(REPO / "figures").parts))


@pytest.mark.skipif(not FIGURE_JSONS, reason="no results JSON under figures/ yet (run an experiment first)")
@pytest.mark.parametrize("path", FIGURE_JSONS, ids=[p.name for p in FIGURE_JSONS])
def test_results_json_carries_provenance(path):
    payload = json.loads(path.read_text())
    for key in ("experiment", "config", "seed", "provenance", "results"):
        assert key in payload, f"{path.name} lacks {key!r}"
    assert isinstance(payload["config"], dict) and payload["config"], "config must be a non-empty dict"
    assert isinstance(payload["seed"], int) and not isinstance(payload["seed"], bool)
    prov = payload["provenance"]
    versions = prov.get("versions")
    assert isinstance(versions, dict)
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy"):
        assert isinstance(versions.get(pkg), str) and versions[pkg], f"{path.name}: no version of {pkg}"
    commit = prov.get("git_commit")
    assert isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit), commit


# ------------------------------------------------------------------------------------ experiments
EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.py") if not p.stem.startswith("_"))


def test_experiments_found():
    assert len(EXPERIMENTS) >= 5, EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_exposes_main_and_common_flags(name, capsys):
    mod = importlib.import_module(f"experiments.{name}")
    assert callable(getattr(mod, "main", None)), f"experiments.{name} has no main()"
    params = list(inspect.signature(mod.main).parameters)
    assert params[:1] == ["argv"], f"main must take argv, got {params}"
    with pytest.raises(SystemExit) as info:
        mod.main(["--help"])
    assert info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--quick", "--out", "--seed", "--check"):
        assert flag in help_text, f"experiments.{name} --help does not list {flag}"


ORACLE_FLAGS = ["--quick", "--families", "linear_gaussian", "--schedules", "vp_linear", "--samplers", "ddim",
                "--n-samples", "40", "--floors", "1", "--steps", "6", "--quiet"]


def test_oracle_check_check_mode_end_to_end(tmp_path, capsys):
    """Run the cheapest experiment at a tiny size, then --check it (agree), then tamper with
    one stored ρ and --check again (must disagree)."""
    oc = importlib.import_module("experiments.oracle_check")
    out = tmp_path / "figs"
    oc.main([*ORACLE_FLAGS, "--out", str(out)])
    stored_path = out / "oracle_check.json"
    assert stored_path.exists() and (out / "oracle_check.png").exists()
    stored = json.loads(stored_path.read_text())
    assert stored["seed"] == 0 and stored["provenance"]["git_commit"]

    result = oc.main(["--check", "--out", str(out), "--quiet"])["check"]
    assert result["agree"] is True, result
    assert result["max_rel_diff"] is not None and result["max_rel_diff"] <= result["rtol"]

    cell = stored["results"]["families"]["linear_gaussian"]["schedules"]["vp_linear"]["samplers"]["ddim"]
    values = cell["rho_denoised_vs_steps"]
    i = next(j for j, v in enumerate(values) if v is not None)
    values[i] = values[i] * 1.5
    stored_path.write_text(json.dumps(stored))
    tampered = oc.main(["--check", "--out", str(out), "--quiet"])["check"]
    assert tampered["agree"] is False and tampered["max_rel_diff"] > tampered["rtol"]
    capsys.readouterr()


def test_provenance_lists_the_files_that_make_a_commit_dirty(tmp_path):
    import subprocess

    from dsmtheory.results import git_commit, git_dirty_files

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("doc\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert git_dirty_files(tmp_path) == [] and not git_commit(tmp_path).endswith("-dirty")
    (tmp_path / "README.md").write_text("changed\n")
    (tmp_path / "untracked.txt").write_text("ignored: not tracked\n")
    assert git_dirty_files(tmp_path) == ["README.md"] and git_commit(tmp_path).endswith("-dirty")
    assert git_dirty_files(tmp_path / "nonexistent") is None
