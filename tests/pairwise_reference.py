"""An independent NumPy re-implementation of the authors' PairwiseLoss layer (docs/protocol.md#paper-recipe), one pair
at a time as the CUDA kernels of thuml/HashNet's pairwise_loss_layer.cu go: the tests' reference for
utils/losses/pairwise_loss.py, in one process and in two."""
import math

import numpy as np


def caffe_pairwise_loss(u1, y1, u2, y2, sigmoid_param, class_num=1.0, l_threshold=15.0, continuous=True,
                        alpha_on_first_entries=True, cosine_target=False):
    """(loss, dL/du1, dL/du2) in float64, as the layer's Forward_gpu and Backward_gpu compute them; cosine_target:
    HashNet+C's similarity, the labels' cosine in place of the layer's 0/1 s (docs/methods.md#hashnet-variants)."""
    u1, y1, u2, y2 = (np.asarray(a, dtype=np.float64) for a in (u1, y1, u2, y2))
    half, label_dim = u1.shape[0], y1.shape[1]
    loss_sum, count_sum = 0.0, 0.0
    diff = np.zeros((half, u2.shape[0]))
    for i in range(half):
        for j in range(u2.shape[0]):
            raw = float(y1[i] @ y2[j])
            if raw < 0 or raw >= label_dim:      # SimilarityProcess: unknown label, count 0, loss 0, diff 0
                continue
            similar = raw > 0
            target = raw / math.sqrt(float(y1[i] @ y1[i]) * float(y2[j] @ y2[j])) if cosine_target and similar \
                else float(similar)
            p = sigmoid_param * float(u1[i] @ u2[j])
            if l_threshold >= 0 and p >= l_threshold:
                pair = p * (1 - target)
            else:
                pair = math.log(1 + math.exp(p)) - target * p
            weight = class_num if similar else 1.0
            loss_sum += pair * weight
            count_sum += weight
            d = 2 * (1 / (1 + math.exp(-p)) - target) * weight
            if continuous:
                own1 = float(y1[i] @ y1[i]) or 1.0
                own2 = float(y2[j] @ y2[j]) or 1.0
                c = raw * raw / (own1 * own2)
                d *= 4 * (c if c != 0 else 0.25)
            diff[i, j] = d
    count = count_sum if count_sum > 0 else 1.0
    grad1, grad2 = diff @ u2 / count, diff.T @ u1 / count
    for grad in (grad1, grad2):
        flat = grad.reshape(-1)                  # a view: caffe_gpu_scal(outer_num_, sigmoid_param, diff)
        if alpha_on_first_entries:
            flat[:half] *= sigmoid_param
        else:
            flat *= sigmoid_param
    return loss_sum / count, grad1, grad2


def pairwise_batch(seed, half=6, bits=5, classes=4):
    """Codes in (-1, 1) and labels of a 2 * half batch with every kind of pair: similar, dissimilar, a label-less
    item in each half, an item with a negative (unknown) label, and two all-ones items (product = label width: also
    unknown to the layer)."""
    rng = np.random.default_rng(seed)
    u = np.tanh(2.0 * rng.standard_normal((2 * half, bits)))
    y = (rng.random((2 * half, classes)) < 0.4).astype(np.float64)
    y[0] = 0                         # label-less in the first half
    y[half + 1] = 0                  # and in the second
    y[2] = [-1.0] + [0.0] * (classes - 1)
    y[3] = 1.0
    y[half + 3] = 1.0
    return u, y
