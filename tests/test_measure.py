"""`python -m dsmtheory.measure`: external (x, y) tables scored with the THEORY §4 metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dsmtheory.measure import MeasureInputError, load_xy, main, measure_file, parse_rule_params
from dsmtheory.metrics import rule_metrics_xy
from dsmtheory.rules import get_rule

REPO = Path(__file__).resolve().parent.parent
K, SIGMA_R, N = 3.0, 0.1, 3000


def rule_table(seed: int = 0, noise_scale: float = 1.0, n: int = N):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, n)
    y = np.sin(K * x) + noise_scale * SIGMA_R * rng.normal(size=n)
    return x, y


def write_csv(path: Path, columns: dict[str, np.ndarray]) -> Path:
    names = list(columns)
    data = np.column_stack([columns[c] for c in names])
    np.savetxt(path, data, delimiter=",", header=",".join(names), comments="")
    return path


@pytest.fixture
def good_csv(tmp_path):
    x, y = rule_table()
    return write_csv(tmp_path / "features.csv", {"x": x, "y": y})


# --------------------------------------------------------------------------- it measures


def test_csv_from_the_truth_has_rho_one_and_matches_the_library(good_csv, tmp_path, capsys):
    out = tmp_path / "res.json"
    rc = main([str(good_csv), "--rule", "sin", "--rule-param", f"k={K}", "--sigma-r", str(SIGMA_R),
               "--out", str(out), "--bins", "8"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "rho" in printed and "rho_fine" in printed and f"wrote {out}" in printed
    payload = json.loads(out.read_text())
    res = payload["results"]
    assert abs(res["rho"] - 1.0) < 4 * res["rho_se"]  # the truth has ρ = 1
    assert res["n"] == N and payload["config"]["rule"] == {"name": "sin", "k": K, "amplitude": 1.0}
    assert payload["config"]["metric_kwargs"] == {"n_bins": 8}
    assert len(payload["config"]["file_sha256"]) == 64
    assert {"git_commit", "versions"} <= set(payload["provenance"])
    # the CLI reports exactly the library metrics (no second implementation)
    x, y = rule_table()
    ref = rule_metrics_xy(x[:, None], y[:, None], get_rule("sin", k=K), SIGMA_R, n_bins=8)
    for key in ("rho", "violation_rate", "cond_w1", "coarse_ratio", "rho_fine"):
        assert res[key] == pytest.approx(ref[key], rel=1e-12)


def test_a_table_with_twice_the_rule_noise_has_rho_two(tmp_path):
    x, y = rule_table(seed=1, noise_scale=2.0)
    path = write_csv(tmp_path / "wide.csv", {"a": x, "b": y, "unused": np.zeros_like(x)})
    measured = measure_file(path, "sin", SIGMA_R, rule_params={"k": K}, x_col="a", y_col="b")
    assert measured["results"]["rho"] == pytest.approx(2.0, abs=0.1)
    # the wrong rule (k off) is detected as a coarse (trend) error
    wrong = measure_file(path, "sin", SIGMA_R, rule_params={"k": K * 1.3}, x_col="a", y_col="b")
    assert wrong["results"]["coarse_ratio"] > 3.0


def test_npz_with_1d_and_2d_arrays(tmp_path):
    x, y = rule_table(seed=2)
    path = tmp_path / "feat.npz"
    np.savez(path, sun=x[:, None], shadow=y)
    x2, y2 = load_xy(path, "sun", "shadow")
    assert x2.shape == (N, 1) and y2.shape == (N, 1)
    res = measure_file(path, "sin", SIGMA_R, rule_params={"k": K}, x_col="sun", y_col="shadow")["results"]
    assert abs(res["rho"] - 1.0) < 4 * res["rho_se"]


def test_default_output_is_named_after_the_input_in_the_working_directory(good_csv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([str(good_csv), "--rule", "sin", "--rule-param", f"k={K}", "--sigma-r", "0.1"]) == 0
    assert (tmp_path / "features.measure.json").exists()


def test_parse_rule_params():
    assert parse_rule_params(["k=8", "amplitude = 0.5"]) == {"k": 8.0, "amplitude": 0.5}
    assert parse_rule_params([]) == {}


# --------------------------------------------------------------------------- bad input


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    x, y = rule_table(n=50)
    files = {}
    files["empty"] = tmp_path / "empty.csv"
    files["empty"].write_text("\n\n")
    files["noheader"] = tmp_path / "noheader.csv"
    files["noheader"].write_text("0.1,0.2\n0.3,0.4\n")
    files["ragged"] = tmp_path / "ragged.csv"
    files["ragged"].write_text("x,y\n0.1,0.2\n0.3\n")
    files["text"] = tmp_path / "text.csv"
    files["text"].write_text("x,y\n0.1,0.2\n0.3,abc\n")
    files["nan"] = write_csv(tmp_path / "nan.csv", {"x": x, "y": np.where(np.arange(50) == 7, np.nan, y)})
    files["onerow"] = tmp_path / "onerow.csv"
    files["onerow"].write_text("x,y\n0.1,0.2\n")
    files["dupcol"] = tmp_path / "dup.csv"
    files["dupcol"].write_text("x,x\n0.1,0.2\n0.3,0.4\n")
    files["binary"] = tmp_path / "binary.csv"
    files["binary"].write_bytes(b"\xff\xfe\x00\x81\x82garbage")
    files["txt"] = tmp_path / "features.txt"
    files["txt"].write_text("x,y\n1,2\n")
    files["npz_inf"] = tmp_path / "inf.npz"
    np.savez(files["npz_inf"], x=x, y=np.where(np.arange(50) == 3, np.inf, y))
    files["npz_3d"] = tmp_path / "3d.npz"
    np.savez(files["npz_3d"], x=x.reshape(5, 5, 2), y=y)
    files["npz_len"] = tmp_path / "len.npz"
    np.savez(files["npz_len"], x=x, y=y[:40])
    files["npz_str"] = tmp_path / "str.npz"
    np.savez(files["npz_str"], x=np.array(["a"] * 50), y=y)
    files["npz_corrupt"] = tmp_path / "corrupt.npz"
    files["npz_corrupt"].write_bytes(b"PK\x03\x04 not really a zip")
    files["npz_2col"] = tmp_path / "twocol.npz"
    np.savez(files["npz_2col"], x=x, y=np.column_stack([y, y]))
    files["good"] = write_csv(tmp_path / "good.csv", {"x": x, "y": y})
    return files


BAD_CASES = [
    # (file key, extra argv, words the one-line message must contain)
    ("missing", [], "no such file"),
    ("txt", [], "unknown format '.txt'"),
    ("empty", [], "empty CSV"),
    ("noheader", [], "header row"),
    ("ragged", [], "line 3 has 1 fields"),
    ("text", [], "'abc' is not a number"),
    ("nan", [], "NaN or inf (first at data row 7)"),
    ("onerow", [], "at least 2"),
    ("dupcol", [], "repeats a column"),
    ("binary", [], "not a text CSV"),
    ("npz_inf", [], "NaN or inf (first at data row 3)"),
    ("npz_3d", [], "shape [n] or [n, d]"),
    ("npz_len", [], "x has 50 rows but y has 40"),
    ("npz_str", [], "real numbers"),
    ("npz_corrupt", [], "not a valid .npz"),
    ("npz_2col", [], "gives y with 1 column(s), got 2"),
    ("good", ["--y-col", "shadow"], "no column 'shadow' (--y-col); available: x, y"),
    ("good", ["--x-col", "y"], "same column is used for x and y"),
    ("good", ["--y-col", "y,"], "--y-col must be a column name"),
    ("good", ["--rule", "sine"], "unknown rule name 'sine'"),
    ("good", ["--rule-param", "k8"], "NAME=NUMBER"),
    ("good", ["--rule-param", "k=eight"], "'eight' is not a finite number"),
    ("good", ["--rule-param", "k=nan"], "not a finite number"),
    ("good", ["--rule-param", "freq=2"], "unexpected keyword argument 'freq'"),
    ("good", ["--rule-param", "k=-2"], "k must be finite and > 0"),
    ("good", ["--sigma-r", "-0.1"], "--sigma-r must be a finite number > 0"),
    ("good", ["--sigma-r", "abc"], "--sigma-r must be a finite number > 0"),
    ("good", ["--sigma-r", "inf"], "--sigma-r must be a finite number > 0"),
    ("good", ["--bins", "0"], "--bins must be an integer >= 1"),
    ("good", ["--bins", "many"], "--bins must be an integer >= 1"),
    ("good", ["--out", "/proc/forbidden/res.json"], "cannot write"),
]


@pytest.mark.parametrize("key, extra, words", BAD_CASES, ids=[f"{c[0]}{''.join(c[1])}" for c in BAD_CASES])
def test_bad_input_gets_one_line_error_and_exit_2(tmp_path, capsys, key, extra, words):
    files = _bad_files(tmp_path)
    path = files.get(key, tmp_path / "does_not_exist.csv")
    argv = [str(path), "--rule", "sin", "--rule-param", "k=3", "--sigma-r", "0.1", "--out", str(tmp_path / "o.json")]
    # later options win in argparse: extra flags override the defaults above
    rc = main(argv + extra)
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert words in lines[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "o.json").exists() or extra[:1] == ["--out"]


def test_missing_required_option(good_csv, capsys):
    assert main([str(good_csv), "--sigma-r", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--rule" in err and len(err.splitlines()) == 1


def test_load_xy_raises_value_error_subclass(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_xy(tmp_path / "nope.csv")
    assert issubclass(MeasureInputError, ValueError)


def test_module_cli_in_a_subprocess(tmp_path):
    """The real `python -m` entry: a bad file gives exit 2 and one line, no traceback."""
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n3,nan\n")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "dsmtheory.measure", str(bad), "--rule", "sin",
                           "--sigma-r", "0.1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {bad}: 1 row(s) of --y-col hold NaN or inf "
                                                "(first at data row 1)"]
