"""Classifier guidance against w (THEORY §6): ρ and the coarse error of guided samples,
exact vs learned rule classifier, for a coarse rule (large σ_r) and a fine rule (small σ_r).

    python -m experiments.guidance --quick     # < 2 min on 2 CPU cores
    python -m experiments.guidance             # more samples, steps and training
    python -m experiments.guidance --check     # recompute one stored cell, compare

Family: linear-Gaussian, x ~ N(0, 1), y = x + σ_r ε, with σ_r = 0.5 ("coarse rule") and
σ_r = 0.05 ("fine rule"), VP-linear schedule, Euler–Maruyama sampler.

Base score (what guidance has to fix). Guidance can only reduce ρ if the base has ρ > 1.
The base used here is DELIBERATELY MIS-SPECIFIED: the exact score of the same family with
σ_r inflated by `--base-inflation` (default 2, so the base's ρ ≈ 2, its trend is right).
It stands in for a learned score whose conditional is too wide (the paper's "fine ≈ wrong"),
and it makes the exact classifier's gain interpretable. This is recorded in the JSON
(`config.base`). A learned DSM base is not used in this experiment.

Classifiers: the exact Bayes classifier for the training negatives (a ratio of noised
Gaussians, `exact_linear_gaussian_classifier`) — the upper bound of classifier guidance —
and a learned `RuleClassifierNet` trained on `--train-n` samples of the family with the same
negatives (coarse: y shuffled across x; fine: y ± s σ_r, s ∈ {1, 2, 4}).
Guided score s + w ∇log c with the norm of w ∇log c clipped at `--clip`; the share of
(sample, t) points where the clip is active is reported (`guidance_norm_profile`).
Metrics: `dsmtheory.metrics.rule_metrics` (ρ with its MC standard error, coarse ratio).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dsmtheory import guidance as G  # noqa: E402
from dsmtheory.families.linear_gaussian import LinearGaussian  # noqa: E402
from dsmtheory.metrics import rule_metrics  # noqa: E402
from dsmtheory.results import read_json, write_results  # noqa: E402
from dsmtheory.samplers import sample  # noqa: E402
from dsmtheory.schedules import get_schedule  # noqa: E402
from dsmtheory.scores import ExactScore  # noqa: E402
from experiments._cli import experiment_parser, with_overrides

EXPERIMENT = "guidance"
RULES = {"coarse rule": 0.5, "fine rule": 0.05}
MODES = {
    "quick": {"w_grid": [0.0, 0.5, 1.0, 2.0, 4.0, 8.0], "n_samples": 2000, "sample_steps": 100,
              "train_n": 4096, "train_steps": 1500, "hidden": 64, "seeds": 2},
    "full": {"w_grid": [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0], "n_samples": 8000, "sample_steps": 300,
             "train_n": 16384, "train_steps": 6000, "hidden": 128, "seeds": 4},
}


def _parser() -> argparse.ArgumentParser:
    p = experiment_parser("python -m experiments.guidance", __doc__.split("\n\n")[0],
                          quick_help="small run (< 2 min on 2 cores)", check_help="recompute one stored cell and compare")
    p.add_argument("--base-inflation", type=float, default=2.0, help="σ_r of the base score / true σ_r")
    p.add_argument("--clip", type=float, default=200.0, help="max norm of w ∇log c per sample")
    p.add_argument("--w-grid", type=float, nargs="+", default=None)
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--sample-steps", type=int, default=None)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--train-n", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None, help="learned-classifier seeds (ensemble, mean logit)")
    p.add_argument("--hidden", type=int, default=None)
    return p


def _config(args) -> dict:
    cfg = with_overrides(MODES["quick" if args.quick else "full"],
                         {"w_grid": None if args.w_grid is None else list(args.w_grid), "n_samples": args.samples,
                          "sample_steps": args.sample_steps, "train_steps": args.train_steps,
                          "train_n": args.train_n, "seeds": args.seeds, "hidden": args.hidden})
    for w in cfg["w_grid"]:
        try:
            G.check_guidance_weight(w)
        except ValueError as err:
            raise SystemExit(f"error: --w-grid: {err}") from None
    if args.base_inflation <= 0 or args.clip <= 0:
        raise SystemExit("error: --base-inflation and --clip must be > 0")
    cfg.update(mode="quick" if args.quick else "full", rules=dict(RULES), schedule="vp_linear",
               sampler="euler_maruyama", clip=args.clip,
               base={"kind": "mis-specified exact score (NOT learned)",
                     "description": "exact score of the same linear-Gaussian family with sigma_r multiplied "
                                    "by base_inflation; its trend is exact, its conditional too wide",
                     "base_inflation": args.base_inflation},
               negatives=G.NegativeSpec().to_config())
    return cfg


def _family(sigma_r: float) -> LinearGaussian:
    return LinearGaussian.create(mu_x=(0.0,), cov_x=[[1.0]], A=[[1.0]], sigma_r=sigma_r)


def _cell(key, fam, schedule, base, clf, w, cfg) -> dict:
    """Guided samples at one w: rule metrics and the guidance-norm profile."""
    g = G.guided_score(base, clf, w, max_guidance_norm=cfg["clip"])
    z = sample(g, schedule, key, cfg["n_samples"], fam.dim, method=cfg["sampler"], n_steps=cfg["sample_steps"])
    m = rule_metrics(z, fam)
    prof = G.guidance_norm_profile(jax.random.fold_in(key, 99), g, schedule, z, [schedule.t_min * 10, 0.1, 0.5])
    return {"w": float(w), "rho": m["rho"], "rho_se": m["rho_se"], "coarse_ratio": m["coarse_ratio"],
            "coarse_error": m["coarse_error"], "rho_fine": m["rho_fine"], "violation_rate": m["violation_rate"],
            "clip_fraction": prof["clip_fraction_overall"], "max_guidance_norm_seen": prof["max_norm_overall"]}


def _keys(seed: int, rule_i: int, clf_i: int, w_i: int):
    return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), rule_i), clf_i), w_i)


def _summary(cells: list[dict]) -> dict:
    """Gain of the best w over w = 0, in units of the combined MC standard error."""
    w0 = cells[0]
    best = min(cells[1:], key=lambda c: c["rho"])
    diff = w0["rho"] - best["rho"]
    se = float(np.hypot(w0["rho_se"], best["rho_se"]))
    closest = min(cells, key=lambda c: abs(c["rho"] - 1.0))
    return {"rho_w0": w0["rho"], "best_w": best["w"], "rho_best": best["rho"], "rho_reduction": diff,
            "rho_reduction_se": se, "z_score": diff / se if se > 0 else None,
            "measurably_reduced": bool(diff > 3 * se),
            "w_closest_to_truth": closest["w"], "rho_closest_to_truth": closest["rho"],
            "note": "rho below 1 means guidance over-sharpened the conditional (too narrow), not an improvement"}


def run(cfg: dict, seed: int) -> dict:
    schedule = get_schedule(cfg["schedule"])
    out = {}
    for ri, (rule_name, sigma_r) in enumerate(RULES.items()):
        fam = _family(sigma_r)
        base = ExactScore(fam.replace(sigma_r=sigma_r * cfg["base"]["base_inflation"]), schedule)
        exact = G.exact_linear_gaussian_classifier(fam, schedule, G.NegativeSpec())
        data = fam.sample(jax.random.fold_in(jax.random.PRNGKey(seed), 1000 + ri), cfg["train_n"])
        ccfg = G.ClassifierConfig(hidden=cfg["hidden"], depth=3, n_steps=cfg["train_steps"], batch_size=256)
        fit = G.train_classifier(jax.random.fold_in(jax.random.PRNGKey(seed), 2000 + ri), fam, data, schedule, ccfg,
                                 n_seeds=cfg["seeds"])
        learned = fit.ensemble()
        oracle = rule_metrics(sample(ExactScore(fam, schedule), schedule, _keys(seed, ri, 9, 0), cfg["n_samples"],
                                     fam.dim, method=cfg["sampler"], n_steps=cfg["sample_steps"]), fam)
        res = {"sigma_r": sigma_r, "oracle_rho": oracle["rho"], "oracle_rho_se": oracle["rho_se"],
               "classifier_final_loss": float(np.mean(np.asarray(fit.losses)[:, -100:]))}
        for cname, clf in ((("exact", exact), ("learned", learned))):
            # common random numbers: both classifiers use the same sampler keys at each w
            cells = [_cell(_keys(seed, ri, 0, wi), fam, schedule, base, clf, w, cfg)
                     for wi, w in enumerate(cfg["w_grid"])]
            res[cname] = {"cells": cells, "summary": _summary(cells)}
        out[rule_name] = res
    return out


def _figure(results: dict, cfg: dict):
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), constrained_layout=True)
    for col, (rule_name, res) in enumerate(results.items()):
        for row, (key, label) in enumerate((("rho", "rule error ratio ρ"), ("coarse_ratio", "coarse error / σ_r"))):
            ax = axes[row, col]
            for cname, colour in (("exact", "tab:blue"), ("learned", "tab:red")):
                cells = res[cname]["cells"]
                w = np.asarray([c["w"] for c in cells])
                x = np.where(w == 0, w[1] / 2 if len(w) > 1 else 0.1, w)  # w = 0 drawn left of the grid
                y = np.asarray([c[key] for c in cells])
                yerr = np.asarray([c["rho_se"] for c in cells]) if key == "rho" else None
                ax.errorbar(x, y, yerr=yerr, marker="o", color=colour, capsize=3,
                            label=f"{cname} classifier" + (" (upper bound)" if cname == "exact" else ""))
            if key == "rho":
                ax.axhline(1.0, color="k", ls=":", lw=1, label="truth (ρ = 1)")
                ax.axhline(res["oracle_rho"], color="tab:green", ls="--", lw=1, label="exact score, unguided")
            ax.set_xscale("log")
            w = np.asarray([c["w"] for c in res["exact"]["cells"]])
            ticks = np.where(w == 0, w[1] / 2 if len(w) > 1 else 0.1, w)
            ax.minorticks_off()
            ax.set_xticks(ticks)
            ax.set_xticklabels([f"{v:g}" for v in w])
            ax.set_xlabel("guidance weight w (log-spaced axis; first point is w = 0)")
            ax.set_ylabel(label + (" (dimensionless)"))
            ax.set_title(f"{rule_name} (σ_r = {res['sigma_r']:g}): {label}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"Classifier guidance on a mis-specified base (exact score with σ_r × {cfg['base']['base_inflation']:g}); "
                 f"{cfg['n_samples']} samples, {cfg['sample_steps']} EM steps, VP-linear", fontsize=10)
    return fig


def _check(args, cfg) -> int:
    path = Path(args.out) / f"{EXPERIMENT}.json"
    if not path.exists():
        print(f"error: --check needs {path}; run the experiment first", file=sys.stderr)
        return 2
    stored = read_json(path)
    scfg, seed = stored["config"], stored["seed"]
    rule_name = "fine rule"
    ri = list(RULES).index(rule_name)
    sigma_r = RULES[rule_name]
    schedule = get_schedule(scfg["schedule"])
    fam = _family(sigma_r)
    base = ExactScore(fam.replace(sigma_r=sigma_r * scfg["base"]["base_inflation"]), schedule)
    exact = G.exact_linear_gaussian_classifier(fam, schedule, G.NegativeSpec(**{
        k: (tuple(v) if k == "fine_scales" else v) for k, v in scfg["negatives"].items()}))
    cells = stored["results"][rule_name]["exact"]["cells"]
    wi = int(np.argmin([c["rho"] for c in cells]))
    new = _cell(_keys(seed, ri, 0, wi), fam, schedule, base, exact, scfg["w_grid"][wi], scfg)
    ok = abs(new["rho"] - cells[wi]["rho"]) <= 1e-3 * abs(cells[wi]["rho"])
    print(f"check {rule_name}, exact classifier, w = {scfg['w_grid'][wi]}: stored ρ = {cells[wi]['rho']:.5f}, "
          f"recomputed ρ = {new['rho']:.5f} -> {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    cfg = _config(args)
    if args.check:
        code = _check(args, cfg)
        if code:
            raise SystemExit(code)
        return {"check": "ok"}
    results = run(cfg, args.seed)
    for rule_name, res in results.items():
        for cname in ("exact", "learned"):
            s = res[cname]["summary"]
            print(f"{rule_name:11s} {cname:7s}: ρ(w=0) = {s['rho_w0']:.3f}, best w = {s['best_w']:g}: "
                  f"ρ = {s['rho_best']:.3f} (reduction {s['rho_reduction']:.3f} ± {s['rho_reduction_se']:.3f})")
    fig = _figure(results, cfg)
    path = write_results(Path(args.out) / f"{EXPERIMENT}.json", experiment=EXPERIMENT, config=cfg, seed=args.seed,
                         results=results, fig=fig)
    plt.close(fig)
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return results


if __name__ == "__main__":
    from experiments._cli import run as run_cli

    run_cli(main)
