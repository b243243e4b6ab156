"""PairwiseLoss in two CPU processes (paddle.distributed.launch, gloo) under DataParallel: the pairs over the gathered
halves give each rank the one-process loss, and the averaged parameter gradients are the one-process gradients
(docs/protocol.md#paper-recipe). The worker is tests/pairwise_dist_worker.py."""
import numpy as np
import pytest

from conftest import run_cli
from pairwise_dist_worker import CLASS_NUM, HALF, SIGMOID_PARAM, batch
from pairwise_reference import caffe_pairwise_loss


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("pairwise")
    (base / "two").mkdir()
    (base / "one").mkdir()
    run_cli(["-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", base / "launch",
             "tests/pairwise_dist_worker.py", base / "two"])
    run_cli(["tests/pairwise_dist_worker.py", base / "one"])
    return base


def numpy_gradients():
    """Loss and hash-layer gradients of the whole batch from the NumPy layer (tests/pairwise_reference.py)."""
    x, labels, weight, bias = batch()
    codes = np.tanh(x @ weight + bias)
    loss, grad1, grad2 = caffe_pairwise_loss(codes[:HALF], labels[:HALF], codes[HALF:], labels[HALF:],
                                             SIGMOID_PARAM, class_num=CLASS_NUM)
    grad_outputs = np.concatenate([grad1, grad2]) * (1 - codes ** 2)
    return loss, x.T @ grad_outputs, grad_outputs.sum(axis=0)


def test_two_processes_give_the_one_process_loss_and_gradients(runs):
    one = np.load(runs / "one" / "rank0.npz")
    loss, weight_grad, bias_grad = numpy_gradients()
    assert int(one["world_size"]) == 1
    np.testing.assert_allclose(one["loss"], loss, rtol=1e-12)
    np.testing.assert_allclose(one["weight_grad"], weight_grad, rtol=1e-10)
    np.testing.assert_allclose(one["bias_grad"], bias_grad, rtol=1e-10)
    for rank in (0, 1):
        two = np.load(runs / "two" / f"rank{rank}.npz")
        assert int(two["world_size"]) == 2
        np.testing.assert_allclose(two["loss"], loss, rtol=1e-12, err_msg=f"rank {rank}")
        np.testing.assert_allclose(two["weight_grad"], weight_grad, rtol=1e-10, err_msg=f"rank {rank}")
        np.testing.assert_allclose(two["bias_grad"], bias_grad, rtol=1e-10, err_msg=f"rank {rank}")
