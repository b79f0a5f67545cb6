"""Results files: provenance, NaN refusal and atomic writes.

Every number a figure shows goes to a JSON file next to the PNG, with the
config, seed, package versions and git commit of the run that computed it.
Writes are atomic (write to a temporary file in the same folder, fsync, then
`os.replace`), so a run killed at any moment leaves either the old file or the
new one, never a partial one. Non-finite numbers are refused before writing:
NaNs never reach a results file.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


class NonFiniteResultError(ValueError):
    """A result contained NaN or ±inf; the path to the offending entry is in the message."""


def _package_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - a missing package is reported as None
        return None


def git_commit(repo: str | os.PathLike | None = None) -> str | None:
    """The current git commit (with '-dirty' when the tree has uncommitted changes), or None."""
    cwd = Path(repo) if repo is not None else Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        return sha + ("-dirty" if git_dirty_files(cwd) else "")
    except Exception:  # noqa: BLE001 - not a git checkout, or git missing
        return None


def git_dirty_files(repo: str | os.PathLike | None = None) -> list[str] | None:
    """Tracked files with uncommitted changes (so a '-dirty' commit says whether the code or only,
    say, the README differed from the commit), or None outside a git checkout."""
    cwd = Path(repo) if repo is not None else Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except Exception:  # noqa: BLE001 - not a git checkout, or git missing
        return None
    return [line[3:] for line in out.splitlines() if line.strip()]


def provenance() -> dict:
    """Versions, git commit, machine and time: attached to every results file."""
    import jax

    return {
        "git_commit": git_commit(),
        "git_dirty_files": git_dirty_files(),
        "versions": {
            name: _package_version(name)
            for name in ("dsmtheory", "jax", "jaxlib", "flax", "optax", "numpy", "chex", "matplotlib")
        },
        "python": platform.python_version(),
        "platform": platform.platform(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "x64": bool(jax.config.jax_enable_x64),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def to_jsonable(obj: Any, path: str = "$") -> Any:
    """Convert numpy/JAX scalars and arrays, dataclasses and tuples to JSON types,
    raising NonFiniteResultError (naming the entry) on NaN or ±inf."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, f"{path}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if not math.isfinite(x):
            raise NonFiniteResultError(f"non-finite value {x} at {path}; refusing to write it to a results file")
        return x
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):  # numpy or JAX array
        arr = np.asarray(obj)
        if arr.ndim == 0:
            return to_jsonable(arr.item(), path)
        return [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(arr.tolist())]
    raise TypeError(f"cannot write {type(obj).__name__} at {path} to JSON")


def _default_mode() -> int:
    """Permissions a plainly created file would get (mkstemp makes 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Call `write(tmp_path)` on a temporary file in `path`'s folder, then rename it onto
    `path` (same filesystem, so the rename is atomic); the temporary file never survives."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as JSON to `path` atomically (temp file + fsync + rename)."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False)  # refuses NaN before any file exists

    def write(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())

    return _atomic_write(path, write)


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as fh:
        return json.load(fh)


def save_figure_atomic(fig, path: str | os.PathLike, dpi: int = 130) -> Path:
    """Save a matplotlib figure atomically (temp file + rename)."""
    return _atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=Path(path).suffix[1:] or "png"))


def write_results(
    path: str | os.PathLike, *, experiment: str, config: dict, seed: int, results: dict, fig=None
) -> Path:
    """The one way an experiment writes its outputs: JSON (config, seed, provenance, results)
    at `path` (.json), and the figure, if given, as the PNG with the same stem."""
    path = Path(path).with_suffix(".json")
    payload = {
        "experiment": experiment,
        "config": config,
        "seed": int(seed),
        "provenance": provenance(),
        "results": results,
    }
    write_json_atomic(path, payload)  # validates (no NaN) before the figure is written
    if fig is not None:
        save_figure_atomic(fig, path.with_suffix(".png"))
    return path
