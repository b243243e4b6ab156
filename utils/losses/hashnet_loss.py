"""HashNet's weighted pairwise loss with a memory bank, and its continuation schedule (docs/protocol.md#loss).

This is the one place where the equations of docs/protocol.md#loss live.
"""
import math

import numpy as np
import paddle
import paddle.nn as nn

from utils.runtime.errors import UsageError


def continuation_scale(epoch, continuation_step=20):
    """scale of tanh(scale * o) for a 1-based epoch: sqrt(floor((epoch - 1) / step) + 1).

    With continuation_step=20 (--continuation-step), 150 epochs run scale 1, sqrt(2), ..., sqrt(8): the activation
    sharpens towards sign.
    """
    if epoch < 1:
        raise ValueError(f"epochs are 1-based; got epoch={epoch}")
    if continuation_step < 1:
        raise UsageError(f"--continuation-step must be >= 1; got {continuation_step}")
    return math.sqrt((epoch - 1) // continuation_step + 1)


def pair_similarity(y, bank_y, continuous=False):
    """(n, N) similarity of a batch's labels to the bank's: 1 where they share a label, else 0; with `continuous`, the
    cosine of the two label vectors (HashNet+C, docs/methods.md#hashnet-variants; 0 where either has no label)."""
    overlap = paddle.matmul(y, bank_y, transpose_y=True)
    if not continuous:
        return (overlap > 0).astype("float32")
    norms = paddle.matmul(y.norm(axis=1, keepdim=True), bank_y.norm(axis=1, keepdim=True), transpose_y=True)
    return overlap / paddle.clip(norms, min=1e-12)


def pairwise_nll(theta, similarity):
    """The pairs' negative log-likelihood log(1 + e^theta) - s theta, written without overflow (docs/protocol.md#loss);
    HashNet's and DHN's losses share it."""
    return paddle.log1p(paddle.exp(-paddle.abs(theta))) + paddle.clip(theta, min=0) - similarity * theta


class HashNetLoss(nn.Layer):
    """Weighted pairwise cross-entropy of a batch against a bank of every training item's latest code.

    The ablation's variants (docs/methods.md#hashnet-variants): `weighted=False` averages every pair alike
    (HashNet-W); `continuous_similarity=True` takes the label vectors' cosine as the pairs' similarity (HashNet+C).

    The bank (U: num_train x bit, Y: num_train x num_class) is a pair of persistable buffers, so it is saved in
    `state_dict()` and a resumed run continues with the same bank. It never carries gradient.

    Several processes: set `gather` to a function that concatenates a tensor across ranks (see utils/runtime/dist.py);
    every rank then writes all ranks' (u, y, ind) into its bank before the loss, so the banks stay identical.
    """

    def __init__(self, bit, num_train, alpha=0.1, num_class=80, weighted=True, continuous_similarity=False):
        super().__init__()
        self.bit, self.num_train, self.alpha, self.num_class = bit, num_train, alpha, num_class
        self.weighted, self.continuous_similarity = bool(weighted), bool(continuous_similarity)
        self.scale = 1.0
        self.gather = None
        self.register_buffer("U", paddle.zeros([num_train, bit], dtype="float32"), persistable=True)
        self.register_buffer("Y", paddle.zeros([num_train, num_class], dtype="float32"), persistable=True)

    def write_bank(self, u, y, ind):
        """U[ind] = u, Y[ind] = y, detached (docs/protocol.md#loss: a graph-carrying bank breaks the next backward on
        Paddle 3.x).

        An index given twice (two ranks drew the same image in one step; the sharded sampler's padding) is written
        once, with its last row: the gathered rows are in rank order, so the highest rank wins on every rank alike
        (a scatter with repeated indices is free to pick any of them, e.g. on a GPU).
        """
        ind = ind.reshape([-1]).astype("int64")
        flat = ind.numpy()
        _, last_from_end = np.unique(flat[::-1], return_index=True)
        if len(last_from_end) < len(flat):
            keep = paddle.to_tensor(np.sort(len(flat) - 1 - last_from_end))
            u, y, ind = paddle.gather(u, keep), paddle.gather(y, keep), paddle.gather(ind, keep)
        self.U[ind] = u.detach().astype("float32")
        self.Y[ind] = y.detach().astype("float32")

    def check_widths(self, o, y):
        if o.shape[-1] != self.bit or y.shape[-1] != self.num_class:
            raise ValueError(
                f"{type(self).__name__} was built for bit={self.bit}, num_class={self.num_class}; "
                f"got outputs of width {o.shape[-1]} and labels of width {y.shape[-1]}")

    def write_batch(self, u, y, ind):
        """The batch's codes and labels into the bank (every rank's, with `gather`)."""
        if self.gather is None:
            self.write_bank(u, y, ind)
        else:
            self.write_bank(self.gather(u.detach()), self.gather(y), self.gather(ind.reshape([-1, 1])))

    def forward(self, o, y, ind):
        self.check_widths(o, y)
        y = y.astype("float32")
        u = paddle.tanh(self.scale * o)
        self.write_batch(u, y, ind)

        similarity = pair_similarity(y, self.Y, self.continuous_similarity)
        theta = self.alpha * paddle.matmul(u, self.U, transpose_y=True)
        pair_loss = pairwise_nll(theta, similarity)
        if not self.weighted:
            return pair_loss.mean()

        # Positive and negative pairs are re-weighted to equal total mass (n/S1 and n/S0, divided by n): the
        # imbalance of similar vs dissimilar pairs is what HashNet's weighting corrects. An empty group adds nothing
        # instead of dividing by zero. With continuous similarity, a pair of any overlap is in the similar group.
        similarity = (similarity > 0).astype("float32")
        num_pos = similarity.sum()
        num_neg = similarity.numel().astype("float32") - num_pos
        loss_pos = (pair_loss * similarity).sum() / paddle.clip(num_pos, min=1.0)
        loss_neg = (pair_loss * (1.0 - similarity)).sum() / paddle.clip(num_neg, min=1.0)
        return loss_pos + loss_neg
