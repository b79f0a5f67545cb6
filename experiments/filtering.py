"""Filtering generated samples by a rule detector (THEORY §6): acceptance rate and ρ
before and after, for a coarse and a fine rule.

    python -m experiments.filtering --quick    # < 2 min on 2 CPU cores
    python -m experiments.filtering            # more samples and training
    python -m experiments.filtering --check    # recompute one stored cell, compare

Family: linear-Gaussian x ~ N(0, 1), y = x + σ_r ε, σ_r ∈ {0.5 (coarse rule), 0.05 (fine rule)},
VP-linear schedule, Euler–Maruyama sampler. Generated samples come from a DELIBERATELY
MIS-SPECIFIED base score (the exact score of the same family with σ_r × `--base-inflation`,
default 2; NOT a learned model), so that there is something to filter; fresh samples of the
true family are filtered the same way as a reference (a detector also truncates the truth:
its ρ after filtering is < 1 too, and its acceptance is the detector's true-positive rate).

Detectors on the clean sample (`dsmtheory.guidance`):
- oracle |y − f(x)| < c σ_r (c = 2 and 3): uses the known rule — an upper bound, not
  available in practice;
- exact classifier at t_min, P(conforms | z) > 1/2: the Bayes classifier of data against the
  training mixture of negatives (coarse: y shuffled across x; fine: y ± s σ_r, s ∈ {1, 2, 4});
- learned classifier at t_min, P > 1/2: a `RuleClassifierNet` ensemble trained on those
  negatives from `--train-n` family samples.
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

EXPERIMENT = "filtering"
RULES = {"coarse rule": 0.5, "fine rule": 0.05}
DETECTORS = ("oracle c=2", "oracle c=3", "exact classifier", "learned classifier")
MODES = {
    "quick": {"n_samples": 4000, "sample_steps": 100, "train_n": 4096, "train_steps": 1500, "hidden": 64, "seeds": 2},
    "full": {"n_samples": 16000, "sample_steps": 300, "train_n": 16384, "train_steps": 6000, "hidden": 128,
             "seeds": 4},
}


def _parser() -> argparse.ArgumentParser:
    p = experiment_parser("python -m experiments.filtering", __doc__.split("\n\n")[0],
                          quick_help="small run (< 2 min on 2 cores)", check_help="recompute one stored cell and compare")
    p.add_argument("--base-inflation", type=float, default=2.0)
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--train-n", type=int, default=None)
    p.add_argument("--sample-steps", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    return p


def _config(args) -> dict:
    cfg = with_overrides(MODES["quick" if args.quick else "full"],
                         {"n_samples": args.samples, "train_steps": args.train_steps, "seeds": args.seeds,
                          "train_n": args.train_n, "hidden": args.hidden, "sample_steps": args.sample_steps})
    if not args.base_inflation > 0:
        raise SystemExit("error: --base-inflation must be > 0")
    cfg.update(mode="quick" if args.quick else "full", rules=dict(RULES), schedule="vp_linear",
               sampler="euler_maruyama", detectors=list(DETECTORS), classifier_threshold=0.5,
               base={"kind": "mis-specified exact score (NOT learned)", "base_inflation": args.base_inflation},
               negatives=G.NegativeSpec().to_config())
    return cfg


def _family(sigma_r):
    return LinearGaussian.create(mu_x=(0.0,), cov_x=[[1.0]], A=[[1.0]], sigma_r=sigma_r)


def _samples(cfg, seed, ri, fam, schedule):
    """(generated, truth) clean samples for rule ri."""
    base = ExactScore(fam.replace(sigma_r=fam.sigma_r * cfg["base"]["base_inflation"]), schedule)
    k = jax.random.fold_in(jax.random.PRNGKey(seed), ri)
    gen = sample(base, schedule, jax.random.fold_in(k, 1), cfg["n_samples"], fam.dim, method=cfg["sampler"],
                 n_steps=cfg["sample_steps"])
    truth = fam.sample(jax.random.fold_in(k, 2), cfg["n_samples"])
    return gen, truth


def _filtered(z, fam, detector) -> dict:
    before = rule_metrics(z, fam)
    kept, rate = G.filter_samples(z, detector)
    out = {"acceptance": rate, "n_accepted": int(kept.shape[0]), "rho_before": before["rho"],
           "rho_before_se": before["rho_se"], "coarse_ratio_before": before["coarse_ratio"]}
    if kept.shape[0] >= 20:  # rule_metrics needs enough points for its bins
        after = rule_metrics(kept, fam)
        out.update(rho_after=after["rho"], rho_after_se=after["rho_se"], coarse_ratio_after=after["coarse_ratio"])
    else:
        out.update(rho_after=None, rho_after_se=None, coarse_ratio_after=None)
    return out


def _detectors(fam, schedule, learned):
    exact = G.exact_linear_gaussian_classifier(fam, schedule, G.NegativeSpec())
    return {
        "oracle c=2": G.OracleDetector(fam, c=2.0),
        "oracle c=3": G.OracleDetector(fam, c=3.0),
        "exact classifier": G.ClassifierDetector(exact, t=float(schedule.t_min), threshold=0.5),
        "learned classifier": None if learned is None else G.ClassifierDetector(learned, t=float(schedule.t_min),
                                                                                  threshold=0.5),
    }


def run(cfg: dict, seed: int) -> dict:
    schedule = get_schedule(cfg["schedule"])
    out = {}
    for ri, (rule_name, sigma_r) in enumerate(RULES.items()):
        fam = _family(sigma_r)
        gen, truth = _samples(cfg, seed, ri, fam, schedule)
        data = fam.sample(jax.random.fold_in(jax.random.PRNGKey(seed), 1000 + ri), cfg["train_n"])
        ccfg = G.ClassifierConfig(hidden=cfg["hidden"], depth=3, n_steps=cfg["train_steps"], batch_size=256)
        fit = G.train_classifier(jax.random.fold_in(jax.random.PRNGKey(seed), 2000 + ri), fam, data, schedule, ccfg,
                                 n_seeds=cfg["seeds"])
        dets = _detectors(fam, schedule, fit.ensemble())
        out[rule_name] = {
            "sigma_r": sigma_r,
            "generated": {name: _filtered(gen, fam, d) for name, d in dets.items()},
            "truth": {name: _filtered(truth, fam, d) for name, d in dets.items()},
        }
    return out


def _figure(results: dict, cfg: dict):
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    x = np.arange(len(DETECTORS))
    for col, (rule_name, res) in enumerate(results.items()):
        ax = axes[0, col]
        gen, tru = res["generated"], res["truth"]
        rb = gen[DETECTORS[0]]["rho_before"]
        ax.axhline(rb, color="tab:grey", ls="--", label=f"generated, unfiltered (ρ = {rb:.2f})")
        ax.axhline(1.0, color="k", ls=":", label="truth, unfiltered (ρ = 1)")
        ra = [gen[d]["rho_after"] or np.nan for d in DETECTORS]
        ea = [gen[d]["rho_after_se"] or 0.0 for d in DETECTORS]
        rt = [tru[d]["rho_after"] or np.nan for d in DETECTORS]
        ax.bar(x - 0.2, ra, 0.4, yerr=ea, capsize=3, color="tab:red", label="generated, after filter")
        ax.bar(x + 0.2, rt, 0.4, color="tab:blue", alpha=0.7, label="truth, after the same filter")
        ax.set_xticks(x)
        ax.set_xticklabels(DETECTORS, fontsize=8)
        ax.set_ylabel("rule error ratio ρ (dimensionless)")
        ax.set_title(f"{rule_name} (σ_r = {res['sigma_r']:g}): ρ after filtering")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
        ax = axes[1, col]
        ax.bar(x - 0.2, [gen[d]["acceptance"] for d in DETECTORS], 0.4, color="tab:red", label="generated")
        ax.bar(x + 0.2, [tru[d]["acceptance"] for d in DETECTORS], 0.4, color="tab:blue", alpha=0.7, label="truth")
        ax.set_xticks(x)
        ax.set_xticklabels(DETECTORS, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("acceptance rate (fraction of samples kept)")
        ax.set_title(f"{rule_name}: acceptance rate")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Filtering samples of a mis-specified base (exact score, σ_r × {cfg['base']['base_inflation']:g}); "
                 f"{cfg['n_samples']} samples, {cfg['sample_steps']} EM steps, VP-linear", fontsize=10)
    return fig


def _check(args) -> int:
    path = Path(args.out) / f"{EXPERIMENT}.json"
    if not path.exists():
        print(f"error: --check needs {path}; run the experiment first", file=sys.stderr)
        return 2
    stored = read_json(path)
    cfg, seed = stored["config"], stored["seed"]
    schedule = get_schedule(cfg["schedule"])
    rule_name, ri = "fine rule", 1
    fam = _family(RULES[rule_name])
    gen, _ = _samples(cfg, seed, ri, fam, schedule)
    new = _filtered(gen, fam, _detectors(fam, schedule, None)["exact classifier"])
    old = stored["results"][rule_name]["generated"]["exact classifier"]
    ok = abs(new["acceptance"] - old["acceptance"]) <= 2.0 / cfg["n_samples"] and (
        old["rho_after"] is None or abs(new["rho_after"] - old["rho_after"]) <= 1e-3 * old["rho_after"])
    print(f"check {rule_name}, exact classifier: stored acceptance {old['acceptance']:.4f}, ρ after "
          f"{old['rho_after']}; recomputed {new['acceptance']:.4f}, {new['rho_after']} -> {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    cfg = _config(args)
    if args.check:
        code = _check(args)
        if code:
            raise SystemExit(code)
        return {"check": "ok"}
    res = run(cfg, args.seed)
    for rule_name, r in res.items():
        for d in DETECTORS:
            g, t = r["generated"][d], r["truth"][d]
            print(f"{rule_name:11s} {d:18s}: generated acc {g['acceptance']:.3f} ρ {g['rho_before']:.3f} -> "
                  f"{g['rho_after']}; truth acc {t['acceptance']:.3f} ρ -> {t['rho_after']}")
    fig = _figure(res, cfg)
    path = write_results(Path(args.out) / f"{EXPERIMENT}.json", experiment=EXPERIMENT, config=cfg, seed=args.seed,
                         results=res, fig=fig)
    plt.close(fig)
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return res


if __name__ == "__main__":
    from experiments._cli import run as run_cli

    run_cli(main)
