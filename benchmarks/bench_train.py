"""Training throughput of the DSM engine next to the machine's own matmul speed.

    python -m benchmarks.bench_train                 # width 128, batch 32, E = 1, 4, 16
    python -m benchmarks.bench_train --width 512 --batch 512 --ensembles 1 4
    python -m benchmarks.bench_train --cpu-devices 0 # one JAX device per core: ensembles sharded

Prints, from ONE run: the measured f32 matmul GFLOP/s of this machine (square
jitted matmuls, best of several), and for a single model and vmapped ensembles
of E models: steps/s, model-steps/s (E × steps/s), the speed-up of model-steps/s
over the single model, and the achieved GFLOP/s of the dense layers.

FLOP count: 2 × multiply-adds of the dense layers of one forward pass per example
(`dsmtheory.networks.matmul_flops_per_example`), × 3 for forward + backward
(the backward pass costs two matmuls per forward matmul), × batch × E. Elementwise
work (activations, Adam, RNG) is not counted, so at small widths the achieved
GFLOP/s understates how busy the machine is.

Timing excludes compilation: each configuration is trained once for `log_every`
steps (compiles), then timed on a second run with the same shapes (the numeric
hyperparameters are traced, so no recompilation; the benchmark checks this).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from dsmtheory import distributed, dsm
from dsmtheory.families.linear_gaussian import LinearGaussian
from dsmtheory.networks import matmul_flops_per_example, network_config
from dsmtheory.schedules import VPLinear


def matmul_gflops(size: int = 1024, repeats: int = 10) -> float:
    """Best-of-`repeats` f32 GFLOP/s of a jitted [size, size] @ [size, size] matmul."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def bench_training(e: int, *, width: int, depth: int, batch: int, dim: int, steps: int, chunk: int) -> dict:
    family = LinearGaussian.create(mu_x=tuple([0.0] * (dim - 1)), sigma_r=0.1)
    schedule = VPLinear()
    net = network_config("mlp", dim, width=width, depth=depth)
    cfg = dsm.TrainConfig(network=net, n_steps=chunk, batch_size=batch, lr=1e-3, log_every=chunk)
    data = family.sample(jax.random.PRNGKey(0), 4096)

    def run(n_steps, seed):
        c = cfg.replace(n_steps=n_steps)
        if e == 1:
            r = dsm.train(jax.random.PRNGKey(seed), data, schedule, c)
        else:
            r = dsm.train_ensemble(jax.random.split(jax.random.PRNGKey(seed), e), data, schedule, c)
        jax.block_until_ready(r.params)
        return r

    run(chunk, 0)  # compile
    compiles = dsm.compile_count()
    t0 = time.perf_counter()
    run(steps, 1)
    dt = time.perf_counter() - t0
    if dsm.compile_count() != compiles:
        raise RuntimeError("the timed run recompiled; the measurement would include compilation")
    steps_per_s = steps / dt
    flops = 3 * matmul_flops_per_example(net) * batch * e * steps_per_s
    return {"E": e, "steps_per_s": steps_per_s, "model_steps_per_s": e * steps_per_s, "gflops": flops / 1e9}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dim", type=int, default=2)
    p.add_argument("--steps", type=int, default=2000, help="timed steps per configuration")
    p.add_argument("--chunk", type=int, default=500, help="steps per jitted chunk (log_every)")
    p.add_argument("--ensembles", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--matmul-size", type=int, default=1024)
    distributed.add_cpu_devices_flag(p)
    args = p.parse_args(argv)
    if args.steps % args.chunk:
        p.error("--steps must be a multiple of --chunk (one compiled chunk length)")

    print(f"devices: {jax.devices()}  (jax {jax.__version__})")
    mm = matmul_gflops(args.matmul_size)
    print(f"machine f32 matmul ({args.matmul_size}^3): {mm:8.1f} GFLOP/s")
    print(f"MLP width {args.width} depth {args.depth}, D = {args.dim}, batch {args.batch}, "
          f"{args.steps} timed steps")
    print(f"{'E':>4} {'steps/s':>10} {'model-steps/s':>14} {'speed-up':>9} {'GFLOP/s':>9} {'% of matmul':>12}")
    rows = []
    base = None
    for e in args.ensembles:
        r = bench_training(e, width=args.width, depth=args.depth, batch=args.batch, dim=args.dim,
                           steps=args.steps, chunk=args.chunk)
        base = r["model_steps_per_s"] if base is None else base
        r["speedup"] = r["model_steps_per_s"] / base
        r["fraction_of_matmul"] = r["gflops"] / mm
        rows.append(r)
        print(f"{e:>4} {r['steps_per_s']:>10.1f} {r['model_steps_per_s']:>14.1f} {r['speedup']:>8.2f}x "
              f"{r['gflops']:>9.2f} {100 * r['fraction_of_matmul']:>11.1f}%", flush=True)
    return {"matmul_gflops": mm, "rows": rows, "args": vars(args)}


if __name__ == "__main__":
    main()
