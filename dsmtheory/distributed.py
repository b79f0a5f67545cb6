"""Scale-out of ensembles over devices with `jax.sharding` (issue 7).

An ensemble (E models trained by one vmapped program, `dsm.train_ensemble`, and
sampled by one vmapped program, `samplers.sample_ensemble`) has a natural
data-parallel axis: the members never talk to each other. We put that axis on a
1-D device mesh

    mesh = ensemble_mesh()                      # Mesh(jax.devices(), ("ensemble",))
    tree = shard_ensemble(tree, mesh)           # leading axis E split over the devices

and let XLA's SPMD partitioner do the rest: a jitted function whose inputs carry
a leading-axis `NamedSharding` runs each device's slice of members on that
device, and its outputs come back sharded the same way (no code change in the
training step or the sampler).

Policy (`ensemble_sharding`):
  * one device                 -> None (nothing is moved; the single-device path
                                  is byte-for-byte the unsharded program);
  * E divisible by the device count -> the leading axis is partitioned: each of
                                  the d devices holds and trains E/d members;
  * otherwise                  -> the leaves are REPLICATED (every device computes
                                  all members; correct, but no speed-up). We do
                                  not pad with dummy members, because padding
                                  would change E, the keys, and what the caller
                                  gets back. Choose E as a multiple of
                                  jax.device_count() to use every device.
Shared (non-member) inputs — a training set shared by all members, the
schedule, the evaluation set, hyperparameters — are replicated.

`dsm.train_ensemble(..., shard=None)` applies this automatically when more than
one device is visible, so a sweep written on a laptop runs unchanged on a
multi-GPU machine. Results equal the unsharded run to float tolerance (each
member's computation is the same; only its placement differs); the test
`tests/test_distributed.py` checks that on 4 forced host devices.

One CPU, several cores: XLA runs ONE device's program on essentially one core
when its operations are small (a width-128 MLP step is a few dozen matmuls of
32 x 128 x 128), so a vmapped ensemble on a single CPU device leaves the other
cores idle. `use_cpu_devices()` exposes the host as one JAX device per core
(jax's `jax_num_cpu_devices`, the in-process form of
XLA_FLAGS=--xla_force_host_platform_device_count); every ensemble is then sharded
over the cores exactly as over GPUs. It must run before the first JAX computation:

    import dsmtheory.distributed as dd
    dd.use_cpu_devices()                        # one device per core of this process
    ... train_ensemble(...)                     # members split over the cores

(the experiments and benchmarks take `--cpu-devices N` for this). Measured on 2
cores: README "Performance". Single-model programs still run on device 0.

Multi-host: `jax.devices()` lists the devices of every process after
`jax.distributed.initialize()`, so the same mesh spans hosts; each process must
then call the same functions with the same arguments (SPMD), as usual in JAX.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

ENSEMBLE_AXIS = "ensemble"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def use_cpu_devices(n: int | None = None) -> int:
    """Expose the host CPU as `n` JAX devices (default `available_cores()`), so that
    ensembles are sharded over the cores (module docstring). Returns n.

    Must be called before the first JAX computation of the process; calling it again
    with the count already in effect is a no-op. On a GPU/TPU machine it changes only
    the CPU platform (the default devices, and so the ensemble mesh, stay the
    accelerators)."""
    n = available_cores() if n is None else n
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (the number of CPU devices) must be an integer >= 1, got {n!r}")
    n = int(n)
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # the backend is already up: fine only if it has n CPU devices
        have = len(jax.devices("cpu"))
        if have != n:
            raise RuntimeError(
                f"use_cpu_devices({n}) must be called before the first JAX computation of the process; "
                f"the CPU backend already runs with {have} device(s). Call it right after the imports, or "
                f"start Python with XLA_FLAGS=--xla_force_host_platform_device_count={n}.") from None
    return n


class _CpuDevicesAction(argparse.Action):
    """--cpu-devices N, applied while the arguments are parsed (before the program's first
    JAX computation): N >= 1 devices, 0 = one per core."""

    def __call__(self, parser, namespace, value, option_string=None):
        if value < 0:
            parser.error(f"--cpu-devices must be >= 0 (0 = one device per core), got {value}")
        try:
            setattr(namespace, self.dest, use_cpu_devices(value or None))
        except RuntimeError as err:
            parser.error(str(err))


def add_cpu_devices_flag(parser: argparse.ArgumentParser, help_suffix: str = "") -> None:
    """Add `--cpu-devices N` (default None: leave the devices alone) to a command-line parser;
    the experiments and benchmarks share this one flag."""
    parser.add_argument("--cpu-devices", type=int, default=None, action=_CpuDevicesAction, metavar="N",
                        help="expose the CPU as N JAX devices (0 = one per core) and shard every ensemble over "
                             "them (use_cpu_devices). Default: one device" + help_suffix)


def ensemble_mesh(devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D mesh named 'ensemble' over `devices` (default: all of `jax.devices()`)."""
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("devices must be a non-empty sequence of jax devices")
    return Mesh(np.asarray(devs, dtype=object), (ENSEMBLE_AXIS,))


def ensemble_sharding(n_members: int, mesh: Mesh | None = None, *, ndim: int = 1) -> NamedSharding | None:
    """The sharding of an array with a leading member axis of size `n_members` and `ndim`
    dimensions in all, per the policy of the module docstring (None on one device)."""
    if int(n_members) < 1:
        raise ValueError(f"n_members must be >= 1, got {n_members}")
    if int(ndim) < 1:
        raise ValueError(f"ndim must be >= 1 (the member axis), got {ndim}")
    mesh = ensemble_mesh() if mesh is None else mesh
    n_dev = mesh.devices.size
    if n_dev == 1:
        return None
    if n_members % n_dev == 0:
        return NamedSharding(mesh, PartitionSpec(ENSEMBLE_AXIS, *([None] * (ndim - 1))))
    return NamedSharding(mesh, PartitionSpec())


def replicated(mesh: Mesh | None = None) -> NamedSharding | None:
    """Full replication over the mesh (None on one device)."""
    mesh = ensemble_mesh() if mesh is None else mesh
    return None if mesh.devices.size == 1 else NamedSharding(mesh, PartitionSpec())


def shard_ensemble(tree: Any, mesh: Mesh | None = None) -> Any:
    """Place every array leaf of `tree` (each with the same leading member axis) with
    `ensemble_sharding`. Leaves of other types pass through. Identity on one device."""
    mesh = ensemble_mesh() if mesh is None else mesh
    if mesh.devices.size == 1:
        return tree
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "shape") and np.ndim(x) >= 1]
    sizes = {int(np.shape(x)[0]) for x in leaves}
    if len(sizes) > 1:
        raise ValueError(f"all array leaves must share one leading member axis, got sizes {sorted(sizes)}")
    if not sizes:
        return tree
    n_members = sizes.pop()

    def place(x):
        if not hasattr(x, "shape") or np.ndim(x) < 1:
            return x
        return jax.device_put(x, ensemble_sharding(n_members, mesh, ndim=np.ndim(x)))

    return jax.tree_util.tree_map(place, tree)


def replicate(tree: Any, mesh: Mesh | None = None) -> Any:
    """Replicate every array leaf of `tree` over the mesh (identity on one device)."""
    sh = replicated(mesh)
    if sh is None:
        return tree
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, sh) if hasattr(x, "shape") else x, tree)


def member_devices(x: jax.Array) -> int:
    """How many devices hold a distinct shard of `x`'s leading axis (1 = unsharded or replicated)."""
    sh = getattr(x, "sharding", None)
    if sh is None or not hasattr(sh, "shard_shape"):
        return 1
    per = sh.shard_shape(x.shape)[0] if x.ndim else x.shape
    return int(x.shape[0] // per) if x.ndim else 1
