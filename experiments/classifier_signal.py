"""Where the fine-rule signal disappears (THEORY §6): rule-classifier AUC against the
diffusion time t and against the negatives' offset δ/σ_r, exact vs learned classifier.

    python -m experiments.classifier_signal --quick    # < 2 min on 2 CPU cores
    python -m experiments.classifier_signal            # more training, larger held-out sets
    python -m experiments.classifier_signal --check    # recompute one stored curve, compare

Family: linear-Gaussian x ~ N(0, 1), y = x + σ_r ε (σ_r = `--sigma-r`, default 0.1), VP-linear.
Both classifiers are for the same task: positives (data) against the training mixture of
negatives (half coarse — y shuffled across x —, half fine y ± s σ_r, s ∈ {1, 2, 4}). The exact
one is the Bayes posterior of that mixture (ratio of noised Gaussians); the learned one is a
`RuleClassifierNet` ensemble (mean logit) trained by `train_classifier`. AUC is measured per
kind of negative (coarse, and fine with δ/σ_r ∈ {0.5, 1, 2, 4, 8}: 0.5 and 8 are outside the
training mixture) on FRESH held-out noised pairs (`heldout_auc`), the same pairs for both
classifiers. The fine signal at offset δ should vanish once the forward noise in data units,
σ(t)/α(t), is large against δ: for each kind the JSON gives the first grid time at which
the exact AUC is within 3 null sd of 0.5 and σ/α there, in units of δ.
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
from dsmtheory.results import read_json, write_results  # noqa: E402
from dsmtheory.schedules import get_schedule  # noqa: E402
from experiments._cli import experiment_parser, with_overrides

EXPERIMENT = "classifier_signal"
KINDS = ["coarse", "fine:0.5", "fine:1", "fine:2", "fine:4", "fine:8"]
MODES = {
    "quick": {"n_t": 10, "n_heldout": 2000, "train_n": 4096, "train_steps": 1500, "hidden": 64, "seeds": 2},
    "full": {"n_t": 16, "n_heldout": 8000, "train_n": 16384, "train_steps": 6000, "hidden": 128, "seeds": 4},
}
SNAPSHOT_T = [0.003, 0.01, 0.03, 0.1]


def _parser() -> argparse.ArgumentParser:
    p = experiment_parser("python -m experiments.classifier_signal", __doc__.split("\n\n")[0],
                          quick_help="small run (< 2 min on 2 cores)",
                          check_help="recompute the exact-classifier curves and compare")
    p.add_argument("--sigma-r", type=float, default=0.1)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--n-heldout", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--train-n", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    return p


def _config(args) -> dict:
    cfg = with_overrides(MODES["quick" if args.quick else "full"],
                         {"train_steps": args.train_steps, "n_heldout": args.n_heldout, "seeds": args.seeds,
                          "train_n": args.train_n, "hidden": args.hidden})
    if not args.sigma_r > 0:
        raise SystemExit("error: --sigma-r must be > 0")
    cfg.update(mode="quick" if args.quick else "full", sigma_r=args.sigma_r, schedule="vp_linear", kinds=KINDS,
               negatives=G.NegativeSpec().to_config(), snapshot_t=SNAPSHOT_T)
    return cfg


def _t_grid(schedule, n_t):
    return np.geomspace(2 * schedule.t_min, schedule.t_max, n_t)


def _exact_auc(cfg, seed):
    schedule = get_schedule(cfg["schedule"])
    fam = LinearGaussian.create(mu_x=(0.0,), cov_x=[[1.0]], A=[[1.0]], sigma_r=cfg["sigma_r"])
    exact = G.exact_linear_gaussian_classifier(fam, schedule, G.NegativeSpec())
    t_all = np.concatenate([_t_grid(schedule, cfg["n_t"]), cfg["snapshot_t"]])
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 7)
    return fam, schedule, t_all, key, G.heldout_auc(key, exact, fam, schedule, t_all, KINDS, n=cfg["n_heldout"])


def run(cfg: dict, seed: int) -> dict:
    fam, schedule, t_all, key, exact = _exact_auc(cfg, seed)
    data = fam.sample(jax.random.fold_in(jax.random.PRNGKey(seed), 1), cfg["train_n"])
    ccfg = G.ClassifierConfig(hidden=cfg["hidden"], depth=3, n_steps=cfg["train_steps"], batch_size=256)
    fit = G.train_classifier(jax.random.fold_in(jax.random.PRNGKey(seed), 2), fam, data, schedule, ccfg,
                             n_seeds=cfg["seeds"])
    learned = G.heldout_auc(key, fit.ensemble(), fam, schedule, t_all, KINDS, n=cfg["n_heldout"])
    n_t = cfg["n_t"]
    null_sd = exact["null_std"]
    vanish = {}
    for kind in KINDS:
        a = np.asarray(exact["auc"][kind][:n_t])
        t = np.asarray(exact["t"][:n_t])
        idx = np.nonzero(a < 0.5 + 3 * null_sd)[0]
        base, scale = G.parse_kind(kind)
        if len(idx) == 0:
            vanish[kind] = {"t": None, "noise_to_signal": None, "noise_over_delta": None}
        else:
            t_star = float(t[idx[0]])
            nts = float(schedule.noise_to_signal(t_star))
            vanish[kind] = {"t": t_star, "noise_to_signal": nts,
                            "noise_over_delta": nts / (scale * cfg["sigma_r"]) if base == "fine" else None}
    split = lambda d: {k: v[:n_t] for k, v in d.items()}  # noqa: E731
    snap = lambda d: {k: v[n_t:] for k, v in d.items()}  # noqa: E731
    return {
        "t": exact["t"][:n_t],
        "noise_to_signal": [float(schedule.noise_to_signal(t)) for t in exact["t"][:n_t]],
        "auc_exact": split(exact["auc"]),
        "auc_learned": split(learned["auc"]),
        "snapshot_t": exact["t"][n_t:],
        "snapshot_auc_exact": snap(exact["auc"]),
        "snapshot_auc_learned": snap(learned["auc"]),
        "null_std": null_sd,
        "n_heldout_per_class": cfg["n_heldout"],
        "signal_vanishes": vanish,
        "classifier_final_loss": float(np.mean(np.asarray(fit.losses)[:, -100:])),
        "heldout": "fresh samples from the family, never the training pairs; same pairs for both classifiers",
    }


def _figure(res: dict, cfg: dict):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(KINDS)))
    t = np.asarray(res["t"])
    for kind, c in zip(KINDS, colours):
        ax1.plot(t, res["auc_exact"][kind], "-", color=c, label=f"{kind} (exact)")
        ax1.plot(t, res["auc_learned"][kind], "--", color=c, marker=".")
    band = 3 * res["null_std"]
    ax1.axhspan(0.5 - band, 0.5 + band, color="grey", alpha=0.2, label="chance ± 3 null sd")
    ax1.set_xscale("log")
    ax1.set_xlabel("diffusion time t (VP-linear, log scale)")
    ax1.set_ylabel("held-out AUC (dimensionless)")
    ax1.set_title(f"AUC against t per negative kind (σ_r = {cfg['sigma_r']:g})\nsolid: exact, dashed: learned")
    ax1.legend(fontsize=7, ncol=2)
    ax1.grid(alpha=0.3)
    fine = [k for k in KINDS if k.startswith("fine")]
    d = [G.parse_kind(k)[1] for k in fine]
    scol = plt.cm.plasma(np.linspace(0, 0.8, len(res["snapshot_t"])))
    for j, (ts, c) in enumerate(zip(res["snapshot_t"], scol)):
        ax2.plot(d, [res["snapshot_auc_exact"][k][j] for k in fine], "-o", color=c,
                 label=f"t = {ts:.3g} (σ/α = {float(get_schedule(cfg['schedule']).noise_to_signal(ts)) / cfg['sigma_r']:.2g} σ_r)")
        ax2.plot(d, [res["snapshot_auc_learned"][k][j] for k in fine], "--x", color=c)
    ax2.axhspan(0.5 - band, 0.5 + band, color="grey", alpha=0.2)
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(d)
    ax2.set_xticklabels([f"{v:g}" for v in d])
    ax2.set_xlabel("fine negative offset δ / σ_r (log scale)")
    ax2.set_ylabel("held-out AUC (dimensionless)")
    ax2.set_title("AUC against the fine offset δ/σ_r\nsolid: exact, dashed: learned")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    return fig


def _check(args) -> int:
    path = Path(args.out) / f"{EXPERIMENT}.json"
    if not path.exists():
        print(f"error: --check needs {path}; run the experiment first", file=sys.stderr)
        return 2
    stored = read_json(path)
    cfg, seed = stored["config"], stored["seed"]
    _, _, _, _, exact = _exact_auc(cfg, seed)
    n_t = cfg["n_t"]
    worst = max(abs(a - b) for k in KINDS for a, b in zip(exact["auc"][k][:n_t], stored["results"]["auc_exact"][k]))
    ok = worst <= 1e-4
    print(f"check exact-classifier AUC curves: max |stored − recomputed| = {worst:.2e} -> {'OK' if ok else 'MISMATCH'}")
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
    for kind, v in res["signal_vanishes"].items():
        print(f"{kind:9s}: exact AUC at t={res['t'][0]:.3g}: {res['auc_exact'][kind][0]:.3f} "
              f"(learned {res['auc_learned'][kind][0]:.3f}); chance from t = {v['t']}, σ/α/δ = {v['noise_over_delta']}")
    fig = _figure(res, cfg)
    path = write_results(Path(args.out) / f"{EXPERIMENT}.json", experiment=EXPERIMENT, config=cfg, seed=args.seed,
                         results=res, fig=fig)
    plt.close(fig)
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return res


if __name__ == "__main__":
    from experiments._cli import run as run_cli

    run_cli(main)
