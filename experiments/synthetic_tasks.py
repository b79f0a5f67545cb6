"""The four synthetic image tasks (THEORY §7): rules rendered into pixels, learned by a
DSM-trained network over pixels, and measured through the analytic extractors.

    python -m experiments.synthetic_tasks --quick     # all four tasks, < 5 min on 2 CPU cores
    python -m experiments.synthetic_tasks             # the full setting
    python -m experiments.synthetic_tasks --check     # recompute the training-data metrics, compare

For every task (`dsmtheory.images`: shadow, reflection, ratio, perspective) a training
set of n_max images is rendered; for every n in --n-values one score network (H3's
joint MLP over the P = size² pixels, `dsmtheory.networks`, x0-parameterised) is
trained by DSM on the first n images centred by their mean image (all n values in
ONE vmapped program, `dsm.train_ensemble` with per-member data) under the VP-linear
schedule, and sampled with the Euler–Maruyama sampler
ending in a Tweedie denoising step (`samplers.sample_ensemble`). Generated images
are read back by the task's extractor and measured against the rule with
`metrics.rule_metrics_xy` (THEORY §4). The training images are measured through the
same extractor (their ρ ≈ 1 is the reference: it shows what the truth scores when
seen through the pixels).

Figure: one row per task: three training images, three generated images (largest n),
the histogram of the standardised residual r/σ_r for training data vs generated
samples with ρ, the coarse (trend) error and the violation rate of both written on
the panel, and ρ against n (± its standard error).

Modes:
- quick: n ∈ {256, 1024}, MLP width 256 depth 2, 600 training steps (batch 64),
  256 samples × 100 Euler–Maruyama steps per model;
- full:  n ∈ {256, 1024, 4096, 16384}, width 512 depth 2, 8000 steps (batch 128,
  EMA 0.999), 1000 samples × 250 steps per model. Measured on 2 CPU cores: 22:26 wall
  for all four tasks (≈ 5.5 min per task: 300 s training the 4 models as one vmapped
  program, 25-30 s sampling and measuring), while another experiment shared the cores;
  quick mode: 27 s wall on 2 idle cores.
Every option can be overridden (--tasks, --n-values, --train-steps, --width, --depth,
--batch-size, --samples, --sample-steps, --size). Outputs: OUT/synthetic_tasks.{png,json}
(full) or OUT/synthetic_tasks_quick.{png,json} (quick, so that a quick run never
overwrites the full results).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dsmtheory.dsm import TrainConfig, learned_score, train_ensemble
from dsmtheory.images import TASKS, get_task
from dsmtheory.metrics import rule_metrics_xy
from dsmtheory.networks import network_config
from dsmtheory.results import read_json, write_results
from dsmtheory.samplers import sample_ensemble
from dsmtheory.schedules import VPLinear
from experiments._cli import experiment_parser, with_overrides

EXPERIMENT = "synthetic_tasks"
MODES = {
    "quick": {"n_values": [256, 1024], "width": 256, "depth": 2, "train_steps": 600, "batch_size": 64,
              "ema": None, "samples": 256, "sample_steps": 100},
    "full": {"n_values": [256, 1024, 4096, 16384], "width": 512, "depth": 2, "train_steps": 8000,
             "batch_size": 128, "ema": 0.999, "samples": 1000, "sample_steps": 250},
}
SAMPLER = "euler_maruyama"
PARAMETERISATION = "x0"
N_SHOWN = 3  # images shown per row and kind
HIST_LIMIT = 8.0  # residual histogram range in σ_r units (outliers are drawn in the edge bins)
METRIC_KEYS = ("rho", "rho_se", "violation_rate", "violation_rate_truth", "coarse_error", "coarse_ratio",
               "rho_fine", "cond_w1", "marginal_w1", "n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = experiment_parser("python -m experiments.synthetic_tasks", __doc__.split("\n")[0],
                          quick_help="small setting (< 5 min on 2 CPU cores)",
                          check_help="recompute the training-data metrics of every task and compare with the stored JSON")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {list(TASKS)}")
    p.add_argument("--size", type=int, default=24, help="image side in pixels (24..32)")
    p.add_argument("--n-values", default=None, help="comma-separated training-set sizes")
    for name, typ in (("train-steps", int), ("width", int), ("depth", int), ("batch-size", int),
                      ("samples", int), ("sample-steps", int)):
        p.add_argument(f"--{name}", type=typ, default=None)
    args = p.parse_args(argv)
    mode = dict(MODES["quick" if args.quick else "full"])
    if args.n_values is not None:
        mode["n_values"] = [int(v) for v in args.n_values.split(",") if v.strip()]
    mode = with_overrides(mode, {key: getattr(args, key) for key in ("train_steps", "width", "depth", "batch_size",
                                                                     "samples", "sample_steps")})
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        p.error(f"--tasks must name some of {list(TASKS)}, got {args.tasks!r}")
    if not 24 <= args.size <= 32:
        raise SystemExit(f"error: --size must lie in [24, 32] (the extractors' tested range), got {args.size}")
    if not mode["n_values"] or min(mode["n_values"]) < 2:
        p.error("--n-values must be integers >= 2")
    args.tasks_list = tasks
    args.mode = mode
    return args


def _n_bins(n: int) -> int:
    """10 quantile bins of x̂ (THEORY §4), fewer for tiny smoke-test sample sizes (≥ 8 per bin)."""
    return int(max(2, min(10, n // 8)))


def _floats(metrics: dict) -> dict:
    return {k: (None if metrics.get(k) is None else float(metrics[k])) for k in METRIC_KEYS}


def training_metrics(task, key, n_max: int) -> tuple[dict, dict]:
    """Render the n_max training images and measure them through the extractor.

    Returns (arrays, summary): the images and features, and the rule metrics of the
    measured training features plus the extractor's error against the true features."""
    images, x, y, nuis = task.sample(key, n_max)
    x_hat, y_hat = task.extract(images)
    slope = task.rule.derivative(x)
    err = {
        "max_abs_y_error_over_sigma_r": float(jnp.max(jnp.abs(y_hat - y)) / task.sigma_r),
        "max_abs_slope_x_error_over_sigma_r": float(jnp.max(jnp.abs(slope * (x_hat - x))) / task.sigma_r),
    }
    m = rule_metrics_xy(np.asarray(x_hat), np.asarray(y_hat), task.rule, task.sigma_r, x_reference=np.asarray(x),
                        n_bins=_n_bins(n_max))
    summary = {"metrics": _floats(m), "extractor_error": err,
               "rho_true_features": float(jnp.sqrt(jnp.mean(task.residual(x, y) ** 2)) / task.sigma_r)}
    return {"images": images, "x": x, "y": y, "x_hat": x_hat, "y_hat": y_hat}, summary


def run_task(name: str, args, key) -> tuple[dict, dict]:
    """Train one network per n on a task, sample, measure. Returns (plot data, JSON results)."""
    mode = args.mode
    task = get_task(name, size=args.size)
    schedule = VPLinear()
    n_values = sorted(mode["n_values"])
    k_data, k_train, k_sample = jax.random.split(key, 3)
    t0 = time.time()
    train, train_summary = training_metrics(task, k_data, n_values[-1])
    data = task.to_data(train["images"])
    # Each model sees its own first n images, centred by THEIR mean image (a fixed shift
    # of the data: the model learns p(z − m) and m is added back to its samples). With
    # the x0 parameterisation a constant background is a bias of the output layer; the
    # ε-parameterised MLP over P = 576 pixels was measured to need many more steps (after
    # 600 steps its samples had pixel values of ±350), which quick mode cannot afford.
    means = jnp.stack([jnp.mean(data[:n], axis=0) for n in n_values])  # [E, P]
    data_centred = data[None] - means[:, None, :]  # [E, n_max, P]

    cfg = TrainConfig(
        network=network_config("mlp", dim=task.dim, width=mode["width"], depth=mode["depth"]),
        parameterisation=PARAMETERISATION,
        n_steps=mode["train_steps"], batch_size=mode["batch_size"], lr=1e-3,
        warmup=min(100, mode["train_steps"] // 10), ema_decay=mode["ema"],
        log_every=min(mode["train_steps"], 1000), eval_size=256,
    )
    keys = jax.random.split(k_train, len(n_values))
    ens = train_ensemble(keys, data_centred, schedule, cfg, n_valid=np.asarray(n_values))
    t_train = time.time() - t0
    score = learned_score(ens)
    z = sample_ensemble(score, schedule, k_sample, mode["samples"], task.dim, method=SAMPLER,
                        n_steps=mode["sample_steps"], denoise=True)
    gen_images = task.from_data(z + means[:, None, :])  # [E, samples, S, S]
    # extract on the flat batch [E·samples, S, S] (one compiled extractor per batch size)
    flat = gen_images.reshape((-1,) + gen_images.shape[-2:])
    x_hat, y_hat = (v.reshape(gen_images.shape[:2]) for v in task.extract(flat))
    t_sample = time.time() - t0 - t_train

    per_n = []
    x_ref = np.asarray(train["x"])
    for i, n in enumerate(n_values):
        m = rule_metrics_xy(np.asarray(x_hat[i]), np.asarray(y_hat[i]), task.rule, task.sigma_r, x_reference=x_ref,
                            n_bins=_n_bins(mode["samples"]))
        pix = np.asarray(gen_images[i])
        per_n.append({"n": int(n), "metrics": _floats(m),
                      "pixel_range": [float(pix.min()), float(pix.max())],
                      "final_train_loss": float(np.asarray(ens.final["loss"])[i]) if "loss" in ens.final else None})
    results = {
        "task": task.to_config(),
        "schedule": schedule.to_config(),
        "train_config": cfg.to_dict(),
        "training_data": train_summary,
        "generated": per_n,
        "seconds": {"train": t_train, "sample_and_measure": t_sample, "total": time.time() - t0},
    }
    plot = {
        "task": task,
        "train_images": np.asarray(train["images"][:N_SHOWN]),
        "gen_images": np.asarray(gen_images[-1, :N_SHOWN]),
        "r_train": np.asarray(task.residual(train["x_hat"], train["y_hat"])) / task.sigma_r,
        "r_gen": np.asarray(task.residual(x_hat[-1], y_hat[-1])) / task.sigma_r,
    }
    return plot, results


def make_figure(plots: list[dict], results: dict, mode_name: str):
    from dsmtheory.plotting import COLORS
    import matplotlib.pyplot as plt

    n_rows = len(plots)
    height = 3.1 * n_rows + 0.9
    fig = plt.figure(figsize=(18.0, height))
    outer = fig.add_gridspec(n_rows, 2, width_ratios=[2 * N_SHOWN, 9.0], wspace=0.06, hspace=0.55,
                             left=0.03, right=0.99, top=1 - 0.85 / height, bottom=0.5 / height)
    for row, plot in enumerate(plots):
        left = outer[row, 0].subgridspec(1, 2 * N_SHOWN, wspace=0.08)
        right = outer[row, 1].subgridspec(1, 2, wspace=0.28, width_ratios=[1.15, 1.0])
        task = plot["task"]
        res = results["tasks"][task.name]
        n_big = res["generated"][-1]["n"]
        for j in range(N_SHOWN):
            for kind, imgs, col in (("train", plot["train_images"], j), ("generated", plot["gen_images"], N_SHOWN + j)):
                ax = fig.add_subplot(left[0, col])
                ax.imshow(np.clip(imgs[j], 0, 1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
                if j == 0:
                    ax.set_title(f"{kind}" + (f" (n={n_big})" if kind == "generated" else ""), fontsize=8, loc="left")
                if j == 0 and kind == "train":
                    ax.set_ylabel(task.name, fontsize=10, fontweight="bold")

        ax = fig.add_subplot(right[0, 0])
        edges = np.linspace(-HIST_LIMIT, HIST_LIMIT, 65)
        for r, label, role in ((plot["r_train"], "training data", "truth"),
                               (plot["r_gen"], f"generated (n={n_big})", "learned")):
            ax.hist(np.clip(r, edges[0] + 1e-9, edges[-1] - 1e-9), bins=edges, density=True, histtype="step",
                    lw=1.5, color=COLORS[role], label=label)
        g = np.linspace(-HIST_LIMIT, HIST_LIMIT, 400)
        ax.plot(g, np.exp(-0.5 * g**2) / np.sqrt(2 * np.pi), "k:", lw=1, label="N(0, 1) (the rule)")
        ax.set_xlabel("residual (ŷ − f(x̂)) / σ_r   [edge bins hold |r| > 8σ_r]")
        ax.set_ylabel("density")
        ax.set_title(f"{task.name}: rule residual through the extractor", fontsize=9)
        mt, mg = res["training_data"]["metrics"], res["generated"][-1]["metrics"]
        text = (f"        ρ      coarse/σ_r  viol.\n"
                f"train {mt['rho']:6.2f} {mt['coarse_ratio']:8.2f} {100 * mt['violation_rate']:6.1f}%\n"
                f"gen.  {mg['rho']:6.2f} {mg['coarse_ratio']:8.2f} {100 * mg['violation_rate']:6.1f}%")
        ax.text(0.02, 0.97, text, transform=ax.transAxes, va="top", ha="left", family="monospace", fontsize=7,
                bbox=dict(boxstyle="round", fc="white", ec="0.7", alpha=0.9))
        ax.legend(loc="center right", fontsize=6.5)

        ax = fig.add_subplot(right[0, 1])
        ns = [g_["n"] for g_ in res["generated"]]
        rhos = [g_["metrics"]["rho"] for g_ in res["generated"]]
        ses = [g_["metrics"]["rho_se"] for g_ in res["generated"]]
        ax.errorbar(ns, rhos, yerr=ses, marker="o", color=COLORS["learned"], capsize=3, label="generated (±1 s.e.)")
        ax.axhline(mt["rho"], ls="--", color=COLORS["truth"], label=f"training data ρ = {mt['rho']:.2f}")
        ax.axhline(1.0, ls=":", color="k", lw=0.8, label="truth ρ = 1")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.15 * max(max(r + e for r, e in zip(rhos, ses)), mt["rho"], 1.0))
        ax.set_xlabel("training-set size n (images)")
        ax.set_ylabel("ρ = RMS residual / σ_r")
        ax.set_title(f"{task.name}: rule error ratio ρ against n", fontsize=9)
        ax.legend(fontsize=6.5, loc="best")
    cfg = results["mode"]
    fig.suptitle(f"Synthetic image tasks ({mode_name} mode): {results['size']}×{results['size']} images, x0-MLP "
                 f"width {cfg['width']} depth {cfg['depth']}, {cfg['train_steps']} DSM steps, VP-linear, "
                 f"{SAMPLER} {cfg['sample_steps']} steps + Tweedie denoise, {cfg['samples']} samples per n",
                 fontsize=10, y=1 - 0.2 / height)
    return fig


def _out_path(args) -> Path:
    return Path(args.out) / (EXPERIMENT + ("_quick" if args.quick else "") + ".json")


def run_check(args) -> dict:
    """Recompute every task's training-data metrics (same seed) and compare with the JSON."""
    path = _out_path(args)
    stored = read_json(path)["results"]
    key = jax.random.PRNGKey(stored["seed"])
    mismatches = []
    for i, name in enumerate(stored["tasks_run"]):
        k_task = jax.random.fold_in(key, i)
        k_data = jax.random.split(k_task, 3)[0]
        task = get_task(name, size=stored["size"])
        n_max = max(g["n"] for g in stored["tasks"][name]["generated"])
        _, summary = training_metrics(task, k_data, n_max)
        for k in ("rho", "coarse_ratio", "violation_rate"):
            a, b = summary["metrics"][k], stored["tasks"][name]["training_data"]["metrics"][k]
            if not np.isclose(a, b, rtol=1e-4, atol=1e-6):
                mismatches.append(f"{name}.{k}: recomputed {a} vs stored {b}")
    ok = not mismatches
    print(("check OK: " if ok else "check FAILED: ") + ("; ".join(mismatches) or f"{path} reproduced"))
    return {"check_ok": ok, "mismatches": mismatches}


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.check:
        out = run_check(args)
        if not out["check_ok"]:
            raise SystemExit(1)
        return out
    t0 = time.time()
    key = jax.random.PRNGKey(args.seed)
    plots, per_task = [], {}
    for i, name in enumerate(args.tasks_list):
        plot, res = run_task(name, args, jax.random.fold_in(key, i))
        plots.append(plot)
        per_task[name] = res
        g = res["generated"][-1]["metrics"]
        print(f"[{name}] training data ρ = {res['training_data']['metrics']['rho']:.3f}; generated (n = "
              f"{res['generated'][-1]['n']}) ρ = {g['rho']:.3f}, coarse/σ_r = {g['coarse_ratio']:.2f}, "
              f"violations = {100 * g['violation_rate']:.1f}%  ({res['seconds']['total']:.0f} s)", flush=True)
    results: dict[str, Any] = {
        "tasks_run": args.tasks_list,
        "tasks": per_task,
        "size": args.size,
        "seed": args.seed,
        "mode": args.mode,
        "sampler": SAMPLER,
        "parameterisation": PARAMETERISATION,
        "seconds_total": time.time() - t0,
    }
    fig = make_figure(plots, results, "quick" if args.quick else "full")
    path = write_results(_out_path(args), experiment=EXPERIMENT, config={"mode": args.mode, "size": args.size,
                         "tasks": args.tasks_list, "sampler": SAMPLER}, seed=args.seed, results=results, fig=fig)
    print(f"wrote {path} and {path.with_suffix('.png')} in {results['seconds_total']:.0f} s")
    return results


if __name__ == "__main__":
    from experiments._cli import run as run_cli

    run_cli(main)
