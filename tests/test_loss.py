"""HashNetLoss against the PyTorch memory-bank reference (docs/protocol.md#loss) and its edge cases."""
from pathlib import Path

import numpy as np
import paddle
import pytest

from utils.losses.hashnet_loss import HashNetLoss, continuation_scale

FIXTURE = Path(__file__).parent / "data" / "hashnet_loss_steps.npz"


def test_matches_reference_at_every_step():
    ref = np.load(FIXTURE)
    criterion = HashNetLoss(int(ref["bit"]), int(ref["num_train"]), float(ref["alpha"]), int(ref["num_class"]))
    for step in range(len(ref["loss"])):
        ind = ref["ind"][step]
        outputs = paddle.to_tensor(ref["u"][step], stop_gradient=False)  # the fixture's "u" is the raw output o
        criterion.scale = float(ref["scale"][step])
        loss = criterion(outputs, paddle.to_tensor(ref["labels"][ind]), paddle.to_tensor(ind))
        loss.backward()
        np.testing.assert_allclose(float(loss), ref["loss"][step], rtol=1e-5, err_msg=f"loss at step {step}")
        grad = outputs.grad.numpy()
        scale = np.abs(ref["grad"][step]).max()
        np.testing.assert_allclose(grad / scale, ref["grad"][step] / scale, atol=1e-5, err_msg=f"grad at step {step}")


def test_bank_is_written_detached_and_kept():
    criterion = HashNetLoss(bit=4, num_train=6, alpha=0.1, num_class=3)
    o = paddle.to_tensor([[1.0, -2.0, 0.5, 0.0], [0.3, 0.3, -0.3, 3.0]], stop_gradient=False)
    y = paddle.to_tensor([[1.0, 0, 0], [0, 1.0, 1.0]])
    criterion(o, y, paddle.to_tensor([4, 1])).backward()
    np.testing.assert_allclose(criterion.U.numpy()[[4, 1]], np.tanh(o.numpy()), rtol=1e-6)
    np.testing.assert_array_equal(criterion.Y.numpy()[[4, 1]], y.numpy())
    assert criterion.U.stop_gradient
    np.testing.assert_array_equal(criterion.U.numpy()[[0, 2, 3, 5]], 0)
    # a second backward through a new batch works (docs/protocol.md#loss: a graph-carrying bank breaks it on Paddle 3.x)
    criterion(o * 2, y, paddle.to_tensor([0, 2])).backward()
    assert set(criterion.state_dict()) == {"U", "Y"}


@pytest.mark.parametrize("labels", [[[1.0, 0], [1.0, 0]], [[1.0, 0], [0, 1.0]]])
def test_no_nan_without_positive_or_negative_pairs(labels):
    # num_train == batch: the bank holds only this batch; first case all pairs similar, second has both kinds
    criterion = HashNetLoss(bit=3, num_train=2, num_class=2)
    o = paddle.to_tensor([[0.5, -1.0, 2.0], [1.0, 1.0, -1.0]], stop_gradient=False)
    loss = criterion(o, paddle.to_tensor(labels), paddle.to_tensor([0, 1]))
    loss.backward()
    assert np.isfinite(float(loss)) and np.isfinite(o.grad.numpy()).all()


def test_only_negative_pairs_equals_negative_group_mean():
    criterion = HashNetLoss(bit=2, num_train=2, alpha=1.0, num_class=2)
    # item 0 has no label at all: it shares nothing with anybody, so every pair is negative
    o = paddle.to_tensor([[0.2, 0.4]])
    loss = criterion(o, paddle.to_tensor([[0.0, 0.0]]), paddle.to_tensor([0]))
    u = np.tanh([0.2, 0.4])
    theta = np.array([u @ u, 0.0])  # against itself and the empty bank row
    expected = np.mean(np.log1p(np.exp(-np.abs(theta))) + np.maximum(theta, 0))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)


def test_wrong_widths_are_named():
    criterion = HashNetLoss(bit=16, num_train=4, num_class=80)
    with pytest.raises(ValueError, match="bit=16, num_class=80.*width 8"):
        criterion(paddle.zeros([2, 8]), paddle.zeros([2, 80]), paddle.to_tensor([0, 1]))


def test_continuation_schedule():
    # docs/protocol.md#loss: 150 epochs with step 20 run scale 1, sqrt 2, ..., sqrt 8
    scales = [continuation_scale(e, 20) for e in range(1, 151)]
    assert scales[0] == 1.0 and scales[19] == 1.0 and scales[20] == pytest.approx(np.sqrt(2))
    assert sorted(set(round(s * s) for s in scales)) == list(range(1, 9))
    assert continuation_scale(150, 20) == pytest.approx(np.sqrt(8))
    assert continuation_scale(3, 2) == pytest.approx(np.sqrt(2))
    with pytest.raises(ValueError, match="1-based"):
        continuation_scale(0)
