"""DHN, the Deep Hashing Network of Zhu, Long, Wang, Cao ("Deep Hashing Network for Efficient Similarity Retrieval",
AAAI 2016): one of the deep baselines of HashNet's Table 1 (docs/methods.md#dhn: each value, its source and
which of them were read in the sources rather than recalled).

DHN is HashNet's pairwise likelihood without HashNet's two additions: every pair weighs the same (no re-weighting of
similar against dissimilar pairs) and there is no continuation. Instead, a quantisation loss pulls every output
towards ±1. One step, with raw outputs o (n x bits), multi-hot labels y, dataset indices ind and the memory bank
(U, Y) of every training item's latest code that HashNetLoss keeps:

    u      = tanh(o)
    U[ind] = detach(u),   Y[ind] = y
    S      = (y Y^T > 0)                                  n x N: 1 where two items share a label
    T      = alpha * u U^T                                alpha = 0.5
    L      = mean over the n x N pairs of  log(1 + e^T) - S T
    Q      = mean over the n x bits entries of  log cosh(|u| - 1)
    loss   = L + lambda * Q                               lambda = 0.1

Sources of the form and the values:
- The paper: the pairwise cross-entropy over all pairs, unweighted, plus lambda * sum log cosh(|u| - 1), the smooth
  surrogate of the L1 distance to ±1; lambda chosen by cross-validation in 1e-5 ... 100.
- The authors' TensorFlow code, thulab/DeepHash `DeepHash/model/dhn/dhn.py` (9907613): u = tanh(fc8), so u is tanh
  of the hash layer's output; `cross_entropy(u, label_u, alpha=0.5)` with the plain inner product takes 0.5 as its
  scale. The shipped example runs another loss: the cosine of the codes times alpha = 10, pairs weighted
  HashNet-style, and a squared quantisation term (|u| - 1)^2 with weight 0 (`examples/dhn/train_val.sh`). Its README
  calls the DHN code possibly outdated. This module keeps the paper's unweighted likelihood and log cosh term,
  because the unweighted pairs and the missing continuation are what make DHN a baseline to HashNet.
- swuxyj/DeepHash-pytorch `DHN.py` (ab14068): the same memory bank as this project, inner product times 0.5,
  alpha (our lambda) = 0.1 times mean(log cosh(|u| - 1)), both terms means. It applies no tanh, but the authors' code
  does, and this module follows the authors: u = tanh(o).

Reused from HashNetLoss: the bank, its writing (detached; gathered across ranks), `pair_similarity`,
`pairwise_nll` and the unweighted mean. HashNetLoss(weighted=False) is exactly L above.
"""
import math

import paddle

from utils.losses.hashnet_loss import HashNetLoss

__all__ = ["DHNLoss", "log_cosh_quantization"]


def log_cosh_quantization(u):
    """mean(log cosh(|u| - 1)), with log cosh x written as |x| + log(1 + e^(-2|x|)) - log 2.

    That form cannot overflow, and its autograd is tanh(|u| - 1) sign(u), the derivative of log cosh(|u| - 1); it is 0
    where u = 0, as paddle.abs gives. The term is 0 exactly where |u| = 1.
    """
    x = paddle.abs(paddle.abs(u) - 1.0)
    return (x + paddle.log1p(paddle.exp(-2.0 * x)) - math.log(2.0)).mean()


class DHNLoss(HashNetLoss):
    """`DHNLoss(bit, num_train, alpha=0.5, num_class=80, quantization_weight=0.1)`; called as
    `criterion(outputs, labels, index)` like HashNetLoss.

    `scale` stays 1.0: DHN has no continuation. It is still applied as tanh(scale * o), so the scale the engine logs
    is the scale that ran.
    """

    def __init__(self, bit, num_train, alpha=0.5, num_class=80, quantization_weight=0.1):
        super().__init__(bit, num_train, alpha=alpha, num_class=num_class, weighted=False,
                         continuous_similarity=False)
        self.quantization_weight = float(quantization_weight)

    def forward(self, o, y, ind):
        # HashNetLoss with weighted=False computes u = tanh(scale * o), writes the bank and returns L, the plain mean
        # of the pairs' negative log-likelihood. The quantisation term needs u again; a second tanh costs less than
        # holding the parent's intermediate.
        likelihood = super().forward(o, y, ind)
        return likelihood + self.quantization_weight * log_cosh_quantization(paddle.tanh(self.scale * o))
