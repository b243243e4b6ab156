"""One rank of the two-process PairwiseLoss check (tests/test_pairwise_distributed.py): a small linear hash layer under
DataParallel, this rank's shard of each half of a fixed batch, the loss over the gathered halves, one backward.
Writes the loss and the layer's (averaged) gradients to <out_dir>/rank<r>.npz.

    python -m paddle.distributed.launch --nproc_per_node 2 tests/pairwise_dist_worker.py <out_dir>
    python tests/pairwise_dist_worker.py <out_dir>        # one process: the whole batch
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import utils.runtime.before_paddle  # noqa: E402,F401  (before anything imports paddle: see that module)

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from pairwise_reference import pairwise_batch  # noqa: E402
from utils.losses.pairwise_loss import PairwiseLoss  # noqa: E402
from utils.runtime import dist  # noqa: E402

HALF, BITS, FEATURES = 6, 5, 7
SIGMOID_PARAM, CLASS_NUM = 2.0, 5.0


def batch():
    """The iteration's inputs (2 * HALF, FEATURES), labels, and the hash layer's weights, the same on every rank."""
    rng = np.random.default_rng(20)
    _, labels = pairwise_batch(seed=9, half=HALF, bits=BITS)
    return (rng.standard_normal((2 * HALF, FEATURES)), labels, rng.standard_normal((FEATURES, BITS)) * 0.5,
            rng.standard_normal(BITS) * 0.1)


def shard(a, rank, world_size):
    """Rows of this rank: its part of the first half, then its part of the second."""
    rows = HALF // world_size
    return np.concatenate([a[rank * rows:(rank + 1) * rows], a[HALF + rank * rows:HALF + (rank + 1) * rows]])


if __name__ == "__main__":
    paddle.set_default_dtype("float64")
    world_size, rank = dist.get_world_size(), dist.get_rank()
    if world_size > 1:
        paddle.distributed.init_parallel_env()
    x, labels, weight, bias = batch()
    layer = paddle.nn.Linear(FEATURES, BITS)
    layer.weight.set_value(weight)
    layer.bias.set_value(bias)
    net = paddle.DataParallel(layer) if world_size > 1 else layer
    criterion = PairwiseLoss(SIGMOID_PARAM, class_num=CLASS_NUM)
    if world_size > 1:
        criterion.distribute(dist.all_gather_cat, rank, world_size)
    codes = paddle.tanh(net(paddle.to_tensor(shard(x, rank, world_size))))
    loss = criterion(codes, paddle.to_tensor(shard(labels, rank, world_size)))
    loss.backward()
    np.savez(Path(sys.argv[1]) / f"rank{rank}.npz", loss=float(loss), weight_grad=layer.weight.grad.numpy(),
             bias_grad=layer.bias.grad.numpy(), world_size=world_size)
