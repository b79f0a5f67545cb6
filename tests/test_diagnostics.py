"""Score-level diagnostics (Fisher split along the rule normal) and checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsmtheory import checkpoint
from dsmtheory.diagnostics import fisher_profile, rule_normal_share
from dsmtheory.dsm import TrainConfig, learned_score, train
from dsmtheory.families.linear_gaussian import LinearGaussian
from dsmtheory.networks import network_config
from dsmtheory.schedules import VPLinear
from dsmtheory.scores import ExactScore, ScoreFunction

FAM = LinearGaussian.create(mu_x=(0.0,), sigma_r=0.1)  # rule y = x: unit normal (−1, 1)/√2
SCHED = VPLinear()
T_GRID = jnp.array([0.01, 0.1, 0.5, 1.0])


class ShiftedExact(ScoreFunction):
    """The exact score plus a constant error vector `shift` [2] (stackable: [E, 2])."""

    family: LinearGaussian
    schedule: VPLinear
    shift: jax.Array

    def __call__(self, z, t):
        return self.family.score(z, t, self.schedule) + self.shift


def test_exact_score_has_zero_fisher_and_zero_share():
    prof = fisher_profile(jax.random.PRNGKey(0), ExactScore(FAM, SCHED), FAM, SCHED, T_GRID, n_per_t=256)
    for k in ("total", "normal", "rest"):
        assert np.all(prof[k] == 0.0), (k, prof[k])
    assert prof["normal_share_grid"] == 0.0
    share = rule_normal_share(jax.random.PRNGKey(1), ExactScore(FAM, SCHED), FAM, SCHED, n=256)
    assert share["excess"] == 0.0 and share["normal_share"] == 0.0


def test_split_sums_to_total_and_matches_closed_form_for_constant_errors():
    # δ = v constant: F = ‖v‖², F_⊥ = ⟨v, n⟩² with n = (−1, 1)/√2, at every t.
    shifts = jnp.array([[0.3, -0.2], [0.0, 0.5], [0.4, 0.4]])
    score = ShiftedExact(FAM, SCHED, shifts)
    axes = ShiftedExact(None, None, 0)
    prof = fisher_profile(jax.random.PRNGKey(2), score, FAM, SCHED, T_GRID, n_per_t=256, member_axes=axes)
    assert prof["total"].shape == (3, 4)
    v = np.asarray(shifts, np.float64)
    normal = ((v[:, 1] - v[:, 0]) ** 2 / 2)[:, None]
    total = np.sum(v**2, 1)[:, None]
    np.testing.assert_allclose(prof["total"], np.broadcast_to(total, (3, 4)), rtol=1e-5)
    np.testing.assert_allclose(prof["normal"], np.broadcast_to(normal, (3, 4)), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(prof["normal"] + prof["rest"], prof["total"], rtol=1e-5)
    # the error along (1, 1) (third member) is tangent to the rule: no normal share
    np.testing.assert_allclose(prof["normal_share_grid"], (normal / total)[:, 0], atol=1e-5)
    share = rule_normal_share(jax.random.PRNGKey(3), score, FAM, SCHED, n=512, member_axes=axes)
    np.testing.assert_allclose(share["normal_share"], (normal / total)[:, 0], atol=1e-5)
    np.testing.assert_allclose(share["normal"] + share["rest"], share["excess"], rtol=1e-5)
    assert share["isotropic_share"] == 0.5


def test_split_sums_to_total_for_state_dependent_error():
    class Warped(ScoreFunction):
        family: LinearGaussian
        schedule: VPLinear

        def __call__(self, z, t):
            return self.family.score(z, t, self.schedule) + 0.3 * jnp.sin(z[..., ::-1]) * t[..., None]

    prof = fisher_profile(jax.random.PRNGKey(4), Warped(FAM, SCHED), FAM, SCHED, T_GRID, n_per_t=512)
    assert np.all(prof["total"] > 0)
    np.testing.assert_allclose(prof["normal"] + prof["rest"], prof["total"], rtol=1e-5)
    assert 0.0 < prof["normal_share_grid"] < 1.0


def test_rejects_families_without_a_single_rule_normal():
    fam = LinearGaussian.create(mu_x=(0.0, 0.0), sigma_r=0.1)  # dx = 2
    with pytest.raises(ValueError, match="dx = dy = 1"):
        fisher_profile(jax.random.PRNGKey(0), ExactScore(fam, SCHED), fam, SCHED, T_GRID)


def test_checkpoint_roundtrip_gives_same_scores(tmp_path):
    cfg = TrainConfig(network=network_config("mlp", 2, width=16, depth=2), n_steps=40, batch_size=16, lr=3e-3,
                      warmup=5, log_every=20, ema_decay=0.9, eval_size=64)  # = tests/test_dsm.py SMALL
    data = FAM.sample(jax.random.PRNGKey(0), 96)
    res = train(jax.random.PRNGKey(1), data, SCHED, cfg, family=FAM)
    paths = checkpoint.save(tmp_path / "model", res)
    assert all(p.exists() for p in paths)
    back = checkpoint.restore(tmp_path / "model")
    assert back.config == res.config and back.schedule == res.schedule
    z = jax.random.normal(jax.random.PRNGKey(2), (64, 2))
    t = jnp.linspace(SCHED.t_min, 1.0, 64)
    for use_ema in (True, False):
        a = learned_score(res, use_ema=use_ema)(z, t)
        b = learned_score(back, use_ema=use_ema)(z, t)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # a restored model is an ordinary score: the diagnostics run on it
    prof = fisher_profile(jax.random.PRNGKey(3), learned_score(back), FAM, SCHED, T_GRID, n_per_t=128)
    assert np.all(np.isfinite(prof["total"])) and np.all(prof["total"] > 0)
    with pytest.raises(FileNotFoundError):
        checkpoint.restore(tmp_path / "missing")


def test_custom_module_trains_and_checkpoints(tmp_path):
    # Any flax module with apply(params, z, t) can be trained (config.network = None);
    # restoring it needs the module. (Same module/shapes as above: no new compilation.)
    from dsmtheory.networks import make_network

    module = make_network("mlp", 2, width=16, depth=2, schedule=SCHED)
    cfg = TrainConfig(network=None, n_steps=40, batch_size=16, lr=3e-3, warmup=5, log_every=20, ema_decay=0.9,
                      eval_size=64)
    data = FAM.sample(jax.random.PRNGKey(0), 96)
    res = train(jax.random.PRNGKey(1), data, SCHED, cfg, model=module, family=FAM)
    assert np.all(np.isfinite(res.history["fisher_excess"]))
    checkpoint.save(tmp_path / "custom", res)
    with pytest.raises(ValueError, match="custom model"):
        checkpoint.restore(tmp_path / "custom")
    back = checkpoint.restore(tmp_path / "custom", model=module)
    z = jnp.ones((4, 2))
    t = jnp.full((4,), 0.2)
    np.testing.assert_array_equal(np.asarray(learned_score(back)(z, t)), np.asarray(learned_score(res)(z, t)))
