"""Score field (THEORY §3-§4): the exact and the learned score of a fine rule, side by side.

    python -m experiments.score_field --quick
    python -m experiments.score_field
    python -m experiments.score_field --check     # recompute and compare with the stored JSON

One fine rule, y = sin(2x) + σ_r ε with x ~ N(0, 1) and σ_r = 0.03 (D = 2,
vp_linear). One MLP is trained by DSM on n samples (`dsmtheory.dsm.train`, with the
cell's settings built by `dsmtheory.study`). At three noise levels t, chosen as the
times where the noise in data units σ(t)/α(t) is about 1, 0.3 and 3 σ_r
(`schedule.noise_to_signal`, looked up on a dense t-grid), the figure shows the exact
score ∇log p_t and the learned score s_θ on a 2-D grid of z_t (arrows of unit length
showing direction, colour = log10 of the magnitude) over the noised rule curve
α(t)·(x, f(x)). The bottom row shows samples of the learned and of the exact score
(same Euler–Maruyama sampler, steps, t_min and key) over the true rule curve, and
the Fisher divergence F(t) = E_{z_t∼p_t}‖s_θ − ∇log p_t‖² at each of the three t
split into its rule-normal part and the rest (`dsmtheory.diagnostics.fisher_terms`).

Everything is recomputed from the seed (no sweep cache: a single small model);
--check recomputes and compares every stored number.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dsmtheory.results import read_json, write_results

EXPERIMENT = "score_field"
NOISE_LEVELS_IN_SIGMA_R = (30.0, 10.0, 1.0)  # σ(t)/α(t) ≈ 30 σ_r (≈ 1: the coarse trend), 10 σ_r, 1 σ_r
MODES = {
    "quick": {"n": 2048, "sigma_r": 0.03, "k": 2.0, "width": 64, "train_steps": 600, "samples": 1000,
              "sample_steps": 200, "grid": 21, "fisher_samples": 2048},
    "full": {"n": 16384, "sigma_r": 0.03, "k": 2.0, "width": 128, "train_steps": 8000, "samples": 4000,
             "sample_steps": 200, "grid": 25, "fisher_samples": 8192},
}
GRID_X = (-2.5, 2.5)
GRID_Y = (-1.6, 1.6)


def _parser():
    from experiments._study_helpers import base_parser

    p = base_parser("python -m experiments.score_field", __doc__.split("\n\n")[0])
    p.add_argument("--sigma-r", type=float, default=None)
    p.add_argument("--k", type=float, default=None)
    p.add_argument("--grid", type=int, default=None, help="arrows per side of the 2-D grid")
    return p


def _settings(args) -> dict:
    from experiments._study_helpers import apply_overrides

    mode = "quick" if args.quick else "full"
    s = apply_overrides(MODES[mode], args, ("n", "width", "train_steps", "samples", "sample_steps", "sigma_r", "k",
                                            "grid"))
    s["mode"] = mode
    return s


def _times_for_noise(schedule, targets: Sequence[float]) -> list[float]:
    """t with σ(t)/α(t) closest to each target, from a dense geometric grid of [t_min, t_max]."""
    grid = np.geomspace(float(schedule.t_min), float(schedule.t_max), 4000)
    nts = np.asarray(schedule.noise_to_signal(jnp.asarray(grid)))
    return [float(grid[np.argmin(np.abs(np.log(nts) - np.log(v)))]) for v in targets]


def compute(s: dict, seed: int) -> dict:
    """Train, evaluate both score fields on the grid, sample, measure (all numbers for the JSON)."""
    from dsmtheory.diagnostics import fisher_terms
    from dsmtheory.dsm import learned_score, train
    from dsmtheory.metrics import rule_metrics
    from dsmtheory.samplers import sample
    from dsmtheory.study import build_family, build_schedule, build_train_config, make_cell

    cell = make_cell(rule="sin", rule_params={"k": s["k"]}, sigma_r=s["sigma_r"], n=s["n"], n_seeds=1, seed=seed,
                     width=s["width"], train_steps=s["train_steps"], n_samples=s["samples"],
                     sample_steps=s["sample_steps"])
    family = build_family(cell)
    schedule = build_schedule(cell, family)
    k_data, k_train, k_sample, k_fisher, k_metric = jax.random.split(jax.random.PRNGKey(seed), 5)
    data = family.sample(k_data, s["n"])
    trained = train(k_train, data, schedule, build_train_config(cell), family=family)
    learned = learned_score(trained)
    exact = family.score_fn(schedule)

    gx = np.linspace(*GRID_X, s["grid"])
    gy = np.linspace(*GRID_Y, s["grid"])
    X, Y = np.meshgrid(gx, gy)
    zgrid = jnp.asarray(np.stack([X.ravel(), Y.ravel()], -1), jnp.float32)
    times = _times_for_noise(schedule, [v * s["sigma_r"] for v in NOISE_LEVELS_IN_SIGMA_R])
    fields = []
    for t in times:
        tt = jnp.full(zgrid.shape[:1], t, zgrid.dtype)
        s_exact, s_learned = np.asarray(exact(zgrid, tt)), np.asarray(learned(zgrid, tt))
        # Fisher divergence on z_t ~ p_t (THEORY §4, score level), split along the rule normal
        z0 = family.sample(k_fisher, s["fisher_samples"])
        z_t, _ = schedule.perturb(jax.random.fold_in(k_fisher, 1), z0, jnp.full(z0.shape[:1], t, z0.dtype))
        tz = jnp.full(z_t.shape[:1], t, z_t.dtype)
        total, normal, rest = (float(np.mean(v)) for v in fisher_terms(learned, family, schedule, z_t, tz))
        exact_sq = float(np.mean(np.sum(np.asarray(exact(z_t, tz)) ** 2, -1)))
        fields.append({"t": t, "alpha": float(schedule.alpha(t)), "noise_to_signal": float(schedule.noise_to_signal(t)),
                       "exact": s_exact.tolist(), "learned": s_learned.tolist(),
                       "fisher_total": total, "fisher_normal": normal, "fisher_rest": rest,
                       "exact_score_sq": exact_sq, "relative_fisher": total / exact_sq,
                       "normal_share": normal / total if total > 0 else 0.0})
    samples, metrics = {}, {}
    for name, score in (("learned", learned), ("oracle", exact)):
        z = np.asarray(sample(score, schedule, k_sample, s["samples"], 2, method=cell["sampler"],
                              n_steps=s["sample_steps"]))
        samples[name] = z.tolist()
        m = rule_metrics(z, family, key=k_metric, train_set=np.asarray(data))
        metrics[name] = {k: m[k] for k in ("rho", "rho_se", "coarse_error", "coarse_ratio", "rho_fine",
                                           "violation_rate", "memorisation_rate") if m.get(k) is not None}
    xs = np.linspace(*GRID_X, 400)
    rule_curve = np.asarray(family.rule(jnp.asarray(xs[:, None], jnp.float32)))[:, 0]
    return {"cell": cell, "t_values": times, "rule_curve": {"x": xs.tolist(), "f": rule_curve.tolist()}, "grid_x": gx.tolist(), "grid_y": gy.tolist(), "fields": fields,
            "samples": samples, "sample_metrics": metrics, "training": {k: np.asarray(v).tolist()
                                                                       for k, v in trained.final.items()},
            "t_min": float(schedule.t_min)}


def plot(res: dict, s: dict):
    import matplotlib.colors as mcolors

    from dsmtheory.plotting import color, figure

    fig, axes = figure(3, 3, panel_size=(4.2, 3.5),
                       title=f"Score field of a fine rule ({s['mode']} mode): y = sin({s['k']:g}x) + σ_r ε, σ_r = "
                             f"{s['sigma_r']:g}, vp_linear; MLP width {s['width']}, {s['train_steps']} steps, n = {s['n']}")
    gx, gy = np.array(res["grid_x"]), np.array(res["grid_y"])
    X, Y = np.meshgrid(gx, gy)
    xs, f_curve = np.array(res["rule_curve"]["x"]), np.array(res["rule_curve"]["f"])
    mags = [np.linalg.norm(np.array(f[w]), axis=-1) for f in res["fields"] for w in ("exact", "learned")]
    norm = mcolors.LogNorm(vmin=max(min(m.min() for m in mags), 1e-3), vmax=max(m.max() for m in mags))
    quiv = None
    for col, f in enumerate(res["fields"]):
        for row, which in enumerate(("exact", "learned")):
            ax = axes[row, col]
            v = np.array(f[which])
            mag = np.linalg.norm(v, axis=-1)
            u = v / np.maximum(mag, 1e-12)[:, None]
            quiv = ax.quiver(X.ravel(), Y.ravel(), u[:, 0], u[:, 1], mag, cmap="viridis", norm=norm, scale=30,
                             width=0.004)
            ax.plot(f["alpha"] * xs, f["alpha"] * f_curve, color=color("empirical"), lw=1.2,
                    label="noised rule α(t)·(x, f(x))")
            ax.set_xlim(*GRID_X)
            ax.set_ylim(*GRID_Y)
            ax.set_xlabel("z_t, x-coordinate")
            ax.set_ylabel("z_t, y-coordinate")
            label = "exact ∇log p_t" if which == "exact" else "learned s_θ"
            ax.set_title(f"{label}, t = {f['t']:.3g} (σ/α = {f['noise_to_signal']:.2g})", fontsize=9)
            if which == "learned":
                ax.text(0.02, 0.02, f"F(t)/E‖∇log p_t‖² = {f['relative_fisher']:.2g}\n"
                        f"rule-normal share {f['normal_share']:.2f}", transform=ax.transAxes, fontsize=7,
                        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.6"})
            if row == 0 and col == 0:
                ax.legend(fontsize=7, loc="upper right")
    fig.colorbar(quiv, ax=axes[:2, :].ravel().tolist(), label="score magnitude ‖s‖ (1/data units, log scale)",
                 shrink=0.6)
    for col, name in enumerate(("oracle", "learned")):
        ax = axes[2, col]
        z = np.array(res["samples"][name])
        m = res["sample_metrics"][name]
        ax.scatter(z[:, 0], z[:, 1], s=2, alpha=0.5, color=color(name), label=f"{name} samples")
        ax.plot(xs, f_curve, color="k", lw=1.0, label=f"true rule f(x) = sin({s['k']:g}x)")
        ax.set_xlim(*GRID_X)
        ax.set_ylim(*GRID_Y)
        ax.set_xlabel("x (data units)")
        ax.set_ylabel("y (data units)")
        ax.set_title(f"{name} samples: ρ = {m['rho']:.2f}, ρ_fine = {m['rho_fine']:.2f}, "
                     f"coarse/σ_r = {m['coarse_ratio']:.2f}", fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
    ax = axes[2, 2]
    idx = np.arange(len(res["fields"]))
    tot = [f["fisher_total"] for f in res["fields"]]
    nor = [f["fisher_normal"] for f in res["fields"]]
    ax.bar(idx - 0.2, tot, 0.4, color=color("learned"), label="F(t) total")
    ax.bar(idx + 0.2, nor, 0.4, color=color("other"), label="F_⊥(t) rule-normal part")
    ax.set_yscale("log")
    ax.set_xticks(idx, [f"t = {f['t']:.3g}" for f in res["fields"]])
    ax.set_ylabel("E‖s_θ − ∇log p_t‖² (1/data units²)")
    ax.set_title("Fisher divergence at the three t", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def _numbers(res: dict) -> dict:
    """The stored numbers --check compares (fields, metrics, training; samples excluded for size)."""
    return {k: v for k, v in res.items() if k != "samples"}


def main(argv: Sequence[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    s = _settings(args)
    suffix = "_quick" if args.quick else ""
    path = Path(args.out) / f"{EXPERIMENT}{suffix}.json"
    if args.check and not path.exists():  # before the computation, not after it
        raise SystemExit(f"error: --check needs {path}; run the experiment first")
    start = time.perf_counter()
    res = compute(s, args.seed)
    elapsed = time.perf_counter() - start
    if args.check:
        from experiments._study_helpers import report_check

        stored = read_json(path)["results"]
        numbers = _numbers(res)
        return report_check(numbers, {k: v for k, v in stored.items() if k in numbers})
    fig = plot(res, s)
    results = {**_numbers(res), "samples": res["samples"], "wall_seconds_this_run": elapsed}
    path = write_results(path, experiment=EXPERIMENT, config={"settings": s, "noise_levels_in_sigma_r":
                                                                 list(NOISE_LEVELS_IN_SIGMA_R)},
                         seed=args.seed, results=results, fig=fig)
    for f in res["fields"]:
        print(f"t = {f['t']:.4g} (σ/α = {f['noise_to_signal']:.3g}): F/E‖∇log p_t‖² = {f['relative_fisher']:.3g}, "
              f"rule-normal share {f['normal_share']:.3f}")
    for name, m in res["sample_metrics"].items():
        print(f"{name}: rho {m['rho']:.3f}, rho_fine {m['rho_fine']:.3f}, coarse_ratio {m['coarse_ratio']:.3f}")
    print(f"this run {elapsed:.0f} s; wrote {path} and {path.with_suffix('.png')}")
    return {"path": str(path), **{k: v for k, v in results.items() if k != "samples"}}


if __name__ == "__main__":
    from experiments._cli import run as run_cli

    run_cli(main)
