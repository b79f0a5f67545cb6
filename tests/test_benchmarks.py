"""The benchmark's FLOP bookkeeping (benchmarks/bench_all.py): no timings are asserted."""

import math

import pytest

from benchmarks.bench_all import cores_ceiling, products_ceiling, step_products
from dsmtheory.networks import matmul_flops_per_example, network_config


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_step_products_are_forward_plus_backward_of_the_mlp(depth):
    net = network_config("mlp", 3, width=16, depth=depth, time_features=4)
    batch = 8
    flops = sum(2 * m * k * n for m, k, n in step_products(net, batch))
    forward = matmul_flops_per_example(net) * batch
    # backward: every weight's gradient (as many MACs as the forward pass) plus the
    # activation gradients of every layer except the input and time layers, whose
    # inputs (z and e(t)) need no gradient
    no_activation_grad = 2 * batch * (net.dim * net.width + depth * 2 * net.time_features * net.width)
    assert flops == 3 * forward - no_activation_grad


def test_step_products_refuses_other_networks():
    with pytest.raises(ValueError, match="mlp"):
        step_products(network_config("feature_local", 2), 4)


def test_products_ceiling_is_relative_to_the_first_ensemble_size():
    ratios = products_ceiling(network_config("mlp", 2, width=8, time_features=2), 4, [1, 2], repeats=1, reps=2)
    assert ratios[1] == 1.0 and math.isfinite(ratios[2]) and ratios[2] > 0


def test_cores_ceiling_scales_the_cpu_speedup_by_the_idle_cores():
    # E = 1 keeps 1.25 of 2 cores busy; E = 16 costs 1.1x less CPU per model-step: with both
    # cores busy it would run 1.1 * 2 / 1.25 = 1.76x the model-steps/s of E = 1
    base = {"E": 1, "speedup_cpu": 1.0, "cores_busy": 1.25}
    row = {"E": 16, "speedup_cpu": 1.1, "cores_busy": 1.4}
    assert cores_ceiling(row, base, 2) == pytest.approx(1.76)
    assert cores_ceiling(row, base, 4) == pytest.approx(3.52)
    assert cores_ceiling(base, base, 2) == pytest.approx(1.6)  # E = 1 itself, had it used both cores
