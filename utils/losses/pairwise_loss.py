"""The authors' PairwiseLoss layer (docs/protocol.md#paper-recipe): the loss of the paper recipe, between the first
and the second half of a batch, with the layer's own gradient.

The forward value and the backward are those of thuml/HashNet's `pairwise_loss_layer.cu` (its CPU functions are
empty). The backward is not the derivative of the forward value: it carries a factor 2, the continuous-similarity
weight 4c, and applies sigmoid_param only to the first `half` entries of each gradient (docs/protocol.md#paper-recipe
lists every difference). So it is a paddle.autograd.PyLayer with its own backward. The equations live here once.

Several processes: every rank holds a shard of the iteration's first half and a shard of its second half. With
`distribute(gather, rank, world_size)` the pair matrix is built over the gathered halves (rank order), so the loss is
the one-process loss, and each rank returns the one-process gradient of its own rows times world_size: DataParallel
averages gradients over the ranks, and the average of the ranks' scaled row gradients is the one-process gradient.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from utils.runtime.errors import UsageError

__all__ = ["PairwiseLoss", "pair_weights"]

ALPHA_ON_FIRST_ENTRIES = "first_entries"
ALPHA_ON_ALL = "all"


def pair_weights(labels1, labels2, class_num, continuous_similarity):
    """(similar, count, grad_weight), each (n1, n2), from the two halves' label matrices.

    similar: 1 where the items share a label. count: a pair's weight in the loss and in the normaliser: class_num for
    similar pairs, 1 for dissimilar ones, 0 for pairs with an unknown label (label product < 0 or >= the label width:
    the layer's test, which also calls two all-ones label vectors unknown). grad_weight: count, times 4c with
    continuous similarity, c = (y1.y2)^2 / ((y1.y1)(y2.y2)), a zero own-product counted as 1, c = 0.25 where y1.y2 = 0.
    """
    product = paddle.matmul(labels1, labels2, transpose_y=True)
    known = paddle.logical_and(product >= 0, product < labels1.shape[1]).astype(product.dtype)
    similar = (product > 0).astype(product.dtype) * known
    count = known * (1.0 + (class_num - 1.0) * similar)
    grad_weight = count
    if continuous_similarity:
        own1 = (labels1 * labels1).sum(axis=1, keepdim=True)
        own2 = (labels2 * labels2).sum(axis=1, keepdim=True)
        own1 = paddle.where(own1 == 0, paddle.ones_like(own1), own1)
        own2 = paddle.where(own2 == 0, paddle.ones_like(own2), own2)
        c = product * product / (own1 * own2.t())
        c = paddle.where(c == 0, paddle.full_like(c, 0.25), c)
        grad_weight = count * 4.0 * c
    return similar, count, grad_weight


def cosine_target(labels1, labels2, similar):
    """HashNet+C's pair similarity (docs/methods.md#hashnet-variants): the cosine of the two label vectors where the
    layer knows the pair (similar > 0), 0 elsewhere."""
    norms = paddle.matmul(labels1.norm(axis=1, keepdim=True), labels2.norm(axis=1, keepdim=True), transpose_y=True)
    cosine = paddle.matmul(labels1, labels2, transpose_y=True) / paddle.clip(norms, min=1e-12)
    return paddle.where(similar > 0, cosine, paddle.zeros_like(cosine))


def _alpha_factor(rows, first_row, bits, half, sigmoid_param, alpha_in_gradient, dtype):
    """The factor of each gradient entry of rows first_row..first_row+rows of a half (rows x bits).

    The layer scales its two (half x bits) gradients with `caffe_gpu_scal(half, sigmoid_param, ...)`: only the first
    `half` entries in memory (row-major) get sigmoid_param, the others keep factor 1.
    """
    if alpha_in_gradient == ALPHA_ON_ALL:
        return sigmoid_param
    flat = (paddle.arange(first_row, first_row + rows, dtype="int64").reshape([-1, 1]) * bits
            + paddle.arange(bits, dtype="int64").reshape([1, -1]))
    return paddle.where(flat < half, paddle.full(flat.shape, sigmoid_param, dtype), paddle.ones(flat.shape, dtype))


class _PairwiseLossFunction(paddle.autograd.PyLayer):
    """loss(u1, u2) with the layer's backward; `spec` (not a tensor) carries the pair weights and the settings."""

    @staticmethod
    def forward(ctx, u1, u2, spec):
        codes1, codes2 = spec.gather(u1), spec.gather(u2)
        _, count, grad_weight = spec.weights
        similar = spec.target  # the pairs' s: 0/1, or the labels' cosine (HashNet+C)
        p = spec.sigmoid_param * paddle.matmul(codes1, codes2, transpose_y=True)
        # log(1 + e^p) - s p, written without overflow; the layer switches to p (1 - s) from l_threshold on
        pair_loss = paddle.log1p(paddle.exp(-paddle.abs(p))) + F.relu(p) - similar * p
        if spec.l_threshold >= 0:
            pair_loss = paddle.where(p >= spec.l_threshold, p * (1.0 - similar), pair_loss)
        total = count.sum()
        normaliser = paddle.where(total > 0, total, paddle.ones_like(total))
        loss = (pair_loss * count).sum() / normaliser
        g = 2.0 * (F.sigmoid(p) - similar) * grad_weight / normaliser
        rows1, rows2 = u1.shape[0], u2.shape[0]
        ctx.codes1, ctx.codes2, ctx.spec = codes1, codes2, spec
        ctx.g1 = g[spec.rank * rows1:(spec.rank + 1) * rows1]
        ctx.g2 = g[:, spec.rank * rows2:(spec.rank + 1) * rows2]
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        spec, bits = ctx.spec, ctx.codes1.shape[1]
        rows1, rows2 = ctx.g1.shape[0], ctx.g2.shape[1]
        factor1 = _alpha_factor(rows1, spec.rank * rows1, bits, spec.half, spec.sigmoid_param,
                                spec.alpha_in_gradient, ctx.codes1.dtype)
        factor2 = _alpha_factor(rows2, spec.rank * rows2, bits, spec.half, spec.sigmoid_param,
                                spec.alpha_in_gradient, ctx.codes1.dtype)
        # the layer ignores its loss weight (1 in the prototxts); grad_loss is 1 under loss.backward()
        scale = grad_loss * spec.world_size
        grad1 = scale * factor1 * paddle.matmul(ctx.g1, ctx.codes2)
        grad2 = scale * factor2 * paddle.matmul(ctx.g2, ctx.codes1, transpose_x=True)
        return grad1, grad2


class _Spec:
    """What the PyLayer needs besides the two code tensors (a plain object: PyLayer treats only tensors as inputs)."""

    def __init__(self, **values):
        self.__dict__.update(values)


class PairwiseLoss(nn.Layer):
    """PairwiseLoss(sigmoid_param, class_num, ...)(u, labels) -> scalar loss; u (2b, bits) are the continuation's
    outputs (utils/losses/scale_tanh.py) of a batch whose first b rows are the first stream and last b rows the second
    (the prototxt's Slice); labels (2b, classes).

    sigmoid_param: 0.2 in the authors' prototxts (48 bits; their comment and README: 10 / bits). class_num: the
    similar pairs' weight (COCO 1, NUS-WIDE 5, ImageNet 100). l_threshold: 15; a negative value switches the
    threshold branch off, as in the layer. alpha_in_gradient: "first_entries" (the layer as written) or "all"
    (sigmoid_param on every gradient entry, as the equations read). cosine_similarity: the pairs' s is the labels'
    cosine instead of 0/1 (HashNet+C, docs/methods.md#hashnet-variants; not an option of the authors' layer, whose
    continuous_similarity is the c_ij of the pair weights).
    """

    def __init__(self, sigmoid_param, class_num=1.0, l_threshold=15.0, continuous_similarity=True,
                 alpha_in_gradient=ALPHA_ON_FIRST_ENTRIES, cosine_similarity=False):
        super().__init__()
        self.cosine_similarity = bool(cosine_similarity)
        if not class_num > 0:
            raise UsageError(f"PairwiseLoss: class_num must be > 0 (the similar pairs' weight), got {class_num}")
        if alpha_in_gradient not in (ALPHA_ON_FIRST_ENTRIES, ALPHA_ON_ALL):
            raise UsageError(f"PairwiseLoss: alpha_in_gradient must be '{ALPHA_ON_FIRST_ENTRIES}' or "
                             f"'{ALPHA_ON_ALL}', got {alpha_in_gradient!r}")
        self.sigmoid_param, self.class_num = float(sigmoid_param), float(class_num)
        self.l_threshold, self.continuous_similarity = float(l_threshold), bool(continuous_similarity)
        self.alpha_in_gradient = alpha_in_gradient
        self.gather, self.rank, self.world_size = None, 0, 1

    def distribute(self, gather, rank, world_size):
        """Build the pairs over every rank's halves: gather concatenates a tensor across ranks in rank order
        (utils/runtime/dist.all_gather_cat); rank and world_size are this process's (utils/runtime/dist)."""
        self.gather, self.rank, self.world_size = gather, int(rank), int(world_size)

    def _gather(self, tensor):
        if self.gather is None:
            return tensor
        gathered = self.gather(tensor)
        if gathered.shape[0] != self.world_size * tensor.shape[0]:
            raise ValueError(f"PairwiseLoss: gathered {gathered.shape[0]} rows from a shard of {tensor.shape[0]} on "
                             f"{self.world_size} ranks; every rank must hold a shard of the same size")
        return gathered

    def forward(self, u, labels):
        if u.shape[0] % 2 or u.shape[0] != labels.shape[0]:
            raise ValueError(f"PairwiseLoss: codes of {u.shape[0]} rows with labels of {labels.shape[0]} rows; "
                             "expected the same even number of rows (first half, then second half)")
        u1, u2 = paddle.split(u, 2, axis=0)
        labels = labels.astype(u.dtype)
        with paddle.no_grad():
            labels1, labels2 = (self._gather(part) for part in paddle.split(labels, 2, axis=0))
            weights = pair_weights(labels1, labels2, self.class_num, self.continuous_similarity)
            target = cosine_target(labels1, labels2, weights[0]) if self.cosine_similarity else weights[0]
        spec = _Spec(gather=lambda t: self._gather(t.detach()), weights=weights, target=target, half=labels1.shape[0],
                     sigmoid_param=self.sigmoid_param, l_threshold=self.l_threshold,
                     alpha_in_gradient=self.alpha_in_gradient, rank=self.rank, world_size=self.world_size)
        return _PairwiseLossFunction.apply(u1, u2, spec)
