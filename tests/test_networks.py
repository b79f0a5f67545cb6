"""Score networks: shapes, configs, preconditioning, and the feature-local network's locality."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsmtheory.networks import (
    FeatureLocalScoreNet,
    MLPScoreNet,
    ModuleApply,
    NetworkConfig,
    make_network,
    network_config,
    precondition,
)
from dsmtheory.schedules import EDM, VE, VPLinear


def test_shapes_and_batch_dims():
    @jax.jit
    def run(z, t):
        outs = []
        for kind in ("mlp", "two_layer", "feature_local"):
            net = make_network(kind, 3, width=8, schedule=VPLinear(), dx=1)
            params = net.init(jax.random.PRNGKey(1), z[0], t[0])
            outs.append((net.apply(params, z, t), net.apply(params, z[0], t[0])))
        return outs

    z = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 3))  # two leading batch dims
    t = jnp.full((2, 5), 0.3)
    for both, first in run(z, t):
        assert both.shape == (2, 5, 3)
        np.testing.assert_allclose(both[0], first, rtol=1e-5, atol=1e-6)
        assert np.all(np.isfinite(np.asarray(both)))


def test_two_layer_has_one_hidden_layer_of_width_m():
    net = make_network("two_layer", 2, width=7)
    assert isinstance(net, MLPScoreNet) and net.depth == 1
    params = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1,)))
    kernels = {k: v["kernel"].shape for k, v in params["params"].items()}
    assert kernels["hidden_0"] == (2, 7) and kernels["out"] == (7, 2) and "hidden_1" not in kernels
    with pytest.raises(ValueError, match="depth"):
        NetworkConfig(kind="two_layer", depth=2)


def test_feature_local_without_mixing_cannot_see_the_other_feature():
    # mix_width = 0: the x-output must not depend on y and vice versa (locality); with mixing it does.
    @jax.jit
    def jacobians(z, t):
        out = []
        for mix in (0, 3):
            net = FeatureLocalScoreNet(dim=2, dx=1, width=8, depth=2, mix_width=mix, schedule=VPLinear())
            params = net.init(jax.random.PRNGKey(1), z, t)
            out.append(jax.jacfwd(lambda zz: net.apply(params, zz, t))(z))  # [out, in]
        return out

    jacs = jacobians(jnp.array([0.3, -0.7]), jnp.float32(0.3))
    for (mix, independent), jac in zip(((0, True), (3, False)), jacs):
        off = abs(float(jac[0, 1])) + abs(float(jac[1, 0]))
        if independent:
            assert off == 0.0
        else:
            assert off > 1e-6


def test_feature_local_shares_weights_across_coordinates():
    # Parameters do not grow with the dimension (a conv-like shared kernel), except the fixed-size
    # group bias; the mixing bottleneck has mix_width units.
    counts = []
    for dim in (2, 6):
        net = make_network("feature_local", dim, width=8, mix_width=2, dx=dim // 2)
        params = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, dim)), jnp.zeros((1,)))
        counts.append(sum(x.size for x in jax.tree_util.tree_leaves(params)))
        assert params["params"]["mix_down_0"]["kernel"].shape == (8, 2)
    assert counts[0] == counts[1]


@pytest.mark.parametrize("schedule", [VPLinear(), VE(sigma_max=20.0), EDM()], ids=["vp", "ve", "edm"])
def test_preconditioning_gives_unit_scale_inputs(schedule):
    # z_t of unit-variance data has variance α² + σ²; c_in maps it to 1 at every t.
    t = jnp.array([schedule.t_min, 0.5 * schedule.t_max, schedule.t_max])
    var = schedule.alpha(t) ** 2 + schedule.sigma_sq(t)
    z = jnp.sqrt(var)[:, None] * jnp.ones((3, 2))
    zs, c_noise = precondition(z, t, schedule, 1.0, True)
    np.testing.assert_allclose(zs, 1.0, rtol=1e-4)
    expect = 0.25 * np.log(np.asarray(schedule.sigma(t) / schedule.alpha(t)))
    np.testing.assert_allclose(c_noise, expect, rtol=1e-4, atol=1e-5)
    zs0, t0 = precondition(z, t, None, 1.0, True)  # no schedule: identity, raw t
    np.testing.assert_array_equal(zs0, z)
    np.testing.assert_array_equal(t0, t)


def test_config_json_roundtrip_validation_and_hashable_apply():
    import json

    cfg = network_config("feature_local", 4, width=16, dx=1, mix_width=2)
    assert NetworkConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="kind"):
        make_network("resnet", 2)
    with pytest.raises(ValueError, match="width"):
        make_network("mlp", 2, width=0)
    with pytest.raises(TypeError, match="depth"):
        make_network("mlp", 2, depth=1.5)
    with pytest.raises(ValueError, match="activation"):
        make_network("mlp", 2, activation="swish2")
    with pytest.raises(ValueError, match="dx"):
        make_network("feature_local", 2, dx=2)
    with pytest.raises(TypeError, match="unexpected keyword|got an unexpected"):
        make_network("mlp", 2, widht=3)
    # equal configurations give equal (hashable) apply functions: jitted samplers are reused
    a = ModuleApply(cfg.build(VPLinear()))
    b = ModuleApply(network_config("feature_local", 4, width=16, dx=1, mix_width=2).build(VPLinear()))
    assert a == b and hash(a) == hash(b)
    assert ModuleApply(cfg.build(EDM())) != a
