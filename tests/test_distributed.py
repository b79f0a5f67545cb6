"""Sharded ensembles (issue 7): the member axis of training and sampling split over 4
forced host devices gives the same results as the unsharded run.

XLA_FLAGS=--xla_force_host_platform_device_count=4 must be set before jax is imported,
and the test process has already imported jax with 1 device, so the check runs in a
subprocess that trains and samples both ways (shard=True / shard=False) and reports
the largest differences and where the members lived."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from dsmtheory import distributed

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, jax, jax.numpy as jnp, numpy as np
    from dsmtheory import dsm, distributed
    from dsmtheory.families.linear_gaussian import LinearGaussian
    from dsmtheory.networks import network_config
    from dsmtheory.samplers import sample_ensemble
    from dsmtheory.schedules import VPLinear

    fam = LinearGaussian.create(mu_x=(0.0,), sigma_r=0.1)
    sched = VPLinear()
    cfg = dsm.TrainConfig(network=network_config("mlp", 2, width=16), n_steps=40, batch_size=16,
                          log_every=20, eval_size=64)
    out = {"devices": jax.device_count()}
    for e, per_member in ((8, True), (6, False)):   # 8 = 2 per device; 6 is not divisible by 4
        keys = jax.random.split(jax.random.PRNGKey(3), e)
        if per_member:
            data = fam.sample(jax.random.PRNGKey(1), 8 * 64).reshape(8, 64, 2)[:e]
            n_valid = np.array([64, 40, 17, 64, 33, 50, 64, 20])[:e]
        else:
            data, n_valid = fam.sample(jax.random.PRNGKey(1), 64), None
        res = {}
        leaf_zero = jnp.zeros((e, 1))
        for shard in (True, False):
            r = dsm.train_ensemble(keys, data, sched, cfg, n_valid=n_valid, family=fam if per_member else None,
                                   shard=shard)
            res.setdefault("score", dsm.learned_score(r))  # the sharded run's score, sampled both ways below
            s = dsm.learned_score(r)
            s = s if shard else s.replace(params=jax.device_put(res["score"].params, jax.devices()[0]))
            x = sample_ensemble(s, sched, jax.random.PRNGKey(9), 32, 2, n_steps=20) if per_member else leaf_zero
            leaf = jax.tree_util.tree_leaves(r.params)[0]
            res[shard] = dict(samples_scale=float(np.max(np.abs(np.asarray(x)))), params=[np.asarray(p) for p in jax.tree_util.tree_leaves(r.params)],
                              samples=np.asarray(x), excess=np.asarray(r.history.get("excess", 0.0)),
                              param_devices=distributed.member_devices(leaf),
                              sample_devices=distributed.member_devices(x),
                              n_dev_holding=len(leaf.sharding.device_set))
        pd = max(float(np.max(np.abs(a - b))) for a, b in zip(res[True]["params"], res[False]["params"]))
        out[str(e)] = dict(param_diff=pd,
                           param_scale=max(float(np.max(np.abs(a))) for a in res[False]["params"]),
                           sample_diff=float(np.max(np.abs(res[True]["samples"] - res[False]["samples"]))),
                           excess_diff=float(np.max(np.abs(res[True]["excess"] - res[False]["excess"]))),
                           samples_scale=res[False]["samples_scale"],
                           sharded_param_devices=res[True]["param_devices"],
                           sharded_sample_devices=res[True]["sample_devices"],
                           sharded_n_dev_holding=res[True]["n_dev_holding"],
                           unsharded_param_devices=res[False]["param_devices"],
                           unsharded_n_dev_holding=res[False]["n_dev_holding"])
    print("RESULT" + json.dumps(out))
    """
)


def _run_on_forced_devices(n_devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n_devices}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_sharded_ensemble_equals_unsharded_on_4_devices():
    out = _run_on_forced_devices(4)
    assert out["devices"] == 4
    # E = 8 on 4 devices: members partitioned, 2 per device, for the params and the samples
    r8 = out["8"]
    assert r8["sharded_param_devices"] == 4 and r8["sharded_sample_devices"] == 4
    assert r8["sharded_n_dev_holding"] == 4
    assert r8["unsharded_param_devices"] == 1 and r8["unsharded_n_dev_holding"] == 1
    # E = 6 is not a multiple of 4: replicated on all 4 devices (documented policy)
    r6 = out["6"]
    assert r6["sharded_param_devices"] == 1 and r6["sharded_n_dev_holding"] == 4
    for r in (r8, r6):
        # training: the same float32 computation per member, placed differently
        assert r["param_scale"] > 0.01
        assert r["param_diff"] <= 1e-5 * max(1.0, r["param_scale"]), r
        assert r["excess_diff"] <= 1e-4, r
    # sampling: the SAME params (the sharded run's), sampled sharded and on one device
    assert r8["samples_scale"] > 0.1
    assert r8["sample_diff"] <= 1e-5 * max(1.0, r8["samples_scale"]), r8


def test_policy_on_one_device_is_identity():
    mesh = distributed.ensemble_mesh()
    assert mesh.devices.size == 1  # the test process itself has one device
    assert distributed.ensemble_sharding(8, mesh) is None
    x = np.arange(8.0).reshape(4, 2)
    assert distributed.shard_ensemble({"a": x}, mesh)["a"] is x
    import pytest

    with pytest.raises(ValueError, match="n_members"):
        distributed.ensemble_sharding(0, mesh)
    with pytest.raises(ValueError, match="leading member axis"):
        fake = distributed.ensemble_mesh([mesh.devices.flat[0]] * 2)  # a 2-"device" mesh to reach the check
        distributed.shard_ensemble({"a": np.zeros((4, 1)), "b": np.zeros((3, 1))}, fake)


def test_use_cpu_devices_before_first_computation_gives_one_device_per_request():
    """In a fresh process, use_cpu_devices(3) before any JAX computation yields 3 CPU devices
    and a sharded ensemble over them (the same placement train_ensemble uses)."""
    script = textwrap.dedent(
        """
        import json
        import jax, numpy as np
        from dsmtheory import distributed, dsm
        n = distributed.use_cpu_devices(3)
        again = distributed.use_cpu_devices(3)          # same count again: a no-op
        state = {"w": np.zeros((6, 4), np.float32)}
        placed, data, n_valid, _ = dsm.place_ensemble(state, np.zeros((10, 2), np.float32),
                                                      np.full((6,), 10, np.int32))
        try:
            distributed.use_cpu_devices(2)              # too late: the backend runs with 3
            late = "no error"
        except RuntimeError as err:
            late = str(err)
        print("RESULT" + json.dumps({"n": n, "again": again, "devices": jax.device_count(),
                                     "w_devices": distributed.member_devices(placed["w"]),
                                     "data_devices": len(data.sharding.device_set), "late": late}))
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1][len("RESULT"):])
    assert out["n"] == out["again"] == out["devices"] == 3
    assert out["w_devices"] == 3  # 6 members, 2 per device
    assert out["data_devices"] == 3  # shared data replicated on every device
    assert "use_cpu_devices(2) must be called before the first JAX computation" in out["late"]
    assert "runs with 3 device(s)" in out["late"]


def test_use_cpu_devices_checks_its_argument_and_the_running_backend():
    import jax
    import pytest

    jax.numpy.zeros(1).block_until_ready()  # the backend of this process is up
    assert distributed.use_cpu_devices(len(jax.devices("cpu"))) == len(jax.devices("cpu"))  # no-op
    with pytest.raises(RuntimeError, match="before the first JAX computation"):
        distributed.use_cpu_devices(len(jax.devices("cpu")) + 1)
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match="n \\(the number of CPU devices\\)"):
            distributed.use_cpu_devices(bad)
    assert distributed.available_cores() >= 1


def test_experiment_flag_cpu_devices():
    import jax
    import pytest

    from experiments._cli import experiment_parser

    p = experiment_parser("prog", "d", quick_help="q", check_help="c")
    assert p.parse_args([]).cpu_devices is None  # default: leave the devices alone
    assert p.parse_args(["--cpu-devices", str(jax.device_count())]).cpu_devices == jax.device_count()
    for bad in (["--cpu-devices", "-1"], ["--cpu-devices", str(jax.device_count() + 1)]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
