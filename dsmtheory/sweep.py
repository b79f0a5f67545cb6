"""Sweep runner: a grid of cells, one atomic JSON per cell, resumable (THEORY §5).

A *cell* is a plain dict of JSON-ready values: one point of the study grid
(family and rule, σ_r, ambient dimension D, n, schedule, network, width,
training steps, ...). Seeds are *not* a grid axis: a cell carries its seed
count (e.g. ``"n_seeds": 4``) and the compute function vmaps over seeds inside
the cell. Experiments build only the slice they need, with `product_cells`
(a product of a few axes merged into a base config) or any list of dicts.

Guarantees of `run_sweep`:

- **One file per cell.** The result of cell c is written to
  ``out_dir/<readable prefix>-<hash>.json`` where the hash is the SHA-256 of the
  cell's canonical JSON (sorted keys, compact separators), via
  `dsmtheory.results.write_json_atomic` (temporary file + fsync + rename): a
  run killed at any moment leaves either no file or a complete one.
- **Resume.** A cell whose file exists is not recomputed: its stored record is
  read back, and its stored config must equal the cell's canonical config
  (otherwise `SweepConfigMismatchError`, which can only come from a hand-edited
  file or a hash collision). Rerunning a killed sweep therefore computes only
  the missing cells and leaves finished files untouched (same bytes, same
  mtime), so the completed grid has the numbers an uninterrupted run has
  (given a deterministic compute function: explicit PRNG keys from the cell).
- **Leftovers.** Temporary files of a write interrupted by SIGKILL
  (``.NAME.json.XXXX.tmp``) are removed when the next run starts and are never
  read. One runner per ``out_dir`` at a time is enforced with an advisory lock
  (``fcntl.flock`` on ``out_dir/.sweep.lock``; the OS drops it when the
  holder dies, even by SIGKILL), so the cleanup never races a live writer.
- **Divergence.** Choice: a failing cell STOPS the run (default
  ``on_error="raise"``) with `SweepCellError` naming the cell id and config;
  the cause is chained. This covers an exception in the compute function (e.g.
  a training run that diverged) and a result holding NaN/±inf (refused by
  `to_jsonable`, so NaNs never reach a results file). Finished cells stay on
  disk, so after fixing the cause a rerun resumes. With ``on_error="record"``
  the failure is written as a marker file (``"status": "failed"`` plus the
  error message, no numbers) and the sweep continues; a rerun skips recorded
  failures unless ``retry_failed=True``.
- **Shared compilation.** `run_sweep(..., group_key=f)` runs cells grouped by
  ``f(cell)`` (groups in order of first appearance, cells keep their order
  inside a group), so cells that share array shapes run back to back and a
  jitted compute function reuses one compiled program (e.g. every n of an n
  sweep padded to n_max: ``group_key=shape_key(exclude=("n",))``). The
  compute function is responsible for the padding itself.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import itertools
import json
import math
import numbers
import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Sequence

from dsmtheory.results import NonFiniteResultError, provenance, read_json, to_jsonable, write_json_atomic

__all__ = [
    "AXES",
    "SweepError",
    "SweepCellError",
    "SweepConfigMismatchError",
    "SweepLockedError",
    "canonical_config",
    "cell_id",
    "cell_path",
    "product_cells",
    "shape_key",
    "run_sweep",
    "load_sweep",
]

# The named axes of the study grid (issue 4). A cell may carry any other keys
# (they are plain config); values on these axes are validated when present.
AXES: dict[str, str] = {
    "family": "family name, e.g. 'nonlinear', 'linear_gaussian', 'embedded'",
    "rule": "rule name (dsmtheory.rules.RULES), parameters under 'rule_params'",
    "rule_params": "dict of rule parameters, e.g. {'k': 4.0}",
    "sigma_r": "rule noise σ_r > 0",
    "D": "ambient dimension of the embedded rule, int >= 2",
    "n": "training-set size, int >= 1",
    "schedule": "schedule name (dsmtheory.schedules.SCHEDULES)",
    "network": "network name, e.g. 'mlp', 'two_layer', 'feature_local'",
    "width": "network width, int >= 1",
    "train_steps": "number of optimiser steps, int >= 1",
    "n_seeds": "number of seeds vmapped inside the cell, int >= 1",
    "seed": "base seed of the cell, int >= 0",
}

_POSITIVE_INT_AXES = {"D": 2, "n": 1, "width": 1, "train_steps": 1, "n_seeds": 1, "seed": 0}

_HASH_CHARS = 16
_PREFIX_MAX = 80
_TMP_RE = re.compile(r"^\..+\.json\..+\.tmp$")  # write_json_atomic's temp-file names
_LOCK_NAME = ".sweep.lock"


class SweepError(RuntimeError):
    """Base class of sweep-runner errors."""


class SweepCellError(SweepError):
    """A cell's computation failed (exception, divergence, or non-finite result)."""

    def __init__(self, cell_id: str, config: dict, message: str):
        super().__init__(f"sweep cell {cell_id} failed: {message}; config={json.dumps(config, sort_keys=True)}")
        self.cell_id = cell_id
        self.config = config


class SweepConfigMismatchError(SweepError):
    """A stored cell file does not hold the config its name claims."""


class SweepLockedError(SweepError):
    """Another live process is running a sweep in the same directory."""


# ---------------------------------------------------------------------------
# Cells: canonical form, ids, grids


def _validate_cell(cell: Any, where: str = "cell") -> None:
    if not isinstance(cell, dict):
        raise TypeError(f"{where} must be a dict of config values, got {type(cell).__name__}")
    for key in cell:
        if not isinstance(key, str):
            raise TypeError(f"{where} keys must be strings, got {key!r}")
    for axis, minimum in _POSITIVE_INT_AXES.items():
        if axis in cell:
            value = cell[axis]
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{where}[{axis!r}] must be an integer, got {value!r}")
            if int(value) < minimum:
                raise ValueError(f"{where}[{axis!r}] must be >= {minimum}, got {value!r}")
    if "sigma_r" in cell:
        value = cell["sigma_r"]
        try:
            ok = float(value) > 0 and math.isfinite(float(value))
        except (TypeError, ValueError):
            raise TypeError(f"{where}['sigma_r'] must be a positive real number, got {value!r}") from None
        if not ok:
            raise ValueError(f"{where}['sigma_r'] must be finite and > 0, got {value!r}")
    if "rule_params" in cell and not isinstance(cell["rule_params"], dict):
        raise TypeError(f"{where}['rule_params'] must be a dict, got {type(cell['rule_params']).__name__}")


def canonical_config(cell: dict) -> dict:
    """The cell as plain JSON types (numpy scalars -> Python numbers, tuples -> lists).

    Raises TypeError for values JSON cannot hold and NonFiniteResultError for NaN/inf.
    Note: 1 and 1.0 are different configs (they hash differently); build cells
    with consistent types.
    """
    _validate_cell(cell)
    return json.loads(json.dumps(to_jsonable(cell), sort_keys=True))


def _canonical_text(config: dict) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# Keys shown first in a cell file's readable prefix (the axes a sweep usually varies).
_PREFIX_ORDER = ("schedule", "n", "rule", "rule_params", "sigma_r", "D", "network", "width", "train_steps", "family")


def _readable_prefix(config: dict) -> str:
    parts = []
    keys = [k for k in _PREFIX_ORDER if k in config] + sorted(k for k in config if k not in _PREFIX_ORDER)
    for key in keys:
        value = config[key]
        if isinstance(value, dict):  # nested params, e.g. rule_params: k=4
            parts.extend(f"{k}={_short(v)}" for k, v in sorted(value.items())
                         if isinstance(v, (bool, int, float, str)))
        elif isinstance(value, (bool, int, float, str)):
            parts.append(f"{key}={_short(value)}")
    prefix = re.sub(r"[^A-Za-z0-9.=+-]+", "_", "_".join(parts)).strip("._")
    return prefix[:_PREFIX_MAX].rstrip("._") or "cell"


def cell_id(cell: dict) -> str:
    """Stable id of a cell: readable prefix + first 16 hex digits of SHA-256 of its canonical JSON.

    The hash alone identifies the cell; the prefix only helps a human find it.
    """
    config = canonical_config(cell)
    digest = hashlib.sha256(_canonical_text(config).encode()).hexdigest()[:_HASH_CHARS]
    return f"{_readable_prefix(config)}-{digest}"


def cell_path(out_dir: str | os.PathLike, cell: dict) -> Path:
    """Where `run_sweep` stores the cell's record."""
    return Path(out_dir) / f"{cell_id(cell)}.json"


def _set_dotted(cfg: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = cfg
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise ValueError(f"axis {dotted!r}: base config entry {key!r} is not a dict")
        node = child
    node[keys[-1]] = value


def product_cells(base: dict | None = None, **axes: Sequence[Any]) -> list[dict]:
    """Cells of the product of the given axes, each merged into a copy of `base`.

    Axis names may be dotted to set nested entries, e.g. ``product_cells({"rule":
    "sin", "rule_params": {"amplitude": 1.0}}, **{"rule_params.k": [1.0, 4.0]}, n=[256, 1024])``.
    Order: the last axis varies fastest (like itertools.product).
    """
    base = {} if base is None else base
    if not isinstance(base, dict):
        raise TypeError(f"base must be a dict, got {type(base).__name__}")
    names = list(axes)
    values = []
    for name in names:
        vals = axes[name]
        if isinstance(vals, (str, bytes, dict)) or not isinstance(vals, Iterable):
            raise TypeError(f"axis {name!r} must be a list of values, got {type(vals).__name__}")
        vals = list(vals)
        if not vals:
            raise ValueError(f"axis {name!r} has no values")
        values.append(vals)
    cells = []
    for combo in itertools.product(*values):
        cell = copy.deepcopy(base)
        for name, value in zip(names, combo):
            _set_dotted(cell, name, copy.deepcopy(value))
        _validate_cell(cell)
        cells.append(cell)
    return cells


def shape_key(exclude: Sequence[str] = ("n",)) -> Callable[[dict], str]:
    """A `group_key` for `run_sweep`: cells equal except on `exclude` share a group.

    Use with a compute function that pads the excluded axes (e.g. n to n_max),
    so the whole group runs on one compiled program.
    """
    exclude = tuple(exclude)

    def key(cell: dict) -> str:
        return _canonical_text({k: v for k, v in canonical_config(cell).items() if k not in exclude})

    return key


# ---------------------------------------------------------------------------
# Running and loading


@contextlib.contextmanager
def _directory_lock(out_dir: Path):
    path = out_dir / _LOCK_NAME
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepLockedError(
                f"another sweep is running in {out_dir} (lock {path} held); one runner per directory"
            ) from None
        yield
    finally:
        fh.close()  # closing releases the flock


def _clean_leftovers(out_dir: Path) -> list[str]:
    removed = []
    for entry in out_dir.iterdir():
        if entry.is_file() and _TMP_RE.match(entry.name):
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


def _read_record(path: Path, config: dict | None) -> dict:
    try:
        record = read_json(path)
    except (OSError, json.JSONDecodeError) as err:
        raise SweepError(f"cannot read sweep cell file {path}: {err}; delete it to recompute the cell") from err
    if not isinstance(record, dict) or "config" not in record or "status" not in record:
        raise SweepError(f"{path} is not a sweep cell record (no 'config'/'status'); delete it to recompute")
    if config is not None and record["config"] != config:
        raise SweepConfigMismatchError(
            f"{path} holds config {_canonical_text(record['config'])}, expected {_canonical_text(config)}"
        )
    return record


def _ordered(cells: list[dict], group_key: Callable[[dict], Hashable] | None) -> list[int]:
    if group_key is None:
        return list(range(len(cells)))
    groups: dict[Hashable, list[int]] = {}
    for i, cell in enumerate(cells):
        groups.setdefault(group_key(cell), []).append(i)
    return [i for members in groups.values() for i in members]


def run_sweep(
    cells: Sequence[dict],
    compute: Callable[[dict], dict],
    out_dir: str | os.PathLike,
    *,
    group_key: Callable[[dict], Hashable] | None = None,
    on_error: str = "raise",
    retry_failed: bool = False,
    quiet: bool = True,
) -> list[dict]:
    """Compute every cell not already stored in `out_dir`; return all records in `cells` order.

    Args:
      cells: list of config dicts (see module docstring); duplicates are computed once.
      compute: ``compute(cell) -> dict`` of JSON-ready results; must be
        deterministic given the cell (derive PRNG keys from the cell's seed).
        It receives a deep copy of the cell.
      out_dir: directory of the per-cell JSON files (created if missing).
      group_key: optional; cells with equal keys run back to back (shared compilation).
      on_error: "raise" (stop with SweepCellError) or "record" (write a failure marker, go on).
      retry_failed: recompute cells whose stored record is a failure marker.
      quiet: when False, print one line per cell (computed / skipped / failed).

    Returns:
      One record per cell: ``{"cell_id", "config", "status": "ok"|"failed",
      "result" (ok) | "error" (failed), "compute_seconds", "provenance"}``.
    """
    if not callable(compute):
        raise TypeError(f"compute must be callable, got {type(compute).__name__}")
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    if isinstance(cells, dict) or not isinstance(cells, Sequence):
        raise TypeError(f"cells must be a list of dicts, got {type(cells).__name__}")
    configs = []
    for i, cell in enumerate(cells):
        _validate_cell(cell, f"cells[{i}]")
        configs.append(canonical_config(cell))
    ids = [cell_id(c) for c in configs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {}
    prov = None  # provenance is computed once per run (it shells out to git)
    with _directory_lock(out):
        removed = _clean_leftovers(out)
        if removed and not quiet:
            print(f"[sweep] removed {len(removed)} leftover temporary file(s) from an interrupted write")
        for i in _ordered(configs, group_key):
            cid, config = ids[i], configs[i]
            if cid in records:
                continue
            path = out / f"{cid}.json"
            if path.exists():
                record = _read_record(path, config)
                if not (record["status"] == "failed" and retry_failed):
                    records[cid] = record
                    if not quiet:
                        print(f"[sweep] {cid}: stored ({record['status']}), skipped")
                    continue
            start = time.perf_counter()
            try:
                result = compute(copy.deepcopy(config))
                if not isinstance(result, dict):
                    raise TypeError(f"compute must return a dict, got {type(result).__name__}")
                result = to_jsonable(result)  # refuses NaN/inf before anything is written
            except Exception as err:  # noqa: BLE001 - re-raised or recorded, naming the cell
                kind = "non-finite result" if isinstance(err, NonFiniteResultError) else type(err).__name__
                message = f"{kind}: {err}"
                if on_error == "raise":
                    raise SweepCellError(cid, config, message) from err
                record = {"cell_id": cid, "config": config, "status": "failed", "error": message,
                          "compute_seconds": time.perf_counter() - start}
            else:
                record = {"cell_id": cid, "config": config, "status": "ok", "result": result,
                          "compute_seconds": time.perf_counter() - start}
            if prov is None:
                prov = provenance()
            record["provenance"] = prov
            write_json_atomic(path, record)
            records[cid] = record
            if not quiet:
                print(f"[sweep] {cid}: {record['status']} in {record['compute_seconds']:.2f}s")
    return [records[cid] for cid in ids]


def load_sweep(
    out_dir: str | os.PathLike, cells: Sequence[dict] | None = None, *, missing: str = "raise"
) -> list[dict]:
    """Read stored records.

    With `cells`: the records of those cells in that order (configs validated);
    a cell with no file raises SweepError (``missing="raise"``) or gives None
    (``missing="none"``). Without `cells`: every record in the directory,
    sorted by cell id. Temporary files of interrupted writes are ignored.
    """
    if missing not in ("raise", "none"):
        raise ValueError(f"missing must be 'raise' or 'none', got {missing!r}")
    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"sweep directory {out} does not exist")
    if cells is None:
        return [_read_record(p, None) for p in sorted(out.glob("*.json")) if not p.name.startswith(".")]
    records = []
    for cell in cells:
        config = canonical_config(cell)
        path = out / f"{cell_id(config)}.json"
        if not path.exists():
            if missing == "raise":
                raise SweepError(f"cell {cell_id(config)} has no stored result in {out}")
            records.append(None)
            continue
        records.append(_read_record(path, config))
    return records
