"""The paper recipe's continuation (utils/losses/scale_tanh.py) against a NumPy simulation of the ScaleTanH layer's
counter
(docs/protocol.md#paper-recipe): the scale around the first step and at the last iteration, exact resume, backward."""
import math

import numpy as np
import paddle
import pytest

from utils.losses.scale_tanh import ScaleTanH
from utils.runtime.errors import UsageError


def caffe_scales(passes, setup_pass=True, init_scale=1.0, gamma=0.005, power=0.5, step_size=200):
    """Scale of each training forward pass 1..passes: the layer's Reshape increments its counter at set-up and before
    every forward, and sets the scale when the counter is a multiple of step_size."""
    counter, scale, scales = 0, init_scale, []
    calls = ["setup"] * setup_pass + ["forward"] * passes
    for call in calls:
        counter += 1
        if counter % step_size == 0:
            scale = init_scale * math.pow(1 + gamma * counter, power)
        if call == "forward":
            scales.append(scale)
    return np.array(scales)


def run(continuation, passes):
    return np.array([continuation.step() for _ in range(passes)])


@pytest.mark.parametrize("setup_pass", [True, False])
def test_scale_per_iteration_matches_the_layer(setup_pass):
    got = run(ScaleTanH(counts_setup_pass=setup_pass), 10_000)
    want = caffe_scales(10_000, setup_pass)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    at = {i: got[i - 1] for i in (198, 199, 200, 201, 399, 400, 9_999, 10_000)}
    if setup_pass:   # the layer as written: the counter is one ahead of the forward passes
        assert at[198] == 1.0
        assert at[199] == at[200] == at[201] == pytest.approx(math.sqrt(2), rel=1e-12)
        assert at[399] == pytest.approx(math.sqrt(3), rel=1e-12)
        assert at[9_999] == at[10_000] == pytest.approx(math.sqrt(51), rel=1e-12)
    else:            # thuml's PyTorch code and the reading: the new scale from pass 200
        assert at[198] == at[199] == 1.0
        assert at[200] == at[201] == pytest.approx(math.sqrt(2), rel=1e-12)
        assert at[399] == pytest.approx(math.sqrt(2), rel=1e-12) and at[400] == pytest.approx(math.sqrt(3))
        assert at[9_999] == pytest.approx(math.sqrt(50), rel=1e-12)      # set at pass 9,800
        assert at[10_000] == pytest.approx(math.sqrt(51), rel=1e-12)


def test_resume_continues_with_the_same_scales():
    straight = run(ScaleTanH(), 650)
    first = ScaleTanH()
    before = run(first, 330)
    state = first.state_dict()
    resumed = ScaleTanH()
    resumed.set_state_dict(state)
    assert resumed.forward_passes == 330 and resumed.scale == first.scale
    np.testing.assert_array_equal(np.concatenate([before, run(resumed, 320)]), straight)
    with pytest.raises(UsageError, match=r"counted the set-up pass: True, this run: False"):
        ScaleTanH(counts_setup_pass=False).set_state_dict(state)
    with pytest.raises(UsageError, match=r"step_size must be a positive integer, got 0"):
        ScaleTanH(step_size=0)


def test_activation_and_its_backward_are_the_layers():
    continuation = ScaleTanH()
    run(continuation, 399)                                   # scale sqrt(3)
    x = np.linspace(-2, 2, 12).reshape(3, 4)
    dy = np.arange(12, dtype=np.float64).reshape(3, 4) - 5
    inputs = paddle.to_tensor(x, stop_gradient=False)
    y = continuation(inputs)
    (y * paddle.to_tensor(dy)).sum().backward()
    scale = math.sqrt(3)
    np.testing.assert_allclose(y.numpy(), np.tanh(scale * x), rtol=1e-12)
    # the layer's Backward: scale * top_diff * (1 - tanh^2), from its own output
    np.testing.assert_allclose(inputs.grad.numpy(), scale * dy * (1 - y.numpy() ** 2), rtol=1e-12)
