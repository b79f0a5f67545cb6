"""Sweep runner: ids, grids, atomic per-cell files, resume after SIGKILL, failures, grouping."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from dsmtheory import sweep
from dsmtheory.sweep import (
    SweepCellError,
    SweepConfigMismatchError,
    SweepError,
    SweepLockedError,
    cell_id,
    cell_path,
    load_sweep,
    product_cells,
    run_sweep,
    shape_key,
)

REPO = Path(__file__).resolve().parent.parent


def numeric_compute(cell: dict) -> dict:
    """A deterministic stand-in for a study cell (numbers depend only on the config)."""
    rng = np.random.default_rng([cell["seed"], cell["n"], int(1000 * cell["sigma_r"])])
    draws = rng.normal(size=cell.get("n_seeds", 4))
    return {"rho": (1.0 + cell["sigma_r"] / math.sqrt(cell["n"]) + 0.01 * draws).tolist(), "n": cell["n"]}


# --------------------------------------------------------------------------- ids and grids


def test_cell_id_is_canonical_and_stable():
    a = {"n": 256, "sigma_r": 0.1, "rule": "sin", "rule_params": {"k": 4.0, "amplitude": 1.0}, "grid": (1, 2)}
    b = {"rule_params": {"amplitude": 1.0, "k": 4.0}, "grid": [1, 2], "rule": "sin", "sigma_r": np.float64(0.1),
         "n": np.int64(256)}
    assert cell_id(a) == cell_id(b)
    # every value matters
    assert cell_id({**a, "n": 512}) != cell_id(a)
    assert cell_id({**a, "rule_params": {"k": 4.5, "amplitude": 1.0}}) != cell_id(a)
    assert cell_id({**a, "extra": None}) != cell_id(a)


def test_cell_id_hash_matches_sha256_of_canonical_json():
    import hashlib

    cell = {"n": 256, "sigma_r": 0.1, "rule": "sin"}
    expected = hashlib.sha256(b'{"n":256,"rule":"sin","sigma_r":0.1}').hexdigest()[:16]
    assert cell_id(cell) == f"n=256_rule=sin_sigma_r=0.1-{expected}"


def test_product_cells_merges_axes_into_base_and_nests_dotted_names():
    base = {"rule": "sin", "rule_params": {"amplitude": 1.0}, "n_seeds": 4}
    cells = product_cells(base, **{"rule_params.k": [1.0, 4.0]}, n=[256, 1024, 4096])
    assert len(cells) == 6
    assert cells[0] == {"rule": "sin", "rule_params": {"amplitude": 1.0, "k": 1.0}, "n_seeds": 4, "n": 256}
    assert [c["n"] for c in cells[:3]] == [256, 1024, 4096]  # last axis fastest
    assert base == {"rule": "sin", "rule_params": {"amplitude": 1.0}, "n_seeds": 4}  # base untouched
    assert len({cell_id(c) for c in cells}) == 6


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        ({"n": [0]}, ValueError, "'n'"),
        ({"n": [256.0]}, TypeError, "'n'"),
        ({"sigma_r": [-0.1]}, ValueError, "sigma_r"),
        ({"sigma_r": ["x"]}, TypeError, "sigma_r"),
        ({"D": [1]}, ValueError, "'D'"),
        ({"n": 256}, TypeError, "axis 'n'"),
        ({"n": []}, ValueError, "axis 'n'"),
        ({"n_seeds": [True]}, TypeError, "n_seeds"),
    ],
)
def test_product_cells_rejects_bad_axis_values(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        product_cells({"rule": "sin"}, **kwargs)


def test_run_sweep_rejects_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="compute"):
        run_sweep([{"n": 1}], "not callable", tmp_path)
    with pytest.raises(ValueError, match="on_error"):
        run_sweep([{"n": 1}], numeric_compute, tmp_path, on_error="ignore")
    with pytest.raises(TypeError, match=r"cells\[1\]"):
        run_sweep([{"n": 1}, 5], numeric_compute, tmp_path)
    with pytest.raises(ValueError, match="non-finite"):
        run_sweep([{"n": 1, "x": float("nan")}], numeric_compute, tmp_path)


# --------------------------------------------------------------------------- run, resume, validation


def test_rerun_skips_finished_cells_and_returns_identical_records(tmp_path):
    cells = product_cells({"seed": 0, "n_seeds": 3}, sigma_r=[0.1, 1.0], n=[256, 1024])
    calls = []

    def compute(cell):
        calls.append(cell_id(cell))
        return numeric_compute(cell)

    first = run_sweep(cells, compute, tmp_path)
    assert len(calls) == 4 and all(r["status"] == "ok" for r in first)
    stamps = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.glob("*.json")}
    assert len(stamps) == 4
    second = run_sweep(cells, compute, tmp_path)
    assert len(calls) == 4  # nothing recomputed
    assert [r["result"] for r in second] == [r["result"] for r in first]
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.glob("*.json")} == stamps
    # a stored result equals a fresh computation of the same cell
    assert load_sweep(tmp_path, cells[:1])[0]["result"] == json.loads(json.dumps(numeric_compute(cells[0])))
    assert len(load_sweep(tmp_path)) == 4
    # records carry config and provenance
    assert first[0]["config"] == cells[0] and "git_commit" in first[0]["provenance"]


def test_stored_config_must_match_the_cell(tmp_path):
    cells = [{"seed": 0, "n": 256, "sigma_r": 0.5}]
    run_sweep(cells, numeric_compute, tmp_path)
    path = cell_path(tmp_path, cells[0])
    record = json.loads(path.read_text())
    record["config"]["n"] = 512  # a hand-edited file
    path.write_text(json.dumps(record))
    with pytest.raises(SweepConfigMismatchError, match=path.name):
        run_sweep(cells, numeric_compute, tmp_path)
    path.write_text("{not json")
    with pytest.raises(SweepError, match="cannot read"):
        load_sweep(tmp_path, cells)
    with pytest.raises(SweepError, match="no stored result"):
        load_sweep(tmp_path, [{"seed": 0, "n": 1, "sigma_r": 0.5}])
    assert load_sweep(tmp_path, [{"seed": 0, "n": 1, "sigma_r": 0.5}], missing="none") == [None]


def test_nan_result_stops_the_run_naming_the_cell_and_writes_nothing(tmp_path):
    cells = product_cells({"seed": 0, "sigma_r": 0.5}, n=[256, 512, 1024])

    def diverging(cell):
        if cell["n"] == 512:
            return {"rho": [1.0, float("nan")]}
        return numeric_compute(cell)

    with pytest.raises(SweepCellError, match=r"n=512.*non-finite") as info:
        run_sweep(cells, diverging, tmp_path)
    assert info.value.config["n"] == 512
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".json")
    assert names == [cell_path(tmp_path, cells[0]).name]  # the finished cell only; no NaN file
    # an exception inside compute (e.g. training diverged) is reported the same way
    def boom(cell):
        raise FloatingPointError("loss diverged at step 17")

    with pytest.raises(SweepCellError, match="FloatingPointError: loss diverged at step 17"):
        run_sweep(cells, boom, tmp_path)


def test_record_mode_writes_failure_markers_and_retry_recomputes(tmp_path):
    cells = product_cells({"seed": 0, "sigma_r": 0.5}, n=[256, 512])
    calls = []

    def flaky(cell):
        calls.append(cell["n"])
        if cell["n"] == 512 and calls.count(512) == 1:
            return {"rho": float("inf")}
        return numeric_compute(cell)

    records = run_sweep(cells, flaky, tmp_path, on_error="record")
    assert [r["status"] for r in records] == ["ok", "failed"]
    assert "result" not in records[1] and "non-finite" in records[1]["error"]
    def refuse(token):
        raise AssertionError(f"non-finite token {token} in a results file")

    json.loads(cell_path(tmp_path, cells[1]).read_text(), parse_constant=refuse)  # strict JSON: no NaN/Infinity
    run_sweep(cells, flaky, tmp_path, on_error="record")
    assert calls == [256, 512]  # failure marker skipped
    records = run_sweep(cells, flaky, tmp_path, on_error="record", retry_failed=True)
    assert calls == [256, 512, 512] and [r["status"] for r in records] == ["ok", "ok"]


def test_one_runner_per_directory(tmp_path):
    with sweep._directory_lock(tmp_path):
        with pytest.raises(SweepLockedError, match="another sweep"):
            run_sweep([{"n": 1}], numeric_compute, tmp_path)
    run_sweep([{"n": 1, "seed": 0, "sigma_r": 1.0}], numeric_compute, tmp_path)  # lock released


def test_group_key_runs_shape_groups_together_and_shares_one_compilation(tmp_path):
    import jax
    import jax.numpy as jnp

    n_max = 64
    traces = []

    @jax.jit
    def padded_mean(values, mask):
        traces.append(values.shape)  # runs only while tracing
        return jnp.sum(values * mask) / jnp.sum(mask)

    def compute(cell):
        order.append((cell["width"], cell["n"]))
        values = jnp.arange(n_max, dtype=jnp.float32) * cell["width"]
        mask = (jnp.arange(n_max) < cell["n"]).astype(jnp.float32)
        return {"mean": float(padded_mean(values, mask))}

    # interleaved input order: width alternates fastest
    cells = [{"n": n, "width": w} for n in (8, 16, 32, 64) for w in (1, 2)]
    order = []
    records = run_sweep(cells, compute, tmp_path, group_key=shape_key(exclude=("n",)))
    assert order == [(1, 8), (1, 16), (1, 32), (1, 64), (2, 8), (2, 16), (2, 32), (2, 64)]
    assert len(traces) == 1  # one compiled program served every n and width
    # records come back in the caller's order, with the right numbers
    assert [r["result"]["mean"] for r in records] == pytest.approx(
        [w * (n - 1) / 2 for n in (8, 16, 32, 64) for w in (1, 2)])


# --------------------------------------------------------------------------- SIGKILL and resume

_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from dsmtheory.sweep import product_cells, run_sweep

    out_dir, counter, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])

    def compute(cell):
        with open(counter, "a") as fh:  # one line per computation actually started
            fh.write(json.dumps(cell, sort_keys=True) + "\\n")
        time.sleep(delay)
        rng = np.random.default_rng([cell["seed"], cell["n"], int(1000 * cell["sigma_r"])])
        return {"rho": (1.0 + cell["sigma_r"] * cell["n"] ** -0.5 + 0.01 * rng.normal(size=4)).tolist()}

    cells = product_cells({"seed": 3, "n_seeds": 4}, sigma_r=[0.1, 0.3, 1.0], n=[256, 512, 1024, 2048])
    run_sweep(cells, compute, out_dir)
    print("DONE")
    """
)
_CELLS = product_cells({"seed": 3, "n_seeds": 4}, sigma_r=[0.1, 0.3, 1.0], n=[256, 512, 1024, 2048])


def _launch(script: Path, out_dir: Path, counter: Path, delay: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, str(script), str(out_dir), str(counter), str(delay)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished(out_dir: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out_dir.glob("*.json")}


def test_sigkill_midway_then_rerun_completes_without_recomputing(tmp_path):
    script = tmp_path / "run_grid.py"
    script.write_text(_SCRIPT)
    out_dir, counter = tmp_path / "grid", tmp_path / "calls.txt"
    proc = _launch(script, out_dir, counter, delay=0.3)
    deadline = time.monotonic() + 120
    while len(list(out_dir.glob("*.json"))) < 4:  # wait until a third of the grid is stored
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "sweep subprocess made no progress"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    done_before = _finished(out_dir)
    assert 4 <= len(done_before) < len(_CELLS)  # killed midway
    for name, (_, data) in done_before.items():  # every stored file is complete, valid JSON
        assert json.loads(data)["status"] == "ok"
    # simulate a kill inside write_json_atomic: a leftover temporary file
    leftover = out_dir / f".{cell_path(out_dir, _CELLS[-1]).name}.abc123.tmp"
    leftover.write_text('{"partial": ')
    calls_before = counter.read_text().splitlines()

    proc = _launch(script, out_dir, counter, delay=0.0)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "DONE" in stdout

    assert not leftover.exists()
    assert not [p.name for p in out_dir.iterdir() if p.name.endswith(".tmp")]
    done_after = _finished(out_dir)
    assert len(done_after) == len(_CELLS)
    for name, stamp in done_before.items():  # finished cells untouched: same bytes, same mtime
        assert done_after[name] == stamp
    # the rerun computed exactly the cells without a file (the cell in flight at the kill included)
    calls_after = counter.read_text().splitlines()[len(calls_before):]
    rerun_ids = sorted(cell_id(json.loads(line)) for line in calls_after)
    missing_ids = sorted(cell_id(c) for c in _CELLS if cell_path(out_dir, c).name not in done_before)
    assert rerun_ids == missing_ids

    # the completed grid equals an uninterrupted run's numbers
    clean_dir = tmp_path / "clean"
    proc = _launch(script, clean_dir, tmp_path / "calls_clean.txt", delay=0.0)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    resumed = [r["result"] for r in load_sweep(out_dir, _CELLS)]
    clean = [r["result"] for r in load_sweep(clean_dir, _CELLS)]
    assert resumed == clean
