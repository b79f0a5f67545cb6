"""Score rule conformity of an external table of (x, y) features (THEORY §4).

Usage::

    python -m dsmtheory.measure FILE.csv|FILE.npz --rule NAME [--rule-param k=8 ...]
        --sigma-r S [--x-col x] [--y-col y] [--bins B] [--out results.json]

The features may come from anywhere (e.g. measured from another model's
generated images by an extractor). The same §4 metrics as for the toolkit's own
samples are computed by `dsmtheory.metrics.rule_metrics_xy` (ρ, violation rate,
conditional distance, coarse error, ...) for the rule y = f(x) named by
``--rule`` (`dsmtheory.rules.get_rule`) with rule noise σ_r = ``--sigma-r``.

Input formats:

- **CSV**: a header row naming the columns, then one row per sample, numbers
  only (comma-separated; blank lines ignored).
- **NPZ**: arrays named by ``--x-col`` / ``--y-col``, each of shape [n] or [n, d].

Several columns may be given as a comma-separated list (``--y-col y1,y2``)
for multi-dimensional features. The table is printed and written as JSON
(atomically, with provenance) to ``--out``, by default ``<FILE stem>.measure.json``
in the current directory.

Bad input (missing file, unknown format, malformed CSV, missing columns,
NaN/inf, mismatched lengths, wrong shapes, unknown rule, bad parameters) ends
with a one-line ``error: ...`` on stderr and exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["MeasureInputError", "load_xy", "parse_rule_params", "measure_xy", "measure_file", "main"]

MIN_ROWS = 2


class MeasureInputError(ValueError):
    """Bad input to the measure tool; the message is one line meant for the user."""


# --------------------------------------------------------------------------- loading


def _columns(spec: str, option: str) -> list[str]:
    names = [c.strip() for c in str(spec).split(",")]
    if not names or any(not c for c in names):
        raise MeasureInputError(f"{option} must be a column name or a comma-separated list of names, got {spec!r}")
    if len(set(names)) != len(names):
        raise MeasureInputError(f"{option} names a column twice: {spec!r}")
    return names


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_csv(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, newline="") as fh:
            rows = [row for row in csv.reader(fh)]
    except UnicodeDecodeError:
        raise MeasureInputError(f"{path}: not a text CSV file (cannot decode it as text)") from None
    except csv.Error as err:
        raise MeasureInputError(f"{path}: malformed CSV: {err}") from None
    numbered = [(i + 1, row) for i, row in enumerate(rows) if any(cell.strip() for cell in row)]
    if not numbered:
        raise MeasureInputError(f"{path}: empty CSV file (expected a header row and data rows)")
    header_line, header = numbered[0]
    header = [h.strip() for h in header]
    if any(not h for h in header):
        raise MeasureInputError(f"{path}: the header row (line {header_line}) has an empty column name")
    if len(set(header)) != len(header):
        raise MeasureInputError(f"{path}: the header row (line {header_line}) repeats a column name")
    if all(_is_number(h) for h in header):  # a header made only of numbers is a missing header
        raise MeasureInputError(f"{path}: the first row (line {header_line}) holds numbers; a header row naming "
                                "the columns is required")
    data = np.empty((len(numbered) - 1, len(header)), dtype=np.float64)
    for r, (line, row) in enumerate(numbered[1:]):
        if len(row) != len(header):
            raise MeasureInputError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}")
        for c, cell in enumerate(row):
            try:
                data[r, c] = float(cell)
            except ValueError:
                raise MeasureInputError(
                    f"{path}: line {line}, column {header[c]!r}: {cell.strip()!r} is not a number") from None
    return {name: data[:, c] for c, name in enumerate(header)}


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise MeasureInputError(f"{path}: a .npz archive of named arrays is required, found a single array")
            return {name: archive[name] for name in archive.files}
    except MeasureInputError:
        raise
    except ValueError as err:  # object arrays need pickle: refused
        raise MeasureInputError(f"{path}: unreadable .npz ({err})") from None
    except Exception as err:  # noqa: BLE001 - zipfile.BadZipFile, OSError, EOFError...
        raise MeasureInputError(f"{path}: not a valid .npz file ({type(err).__name__}: {err})") from None


def _stack(table: dict[str, np.ndarray], names: list[str], path: Path, option: str) -> np.ndarray:
    missing = [n for n in names if n not in table]
    if missing:
        raise MeasureInputError(
            f"{path}: no column {missing[0]!r} ({option}); available: {', '.join(sorted(table)) or 'none'}")
    parts = []
    for name in names:
        arr = np.asarray(table[name])
        if arr.dtype.kind not in "biuf":
            raise MeasureInputError(f"{path}: column {name!r} must hold real numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise MeasureInputError(f"{path}: column {name!r} must have shape [n] or [n, d], got {arr.shape}")
        parts.append(arr)
    lengths = {p.shape[0] for p in parts}
    if len(lengths) != 1:
        raise MeasureInputError(f"{path}: the {option} columns have different lengths {sorted(lengths)}")
    out = np.concatenate(parts, axis=1)
    bad = ~np.isfinite(out)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise MeasureInputError(
            f"{path}: {int(bad.any(axis=1).sum())} row(s) of {option} hold NaN or inf (first at data row {row})")
    return out


def load_xy(path: str | Path, x_col: str = "x", y_col: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """Read features x [n, dx] and y [n, dy] from a CSV or NPZ file (see module docstring).

    Raises MeasureInputError (a ValueError) with a one-line message on any bad input.
    """
    path = Path(path)
    if not path.exists():
        raise MeasureInputError(f"{path}: no such file")
    if not path.is_file():
        raise MeasureInputError(f"{path}: not a regular file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        table = _load_csv(path)
    elif suffix == ".npz":
        table = _load_npz(path)
    else:
        raise MeasureInputError(f"{path}: unknown format {suffix or '(no extension)'!r}; use .csv or .npz")
    x_names, y_names = _columns(x_col, "--x-col"), _columns(y_col, "--y-col")
    if set(x_names) & set(y_names):
        raise MeasureInputError(f"the same column is used for x and y: {sorted(set(x_names) & set(y_names))}")
    x = _stack(table, x_names, path, "--x-col")
    y = _stack(table, y_names, path, "--y-col")
    if x.shape[0] != y.shape[0]:
        raise MeasureInputError(f"{path}: x has {x.shape[0]} rows but y has {y.shape[0]}")
    if x.shape[0] < MIN_ROWS:
        raise MeasureInputError(f"{path}: {x.shape[0]} data row(s); at least {MIN_ROWS} are needed")
    return x, y


# --------------------------------------------------------------------------- rule and metrics


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def parse_rule_params(items: Sequence[str]) -> dict[str, float]:
    """['k=8', 'amplitude=0.5'] -> {'k': 8.0, 'amplitude': 0.5}."""
    params: dict[str, float] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise MeasureInputError(f"--rule-param must look like NAME=NUMBER, got {item!r}")
        try:
            params[key] = _number(value.strip())
        except ValueError:
            raise MeasureInputError(f"--rule-param {key}: {value.strip()!r} is not a finite number") from None
    return params


def _make_rule(name: str, params: dict[str, float]):
    from dsmtheory.rules import get_rule

    try:
        return get_rule(name, **params)
    except TypeError as err:  # unexpected keyword: name the parameter
        raise MeasureInputError(f"--rule-param for rule {name!r}: {err}") from None
    except ValueError as err:
        raise MeasureInputError(f"--rule {name!r}: {err}") from None


def _rule_output_dim(rule, x: np.ndarray) -> int:
    import jax.numpy as jnp

    out = np.asarray(rule(jnp.asarray(x[:1])))
    return 1 if out.ndim < 2 else int(out.shape[-1])


def _as_metric_dict(result: Any) -> dict:
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    if hasattr(result, "to_dict"):
        return dict(result.to_dict())
    if isinstance(result, dict):
        return dict(result)
    raise TypeError(f"rule_metrics_xy returned {type(result).__name__}, expected a dict or dataclass")


def measure_xy(x: np.ndarray, y: np.ndarray, rule, sigma_r: float, **metric_kwargs) -> dict:
    """The THEORY §4 metrics of features (x, y) for `rule` and σ_r (via dsmtheory.metrics)."""
    from dsmtheory.metrics import rule_metrics_xy

    if not (isinstance(sigma_r, (int, float)) and math.isfinite(sigma_r) and sigma_r > 0):
        raise MeasureInputError(f"--sigma-r must be a finite number > 0, got {sigma_r!r}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[1] != getattr(rule, "dx", x.shape[1]):
        raise MeasureInputError(f"rule {rule.name!r} takes x with {rule.dx} column(s), got {x.shape[1]}")
    dy = _rule_output_dim(rule, x)
    if y.shape[1] != dy:
        raise MeasureInputError(f"rule {rule.name!r} gives y with {dy} column(s), got {y.shape[1]}")
    return _as_metric_dict(rule_metrics_xy(x, y, rule, sigma_r, **metric_kwargs))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def measure_file(
    path: str | Path,
    rule_name: str,
    sigma_r: float,
    *,
    rule_params: dict[str, float] | None = None,
    x_col: str = "x",
    y_col: str = "y",
    metric_kwargs: dict | None = None,
) -> dict:
    """Load a table, score it, and return ``{"config": ..., "results": ...}`` (JSON-ready)."""
    path = Path(path)
    x, y = load_xy(path, x_col, y_col)
    rule = _make_rule(rule_name, dict(rule_params or {}))
    metrics = measure_xy(x, y, rule, sigma_r, **dict(metric_kwargs or {}))
    config = {
        "file": str(path),
        "file_sha256": _sha256(path),
        "x_col": x_col,
        "y_col": y_col,
        "n_rows": int(x.shape[0]),
        "rule": rule.to_config(),
        "sigma_r": float(sigma_r),
        "metric_kwargs": dict(metric_kwargs or {}),
    }
    return {"config": config, "results": metrics}


# --------------------------------------------------------------------------- CLI


def _format_value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_value(v) for v in value[:6]) + (", ...]" if len(value) > 6 else "]")
    return str(value)


def format_table(results: dict) -> str:
    """A two-column text table of the metrics."""
    rows = [(str(k), _format_value(v)) for k, v in results.items()]
    width = max([len("metric")] + [len(k) for k, _ in rows])
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 12}"]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise MeasureInputError(message)


def _parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(prog="python -m dsmtheory.measure", description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="CSV (with header) or NPZ of features")
    p.add_argument("--rule", required=True, help="rule name (dsmtheory.rules.RULES)")
    p.add_argument("--rule-param", action="append", default=[], metavar="NAME=VALUE",
                   help="rule parameter, repeatable (e.g. --rule-param k=8)")
    p.add_argument("--sigma-r", required=True, type=str, help="rule noise σ_r > 0")
    p.add_argument("--x-col", default="x", help="x column(s), comma-separated (default x)")
    p.add_argument("--y-col", default="y", help="y column(s), comma-separated (default y)")
    p.add_argument("--bins", type=str, default=None, help="number of x-quantile bins for the conditional metrics")
    p.add_argument("--out", default=None, help="JSON output (default ./<FILE stem>.measure.json)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 2 bad input)."""
    from dsmtheory.results import provenance, write_json_atomic

    try:
        args = _parser().parse_args(argv)
        try:
            sigma_r = _number(args.sigma_r)
        except ValueError:
            raise MeasureInputError(f"--sigma-r must be a finite number > 0, got {args.sigma_r!r}") from None
        if sigma_r <= 0:
            raise MeasureInputError(f"--sigma-r must be a finite number > 0, got {args.sigma_r!r}")
        metric_kwargs = {}
        if args.bins is not None:
            try:
                bins = int(args.bins)
            except ValueError:
                raise MeasureInputError(f"--bins must be an integer >= 1, got {args.bins!r}") from None
            if bins < 1:
                raise MeasureInputError(f"--bins must be an integer >= 1, got {args.bins!r}")
            metric_kwargs["n_bins"] = bins
        measured = measure_file(args.file, args.rule, sigma_r, rule_params=parse_rule_params(args.rule_param),
                                x_col=args.x_col, y_col=args.y_col, metric_kwargs=metric_kwargs)
        out = Path(args.out) if args.out else Path.cwd() / f"{Path(args.file).stem}.measure.json"
        payload = {"tool": "dsmtheory.measure", **measured, "provenance": provenance()}
        try:
            write_json_atomic(out, payload)
        except OSError as err:
            raise MeasureInputError(f"cannot write {out}: {err.strerror or err}") from None
    except (MeasureInputError, ValueError, TypeError) as err:
        # library validation errors (ValueError/TypeError naming the parameter) are bad input too
        message = " ".join(str(err).split())
        print(f"error: {message}", file=sys.stderr)
        return 2
    rule_cfg = dict(measured["config"]["rule"])
    rule_text = rule_cfg.pop("name") + "(" + ", ".join(f"{k}={_format_value(v)}" for k, v in rule_cfg.items()) + ")"
    print(f"{args.file}: rule {rule_text}, sigma_r={sigma_r:g}, n={measured['config']['n_rows']}")
    print(format_table(measured["results"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
