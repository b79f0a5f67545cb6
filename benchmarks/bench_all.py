"""All throughput numbers of issue 7 from ONE run, printed as tables.

    python -m benchmarks.bench_all            # full run (tens of minutes on 2 busy CPU cores)
    python -m benchmarks.bench_all --quick    # a few minutes: fewer steps/repeats, E up to 16
    python -m benchmarks.bench_all --only train_small train_large   # a subset of the sections
    python -m benchmarks.bench_all --cpu-devices 0    # one JAX device per CPU core: ensembles sharded

Sections
  matmul        the machine's own f32 matmul GFLOP/s (jitted [1024, 1024] @ [1024, 1024], best of
                several, measured at the start AND the end of the run; the larger is used),
                per wall second and per process-CPU second.
  train_small   MLP width 128, depth 2, batch 32: single model and vmapped ensembles E = 1, 4, 16, 64.
  train_large   MLP width 512, depth 2, batch 512: same.
                Columns: steps/s, model-steps/s (E × steps/s), speed-up of model-steps/s over
                E = 1, achieved dense-layer GFLOP/s and its % of the matmul GFLOP/s, and
                model-steps per CPU-second (process CPU time: on a machine shared with other
                jobs this is less sensitive to their load than wall time), and the dense-layer
                GFLOP per CPU-second as a % of the matmul's GFLOP per CPU-second, the cores
                kept busy (process CPU-seconds per wall second of the fastest repeat); last, the
                speed-up that the step's matrix products ALONE get from batching E members
                (`products_ceiling`: the same products, no activations, Adam or random numbers),
                the ceiling for the speed-up column on this machine. Before it, the speed-up
                each E would reach with every core busy at its measured CPU cost per
                model-step (`cores_ceiling`): the ceiling that the core count sets.
  sampler       samples × steps per second of the Euler–Maruyama sampler, exact and learned score.
  families      exact-score evaluations per second for each family (LinearGaussian,
                NonlinearRule, GaussianMixture, EmpiricalMeasure, Embedded), batch of 4096.
  compiles      number of compiled training programs for a full sweep over n (train_ensemble
                with one padded shape [E, n_max, D] and n_valid = n), reported by dsm.compile_count().

Timing is of the steady state: the compiled chunk program that train()/train_ensemble()
run back to back (state donated and carried over), per chunk incl. the host sync on its
losses; compilation and one-off run setup are excluded (each configuration runs once
untimed first; the benchmark checks that the timed chunks did not recompile). Repeats are interleaved across the
ensemble sizes and the best is kept, so the ratios come from the same minutes of machine
load. FLOP count: see benchmarks/bench_train.py (dense layers only, × 3 for fwd + bwd).
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from dsmtheory import distributed, dsm
from dsmtheory.families import Embedded, EmpiricalMeasure, GaussianMixture, LinearGaussian, NonlinearRule
from dsmtheory.families.nonlinear import UniformX, GaussianX
from dsmtheory.networks import matmul_flops_per_example, network_config
from dsmtheory.rules import Sine
from dsmtheory.samplers import sample
from dsmtheory.schedules import VPLinear
from dsmtheory.scores import ExactScore

def matmul_gflops_wall_cpu(size: int = 1024, repeats: int = 5) -> tuple[float, float]:
    """f32 matmul GFLOP/s per wall second and per process-CPU second (best of `repeats`,
    each timing 4 back-to-back products)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    wall = cpu = np.inf
    for _ in range(repeats):
        w, c = _timed(lambda: [f(a, b).block_until_ready() for _ in range(4)])
        wall, cpu = min(wall, w), min(cpu, c)
    flops = 4 * 2 * size**3 / 1e9
    return flops / wall, flops / cpu


SECTIONS = ("matmul", "train_small", "train_large", "sampler", "families", "compiles")
SCHED = VPLinear()


@functools.cache
def _fam() -> LinearGaussian:
    # built on first use, not at import: building it starts the JAX backend, and
    # --cpu-devices must be applied before that
    return LinearGaussian.create(mu_x=(0.0,), sigma_r=0.1)


def _timed(fn):
    """(wall seconds, process CPU seconds) of fn()."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def bench_train_table(width: int, batch: int, ensembles, steps: int, repeats: int, depth: int = 2) -> list[dict]:
    """Steady-state training throughput: the compiled chunk program of `dsm.train` /
    `dsm.train_ensemble` (one jitted lax.scan of `steps` steps, state donated and carried
    from chunk to chunk, exactly as in a long run), timed per chunk including the host
    sync on its losses; the one-off setup of a run (init, argument checks) is excluded."""
    from dsmtheory.networks import ModuleApply

    net = network_config("mlp", 2, width=width, depth=depth)
    cfg = dsm.TrainConfig(network=net, n_steps=steps, batch_size=batch, log_every=steps)
    data = jnp.asarray(_fam().sample(jax.random.PRNGKey(0), 4096), jnp.float32)
    apply = ModuleApply(net.build(SCHED))
    static, hyper = dsm._static_part(cfg), dsm.Hyper.of(cfg)
    states, runs = {}, {}
    for e in ensembles:
        keys = jax.random.split(jax.random.PRNGKey(e), e)
        ens = e > 1
        states[e] = dsm._init_states(keys if ens else keys[0], apply, data, SCHED, static, data.shape[0],
                                     e if ens else None)
        n_valid = jnp.full((e,), data.shape[0], jnp.int32) if ens else jnp.asarray(data.shape[0], jnp.int32)
        member_data = data
        if ens:  # as train_ensemble does: members over the devices (identity on one device)
            states[e], member_data, n_valid, _ = dsm.place_ensemble(states[e], data, n_valid)
        spec = dsm._Spec(apply, static, ens, True, False)
        runs[e] = (member_data, n_valid, spec)

    def chunk(e):
        member_data, n_valid, spec = runs[e]
        states[e], losses, _ = dsm._run_chunk(states[e], member_data, n_valid, SCHED, None, hyper, spec=spec,
                                              length=steps)
        np.asarray(losses)  # host sync, as train() does after every chunk

    for e in ensembles:
        chunk(e)  # compile
    n_comp = dsm.compile_count()
    wall = {e: np.inf for e in ensembles}
    cpu = {e: np.inf for e in ensembles}
    cores = {}
    for _ in range(repeats):
        for e in ensembles:
            w, c = _timed(lambda: chunk(e))
            if w < wall[e]:
                cores[e] = c / w  # cores kept busy during the fastest repeat
            wall[e], cpu[e] = min(wall[e], w), min(cpu[e], c)
    if dsm.compile_count() != n_comp:
        raise RuntimeError("a timed run recompiled; the measurement would include compilation")
    rows = []
    flop_step = 3 * matmul_flops_per_example(net) * batch
    for e in ensembles:
        sps = steps / wall[e]
        rows.append({"E": e, "steps_per_s": sps, "model_steps_per_s": e * sps, "cores_busy": cores[e],
                     "model_steps_per_cpu_s": e * steps / cpu[e], "gflops": flop_step * e * sps / 1e9,
                     "gflops_per_cpu_s": flop_step * e * steps / cpu[e] / 1e9})
    base, base_cpu = rows[0]["model_steps_per_s"], rows[0]["model_steps_per_cpu_s"]
    for r in rows:
        r["speedup"] = r["model_steps_per_s"] / base
        r["speedup_cpu"] = r["model_steps_per_cpu_s"] / base_cpu
        r["speedup_all_cores"] = cores_ceiling(r, rows[0], distributed.available_cores())
    ceiling = products_ceiling(net, batch, ensembles, repeats)
    for r in rows:
        r["products_speedup"] = ceiling[r["E"]]
    return rows


def step_products(net, batch: int) -> list[tuple[int, int, int]]:
    """(M, K, N) of every matrix product in one training step of the 'mlp' network: the
    forward pass (input, time and hidden layers, output), the backward products for the
    activations (hidden and output layers) and for every weight."""
    if net.kind not in ("mlp", "two_layer"):
        raise ValueError(f"step_products knows the 'mlp' and 'two_layer' networks only, got kind={net.kind!r}")
    b, d, w, f, hidden = batch, net.dim, net.width, 2 * net.time_features, net.depth - 1
    forward = [(b, d, w)] + [(b, f, w)] * net.depth + [(b, w, w)] * hidden + [(b, w, d)]
    activation_grads = [(b, w, w)] * hidden + [(b, d, w)]
    weight_grads = [(d, b, w)] + [(f, b, w)] * net.depth + [(w, b, w)] * hidden + [(w, b, d)]
    return forward + activation_grads + weight_grads


def products_ceiling(net, batch: int, ensembles, repeats: int, reps: int = 50) -> dict:
    """E -> model-steps/s of the step's matrix products ALONE (`step_products`, batched over E
    members as vmap batches them), relative to E = 1: the speed-up that the batched matmuls
    themselves allow on this machine, the ceiling for the training step's speed-up column.
    Each product feeds a small term back into its input, so the `reps` repetitions in one
    program are not hoisted."""
    shapes = step_products(net, batch)
    rate = {}
    for e in ensembles:
        rng = np.random.default_rng(e)  # host-side: one eager jax.random call per shape would compile each
        lhs = [jnp.asarray(rng.standard_normal((e, m, k)), jnp.float32) for m, k, _ in shapes]
        rhs = [jnp.asarray(rng.standard_normal((e, k, n)), jnp.float32) for _, k, n in shapes]
        if e > 1:  # members over the devices, as for the training rows (identity on one device)
            lhs, rhs = distributed.shard_ensemble((lhs, rhs))

        @jax.jit
        def run(lhs, rhs):
            def body(_, lhs):
                return [a + 1e-9 * jnp.einsum("emk,ekn->emn", a, b)[:, :1, :1] for a, b in zip(lhs, rhs)]
            return jax.lax.fori_loop(0, reps, body, lhs)

        jax.block_until_ready(run(lhs, rhs))
        best = min(_timed(lambda: jax.block_until_ready(run(lhs, rhs)))[0] for _ in range(repeats + 2))
        rate[e] = e * reps / best
    return {e: rate[e] / rate[ensembles[0]] for e in ensembles}


def cores_ceiling(row: dict, base: dict, n_cores: int) -> float:
    """The wall-time speed-up over `base` (the table's first row, E = 1 by default) that `row`
    would reach with all `n_cores` busy at its measured CPU cost per model-step. Wall speed-up
    = speed-up per CPU-second × (cores busy / base's cores busy), so this is the ceiling that
    the core count sets."""
    return row["speedup_cpu"] * n_cores / base["cores_busy"]


def print_train(title, rows, mm, mm_cpu):
    print(f"\n## {title}")
    print("| E | steps/s | model-steps/s | speed-up | GFLOP/s | % of matmul | model-steps/CPU-s | speed-up (CPU) "
          "| GFLOP/CPU-s | % of matmul (CPU) | cores busy | speed-up, all cores busy | products alone: speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        r["fraction_of_matmul"] = r["gflops"] / mm
        r["fraction_of_matmul_cpu"] = r["gflops_per_cpu_s"] / mm_cpu
        print(f"| {r['E']} | {r['steps_per_s']:.1f} | {r['model_steps_per_s']:.1f} | {r['speedup']:.2f}x | "
              f"{r['gflops']:.2f} | {100 * r['fraction_of_matmul']:.0f}% | {r['model_steps_per_cpu_s']:.1f} | "
              f"{r['speedup_cpu']:.2f}x | {r['gflops_per_cpu_s']:.2f} | {100 * r['fraction_of_matmul_cpu']:.0f}% | "
              f"{r['cores_busy']:.2f} | {r['speedup_all_cores']:.2f}x | {r['products_speedup']:.2f}x |",
              flush=True)


def bench_sampler(n: int, n_steps: int, repeats: int) -> list[dict]:
    net = network_config("mlp", 2, width=128)
    res = dsm.train(jax.random.PRNGKey(0), _fam().sample(jax.random.PRNGKey(1), 256), SCHED,
                    dsm.TrainConfig(network=net, n_steps=10, batch_size=32, log_every=10))
    scores = {"exact (LinearGaussian)": ExactScore(_fam(), SCHED), "learned (MLP 128x2)": dsm.learned_score(res)}
    rows = []
    for name, s in scores.items():
        go = lambda seed: jax.block_until_ready(sample(s, SCHED, jax.random.PRNGKey(seed), n, 2, n_steps=n_steps))  # noqa
        go(0)
        best = min(_timed(lambda: go(r + 1))[0] for r in range(repeats))
        rows.append({"score": name, "n": n, "n_steps": n_steps, "sample_steps_per_s": n * n_steps / best})
    return rows


def _families() -> dict:
    """name -> zero-argument constructor (built one at a time, so one failing family is
    reported in the table instead of aborting the benchmark)."""
    def nonlinear():
        return NonlinearRule.create(UniformX(-1.0, 1.0), Sine(k=4.0), sigma_r=0.05)

    return {
        "LinearGaussian": _fam,
        "NonlinearRule (sine, quadrature)": nonlinear,
        "GaussianMixture (K=2)": lambda: GaussianMixture.create(
            weights=[0.3, 0.7], means=[[-1.0, 0.5], [1.0, -0.5]], covs=[np.diag([0.3, 0.1]), np.diag([0.5, 0.1])],
            dx=1, sigma_r=float(np.sqrt(0.1))),
        "EmpiricalMeasure (n=1024)": lambda: EmpiricalMeasure.from_samples(
            _fam().sample(jax.random.PRNGKey(3), 1024), _fam()),
        "Embedded (sine in R^16)": lambda: Embedded.create(
            NonlinearRule.create(GaussianX(0.0, 1.0), Sine(k=2.0), 0.1), D=16, key=jax.random.PRNGKey(4)),
    }


def bench_families(batch: int, repeats: int, inner: int = 10) -> list[dict]:
    rows = []
    for name, make in _families().items():
        try:
            fam = make()
        except Exception as err:  # another module's bug must not hide the other rows
            rows.append({"family": name, "dim": -1, "evals_per_s": float("nan"), "error": repr(err)[:120]})
            continue
        z = fam.sample(jax.random.PRNGKey(0), batch).astype(jnp.float32)
        t = jnp.linspace(0.05, 1.0, batch, dtype=jnp.float32)

        @jax.jit
        def many(z, t, fam=fam):  # `inner` evaluations in one program: per-call dispatch excluded
            return jax.lax.fori_loop(0, inner, lambda i, acc: acc + fam.score(z + 1e-3 * i, t, SCHED), jnp.zeros_like(z))

        jax.block_until_ready(many(z, t))
        best = min(_timed(lambda: jax.block_until_ready(many(z, t)))[0] for _ in range(repeats))
        rows.append({"family": name, "dim": int(fam.dim), "evals_per_s": batch * inner / best})
    return rows


def bench_compiles(ns, e: int, steps: int) -> dict:
    """A full sweep over n: one padded shape [E, n_max, D], n_valid = n for every member."""
    n_max = max(ns)
    cfg = dsm.TrainConfig(network=network_config("mlp", 2, width=32), n_steps=steps, batch_size=32,
                          log_every=steps, eval_size=256)
    data = _fam().sample(jax.random.PRNGKey(0), e * n_max).reshape(e, n_max, 2)
    before = dsm.compile_count()
    for i, n in enumerate(ns):
        dsm.train_ensemble(jax.random.split(jax.random.PRNGKey(i), e), data, SCHED, cfg,
                           n_valid=np.full(e, n), family=_fam())
    return {"ns": list(ns), "E": e, "cells": len(ns), "compilations": dsm.compile_count() - before}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short run: fewer steps and repeats, E <= 16")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--ensembles", type=int, nargs="+", default=None, help="default 1 4 16 64 (quick: 1 4 16)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per configuration (best kept)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    distributed.add_cpu_devices_flag(p)
    args = p.parse_args(argv)
    quick = args.quick
    ens = args.ensembles or ([1, 4, 16] if quick else [1, 4, 16, 64])
    reps = args.repeats or (2 if quick else 3)
    out: dict = {"devices": [str(d) for d in jax.devices()], "jax": jax.__version__, "quick": quick,
                 "cpu_devices": len(jax.devices("cpu")), "cores": distributed.available_cores()}
    print(f"devices: {jax.devices()}  (jax {jax.__version__}, {distributed.available_cores()} cores)"
          f"{'  [--quick]' if quick else ''}")
    if jax.device_count() > 1:
        print(f"ensembles with E a multiple of {jax.device_count()} are sharded over the {jax.device_count()} "
              "devices (as train_ensemble does); E = 1 runs on one device")

    mm, mm_cpu = matmul_gflops_wall_cpu(1024, repeats=3 if quick else 5)
    print(f"machine f32 matmul (1024^3), start of run: {mm:.1f} GFLOP/s, {mm_cpu:.1f} GFLOP per CPU-s", flush=True)
    if "train_small" in args.only:
        out["train_small"] = bench_train_table(128, 32, ens, steps=250 if quick else 1000, repeats=reps)
    if "train_large" in args.only:
        out["train_large"] = bench_train_table(512, 512, ens, steps=5 if quick else 10, repeats=reps)
    mm_end, mm_cpu_end = matmul_gflops_wall_cpu(1024, repeats=3 if quick else 5)
    print(f"machine f32 matmul (1024^3), after training: {mm_end:.1f} GFLOP/s, {mm_cpu_end:.1f} GFLOP per CPU-s",
          flush=True)
    out["matmul_gflops"] = mm = max(mm, mm_end)  # the larger (less loaded) figure: the stricter reference
    out["matmul_gflops_per_cpu_s"] = mm_cpu = max(mm_cpu, mm_cpu_end)
    if "train_small" in args.only:
        print_train("Training, width 128, depth 2, batch 32", out["train_small"], mm, mm_cpu)
    if "train_large" in args.only:
        print_train("Training, width 512, depth 2, batch 512", out["train_large"], mm, mm_cpu)
    if "sampler" in args.only:
        out["sampler"] = bench_sampler(1024 if quick else 4096, 100, reps)
        print("\n## Sampler (Euler–Maruyama, D = 2)\n| score | samples | steps | samples×steps/s |\n|---|---:|---:|---:|")
        for r in out["sampler"]:
            print(f"| {r['score']} | {r['n']} | {r['n_steps']} | {r['sample_steps_per_s']:.3g} |", flush=True)
    if "families" in args.only:
        out["families"] = bench_families(4096, reps)
        print("\n## Exact score per family (batch 4096, float32)\n| family | D | evaluations/s |\n|---|---:|---:|")
        for r in out["families"]:
            val = f"{r['evals_per_s']:.3g}" if "error" not in r else f"construction failed: {r['error']}"
            print(f"| {r['family']} | {r['dim']} | {val} |", flush=True)
    if "compiles" in args.only:
        ns = [16, 32, 64, 128] if quick else [16, 32, 64, 128, 256, 512, 1024]
        out["compiles"] = c = bench_compiles(ns, e=4, steps=20 if quick else 100)
        print(f"\n## Compilations for a sweep over n = {c['ns']} (E = {c['E']}, one padded shape): "
              f"{c['compilations']} for {c['cells']} cells", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
