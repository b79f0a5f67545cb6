"""Save / restore trained score models with their configuration.

A checkpoint is two files next to each other:

    NAME.msgpack   flax.serialization msgpack of {"params": ..., "ema_params": ...}
    NAME.json      the TrainConfig, the schedule's config, ensemble size, n_valid,
                   the final history entry and provenance (versions, git commit)

Both are written atomically (temporary file in the same folder + fsync +
os.replace, as `dsmtheory.results.write_json_atomic`), the weights first, so a
killed save never leaves a JSON sidecar pointing at missing or partial weights.
A restored result is an ordinary `TrainResult`: `dsm.learned_score(restore(...))`
gives the same score values as before saving and plugs into every sampler.

Models built from `config.network` are rebuilt from the JSON alone; a custom
flax module (trained with `train(..., model=...)`) must be passed to `restore`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from dsmtheory.dsm import TrainConfig, TrainResult
from dsmtheory.results import provenance, read_json, to_jsonable, write_json_atomic
from dsmtheory.schedules import schedule_from_config

FORMAT_VERSION = 1


def _paths(path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".json", ".msgpack"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".msgpack"), p.with_name(p.name + ".json")


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(path, result: TrainResult) -> tuple[Path, Path]:
    """Write `result` (single model or ensemble) to PATH.msgpack + PATH.json; returns both paths."""
    if not isinstance(result, TrainResult):
        raise TypeError(f"save expects a TrainResult, got {type(result).__name__}")
    weights_path, meta_path = _paths(path)
    state = {"params": jax.device_get(result.params)}
    if result.ema_params is not None:
        state["ema_params"] = jax.device_get(result.ema_params)
    leaves = jax.tree_util.tree_leaves(state)
    if not all(np.all(np.isfinite(np.asarray(x))) for x in leaves):
        raise ValueError("refusing to save non-finite parameters")
    _write_bytes_atomic(weights_path, serialization.msgpack_serialize(serialization.to_state_dict(state)))
    meta = {
        "format_version": FORMAT_VERSION,
        "train_config": result.config.to_dict(),
        "schedule": result.schedule.to_config(),
        "ensemble_size": result.ensemble_size,
        "n_valid": np.asarray(result.n_valid).tolist(),
        "has_ema": result.ema_params is not None,
        "custom_model": None if result.config.network is not None else repr(result.model),
        "final": {k: np.asarray(v).tolist() for k, v in result.final.items()},
        "weights_file": weights_path.name,
        "provenance": provenance(),
    }
    write_json_atomic(meta_path, to_jsonable(meta))
    return weights_path, meta_path


def restore(path, *, model=None) -> TrainResult:
    """Read a checkpoint written by `save`. `model` is needed only for custom modules.

    The returned TrainResult has the saved params/EMA params, config, schedule and
    n_valid; its history holds only the final entry (one chunk) of the saved run."""
    weights_path, meta_path = _paths(path)
    if not meta_path.exists() or not weights_path.exists():
        raise FileNotFoundError(f"checkpoint needs both {weights_path} and {meta_path}")
    meta = read_json(meta_path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported checkpoint format {meta.get('format_version')!r} in {meta_path}")
    config = TrainConfig.from_dict(meta["train_config"])
    schedule = schedule_from_config(meta["schedule"])
    if model is None:
        if config.network is None:
            raise ValueError("this checkpoint holds a custom model: pass model= (the same flax module) to restore")
        model = config.network.build(schedule)
    state = serialization.msgpack_restore(weights_path.read_bytes())
    to_jax = lambda tree: jax.tree_util.tree_map(jax.numpy.asarray, tree)  # noqa: E731
    params = to_jax(state["params"])
    ema = to_jax(state["ema_params"]) if meta["has_ema"] else None
    n_valid = meta["n_valid"]
    n_valid = np.asarray(n_valid, np.int32) if meta["ensemble_size"] is not None else int(n_valid)
    history = {k: np.asarray(v)[..., None] for k, v in meta["final"].items()}
    return TrainResult(params=params, ema_params=ema, history=history, config=config, model=model,
                       schedule=schedule, n_valid=n_valid, ensemble_size=meta["ensemble_size"])
