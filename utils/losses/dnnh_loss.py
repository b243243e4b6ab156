"""DNNH's loss (Lai, Pan, Liu, Yan, "Simultaneous Feature Learning and Hash Coding with Deep Neural Networks",
CVPR 2015): the triplet ranking hinge loss of the DNNH baseline of HashNet's Table 1, on approximate codes in [0, 1]
made by a sigmoid and the paper's piece-wise threshold function (docs/methods.md#dnnh: values and sources). The
network side is models/divide_encode.py.

One step, with the divide-and-encode outputs o (n x bits) and multi-hot labels y:

    s      = sigmoid(o)
    b      = g(s),  g(s) = 0 if s < 0.5 - eps;  s if 0.5 - eps <= s <= 0.5 + eps;  1 if s > 0.5 + eps
    D_ij   = ||b_i - b_j||^2
    valid  = {(a, p, n): a != p, y_a . y_p > 0 (a and p share a label), y_a . y_n = 0 (a and n share none)}
    loss   = mean over valid triplets of  max(0, margin - (D_an - D_ap))          margin = 1, eps = 0.1

- g's derivative is 1 inside the band and 0 outside, and backward uses exactly that: an output whose sigmoid is
  already beyond 0.5 +- eps gets no gradient, which is how the paper's function pushes the codes to binary.
- Triplets: the paper's network takes triplets (I, I+, I-) as its input. Here every valid triplet of the batch
  counts, so the loss fits the project's engine, which feeds labelled batches. With multi-hot labels, "similar"
  means sharing a label, as in HashNet. A batch with no valid triplet gives loss 0 with a zero gradient.
- `index` is unused and `scale` is 1.0: DNNH has no bank and no continuation.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

__all__ = ["DNNHLoss", "piecewise_threshold"]


def piecewise_threshold(s, epsilon):
    """The paper's g(s) for s in [0, 1]: 0 below 0.5 - eps, 1 above 0.5 + eps, s in between.

    The band is a constant mask, so autograd gives 1 inside the band and 0 outside, as g's derivative is.
    """
    inside = paddle.logical_and(s >= 0.5 - epsilon, s <= 0.5 + epsilon).astype(s.dtype)
    above = (s > 0.5 + epsilon).astype(s.dtype)
    return s * inside + above


class DNNHLoss(nn.Layer):
    """`DNNHLoss(bit, num_class, margin=1.0, epsilon=0.1)`; called as `criterion(outputs, labels, index)`."""

    def __init__(self, bit, num_class, margin=1.0, epsilon=0.1):
        super().__init__()
        if not 0.0 <= epsilon <= 0.5:
            raise ValueError(f"DNNH's threshold band 0.5 +- epsilon must lie in [0, 1]; got epsilon={epsilon}")
        self.bit, self.num_class = int(bit), int(num_class)
        self.margin, self.epsilon = float(margin), float(epsilon)
        self.scale = 1.0

    def forward(self, o, y, ind=None):
        if o.shape[-1] != self.bit or y.shape[-1] != self.num_class:
            raise ValueError(f"DNNHLoss was built for bit={self.bit}, num_class={self.num_class}; "
                             f"got outputs of width {o.shape[-1]} and labels of width {y.shape[-1]}")
        y = y.astype("float32")
        b = piecewise_threshold(F.sigmoid(o), self.epsilon)
        # squared distances from the differences themselves rather than |b_i|^2 + |b_j|^2 - 2 b_i.b_j: exact 0 for
        # equal codes, no cancellation; n x n x bits is small at training batch sizes
        diff = b.unsqueeze(1) - b.unsqueeze(0)
        dist = (diff * diff).sum(axis=-1)

        n = o.shape[0]
        share = paddle.matmul(y, y, transpose_y=True) > 0
        positive = paddle.logical_and(share, paddle.logical_not(paddle.eye(n) > 0))  # a != p
        negative = paddle.logical_not(share)
        valid = paddle.logical_and(positive.unsqueeze(2), negative.unsqueeze(1)).astype("float32")  # [a, p, n]

        # [a, p, n]: margin - (D[a, n] - D[a, p])
        violation = self.margin - (dist.unsqueeze(1) - dist.unsqueeze(2))
        hinge = F.relu(violation) * valid
        return hinge.sum() / paddle.clip(valid.sum(), min=1.0)
