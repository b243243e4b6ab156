"""BRE, Binary Reconstructive Embedding ("Learning to Hash with Binary Reconstructive Embeddings", Kulis & Darrell,
NIPS 2009), in its supervised form, with the coordinate descent of the authors' reference code (BRE.m, as kept in
github.com/willard-yuan/hashing-baseline-for-image-retrieval as BRE/trainBRE.m and init_BREparam.m; defaults in
docs/methods.md#bre).

Bit b of x is [sum_q W_qb k(x, x_pq) > 0], a weighted sum of the kernel to its own `hash_size` landmark points (random
training points). On random pairs (i, j) of training points the scaled Hamming distance (1/bits) #{bits differing}
should reconstruct the target distance: 0 for pairs sharing a label, 1 (the largest, as the code scales its targets
to [0, 1] by their maximum) for the others; the reconstruction error is 0.5 sum over the pairs of the squared
difference. Each step of the descent picks one weight W_qb of one bit at random and moves it to its best value: the
bit of point i flips where W_qb crosses W_qb - (K W)_ib / k(x_i, x_pq), so trying the midpoints between the sorted
crossings tries every reachable bit column. A sweep does one step per bit; sweeps go on until the error moves by at
most tol.
"""
import numpy as np

from utils.runtime.errors import UsageError
from utils.shallow.base import ShallowHash
from utils.shallow.itq import checked_features
from utils.shallow.kernels import (
    check_count,
    check_number,
    check_width,
    rbf_project,
    sample_rows,
    squared_distances,
)

# init_BREparam.m: W0 = .001*randn(hash_size, nbits); BRE.m pads the sorted crossings with one 1e-6 below and one
# 1e-6 above before taking midpoints, so the outermost candidates lie 0.5e-6 beyond the outer crossings
INIT_SCALE = 1e-3
END_OFFSET = 0.5e-6


def reconstruction_error(differing, targets, bits):
    """0.5 sum over pairs of (differing bits / bits - target)^2."""
    return 0.5 * float(np.sum((differing / bits - targets) ** 2))


def line_search(kw, column, weight, other, first, second, targets, bits):
    """The candidate values of one weight and the reconstruction error at each.

    kw: (n,) the bit's current K W; column: (n,) the kernel to the weight's landmark; weight: its current value;
    other: (pairs,) the pairs' differing bits among the other bits; first, second: the pairs' point indices.
    Point p's bit at value w is [kw_p + (w - weight) column_p > 0], which changes only at its crossing. Sorted, the
    crossings split the line into intervals on each of which every bit is fixed; each pair's bit difference changes
    only where one of its two points crosses, so the error of every interval comes from one cumulative sum over those
    changes rather than from recomputing all pairs per interval.
    """
    moves = np.flatnonzero(column != 0)
    crossings = weight - kw[moves] / column[moves]
    order = np.argsort(crossings, kind="stable")
    crossings = crossings[order]
    if crossings.size == 0:
        return np.array([weight]), np.array([reconstruction_error(other + 0.0, targets, bits)])
    candidates = np.concatenate([[crossings[0] - END_OFFSET], (crossings[:-1] + crossings[1:]) / 2.0,
                                 [crossings[-1] + END_OFFSET]])
    # candidate c lies past the crossings of the points ranked < c; a point that never crosses changes "at" len + 1
    change = np.full(kw.shape[0], crossings.size + 1)
    change[moves[order]] = np.arange(1, crossings.size + 1)
    # the bits below every crossing: a positive kernel value makes the bit 0 there, a negative one 1
    lowest = np.where(column != 0, column < 0, kw > 0)
    start = lowest[first] != lowest[second]
    cost_start = 0.5 * ((other + start) / bits - targets) ** 2
    cost_flipped = 0.5 * ((other + ~start) / bits - targets) ** 2
    lo, hi = np.minimum(change[first], change[second]), np.maximum(change[first], change[second])
    steps = (np.bincount(lo, cost_flipped - cost_start, minlength=crossings.size + 2)
             + np.bincount(hi, cost_start - cost_flipped, minlength=crossings.size + 2))
    return candidates, cost_start.sum() + np.cumsum(steps)[:crossings.size + 1]


class BRE(ShallowHash):
    name = "bre"
    supervised = True
    # n_train: the reference code's working size ("50 random points are chosen per training pt if n=1000", BRE.m);
    # hash_size = 50 landmarks per bit (init_BREparam.m); pairs: 5% of the training points per point (BRE.m,
    # rp(1:(.05*n))); tol: BRE.m loops while abs(f - oldf) > 1e-6. max_sweeps is ours (the code has no cap).
    defaults = {"n_train": 1000, "hash_size": 50, "pair_fraction": 0.05, "tol": 1e-6, "max_sweeps": 10000}
    state_keys = ("landmarks", "landmark_index", "weights", "width")

    def __init__(self, bits, seed=0, **params):
        super().__init__(bits, seed, **params)
        check_count(self, "n_train", minimum=2)
        check_count(self, "hash_size")
        check_count(self, "max_sweeps", minimum=0)
        check_number(self, "tol", strict=False)
        check_number(self, "pair_fraction")
        if self.params["pair_fraction"] > 1:
            raise UsageError(f"{self.name}: pair_fraction must be at most 1 (the share of the training points paired "
                             f"with each point; the authors' value is 0.05), got {self.params['pair_fraction']!r}")
        self.landmarks = self.landmark_index = self.weights = self.width = None
        self.history = []  # reconstruction error at the start, then after each sweep
        self.train_index = self.pairs = self.targets = None  # the training subset and pairs the error is over

    def _fit(self, features, labels, rng):
        n = features.shape[0]
        if n < 2:
            raise UsageError(f"{self.name}: needs at least 2 training samples, got {n}")
        # n_train = 1000 and hash_size = 50 are sized for large sets: a smaller set gives all its points
        self.train_index = sample_rows(n, min(self.params["n_train"], n), rng)
        points, tags = features[self.train_index], labels[self.train_index]
        size = points.shape[0]
        per_bit = np.stack([sample_rows(size, min(self.params["hash_size"], size), rng) for _ in range(self.bits)])
        used, self.landmark_index = np.unique(per_bit, return_inverse=True)
        self.landmark_index = self.landmark_index.reshape(per_bit.shape)
        self.landmarks = points[used]
        kernel = self._kernel(points)
        self.weights = INIT_SCALE * rng.standard_normal((per_bit.shape[1], self.bits))
        self.pairs = self._pairs(size, rng)
        first, second = self.pairs
        # supervised targets: 0 for pairs sharing a label, 1 for the others
        self.targets = (np.einsum("ij,ij->i", tags[first], tags[second]) <= 0).astype(np.float64)
        self._descend(kernel, rng)

    def _kernel(self, points):
        """The kernel from `points` to the landmarks, with the width set from them.

        The reference code takes any kernel matrix (the benchmark wrapper init_BREparam.m passes a linear kernel on
        PCA-reduced data). Here the Gaussian kernel with KSH's width rule (the mean squared distance to the landmarks,
        ksh.py), so that the two kernel-hashing baselines share one kernel: an assumption, as HashNet does not say
        which kernel its BRE run used.
        """
        sq = squared_distances(points, self.landmarks)
        self.width = float(sq.mean())
        check_width(self, self.width, "the mean squared distance to the landmarks")
        return np.exp(-sq / (2.0 * self.width))

    def _pairs(self, size, rng):
        """For each point, floor(pair_fraction * n) random points (itself dropped), as BRE.m; at least one."""
        count = max(1, int(self.params["pair_fraction"] * size))
        first, second = [], []
        for i in range(size):
            partners = sample_rows(size, count, rng)
            partners = partners[partners != i]
            first.append(np.full(partners.size, i))
            second.append(partners)
        return np.concatenate(first), np.concatenate(second)

    def _descend(self, kernel, rng):
        first, second = self.pairs
        kw = np.stack([kernel[:, self.landmark_index[b]] @ self.weights[:, b] for b in range(self.bits)], axis=1)
        bits = kw > 0
        differing = (bits[first] != bits[second]).sum(axis=1)
        error = reconstruction_error(differing, self.targets, self.bits)
        self.history = [error]
        for _ in range(self.params["max_sweeps"]):
            start_error = error
            for b in range(self.bits):
                q = rng.integers(self.weights.shape[0])
                column = kernel[:, self.landmark_index[b, q]]
                other = differing - (bits[first, b] != bits[second, b])
                candidates, errors = line_search(kw[:, b], column, self.weights[q, b], other, first, second,
                                                 self.targets, self.bits)
                value = candidates[np.argmin(errors)]
                moved = kw[:, b] + (value - self.weights[q, b]) * column
                new_bits = moved > 0
                new_differing = other + (new_bits[first] != new_bits[second])
                new_error = reconstruction_error(new_differing, self.targets, self.bits)
                # equal crossings make a midpoint land on a crossing, where the predicted bit may not hold: such a
                # step is kept only if it does not raise the error
                if new_error <= error:
                    self.weights[q, b], kw[:, b], bits[:, b] = value, moved, new_bits
                    differing, error = new_differing, new_error
            self.history.append(error)
            if abs(error - start_error) <= self.params["tol"]:
                break

    def _combined_weights(self):
        """(landmarks, bits): bit b's weights placed at its landmarks' rows, so all bits are one product."""
        combined = np.zeros((self.landmarks.shape[0], self.bits))
        np.add.at(combined, (self.landmark_index, np.arange(self.bits)[:, None]), self.weights.T)
        return combined

    def project(self, features):
        features = checked_features(self, features, None if self.landmarks is None else self.landmarks.shape[1])
        return rbf_project(features, self.landmarks, self.width, self._combined_weights())
