"""CNNH (Xia, Pan, Lai, Liu, Yan, "Supervised Hashing for Image Retrieval via Image Representation Learning",
AAAI 2014): the two-stage CNNH baseline of HashNet's Table 1 (docs/methods.md#cnnh: values and sources).

Stage 1 (`cnnh_target_codes`, NumPy) learns approximate codes H (n x q, ±1) of the training set from the labels only,
by factorising the similarity matrix:

    S_ij = +1 if items i and j share a label (or i = j), else -1
    min_H ||S - (1/q) H H^T||_F^2        H relaxed to [-1, 1]^(n x q), then H <- sign(H)

The paper solves the relaxed problem by coordinate descent on the residual L = H H^T - q S. Changing one entry
H_ij by d (h = H[:, j] before the change, e_i the i-th unit vector) changes the residual by

    L' = L + d (e_i h^T + h e_i^T) + d^2 e_i e_i^T

so the objective along that coordinate is the quartic
    g(d) - g(0) = g1 d + (g2 / 2) d^2 + 4 h_i d^3 + d^4,   g1 = 4 L_i. h,   g2 = 4 (h.h + h_i^2 + L_ii),
with g1 = g'(0) and g2 = g''(0) exactly the paper's first and second derivatives. The paper's step is the Newton
step kept in the box: d = min(max(-g1 / g2, -1 - H_ij), 1 - H_ij). Then L is updated by the rank-2 change above, in
O(n).

Two safeguards here, where the paper's step would raise the objective. (1) If g2 <= 0 the local quadratic has no
minimum; this happens on small problems (L_ii = |H_i|^2 - q is about -2q/3 at the start, h.h about n/3), so the step
starts from the box's end downhill instead. (2) The step is halved until the exact quartic above decreases. In the
large-n regime the paper ran, the full Newton step almost always passes.

Order: the paper picks the entries in random order. Here the rows are visited in random order and, within a row, the
bits in random order. It is still a random order over all coordinates, grouped by row: while row i is updated, only
L's row i is read, so L's column i is written once per row instead of once per entry (a column of a C-order matrix is
n scattered writes). `iterations` sweeps over all n x q entries; 10 as in DeepHash-pytorch's CNNH.py (T = 10).

Memory: one n x n float32 residual (S is never stored whole; its row blocks are made from the labels): 676 MB for
the 13,000 training images of HashNet's ImageNet list. float32 suffices: each residual entry is rounded about twice
per sweep, and its size is at most 2q. Each row is accumulated in float64 while it is visited.

Stage 2 (`CNNHLoss`): the network's outputs o for the training items `index` fit their target codes:

    loss = mean over the n x q entries of (o - H[index])^2

Squared error on the raw outputs, as swuxyj/DeepHash-pytorch CNNH.py does (`(u - self.H[ind]).pow(2).mean()`, with
no activation on u). The code is sign(o) as for every method. CNNH+, which adds the image labels as extra output units,
is out of scope here.
"""
import numpy as np
import paddle
import paddle.nn as nn

__all__ = ["CNNHLoss", "cnnh_target_codes", "target_code_objective"]

_BLOCK_ROWS = 1024  # rows of S made at once from the labels: 1024 x n float32, 53 MB at n = 13,000


def _similarity_rows(labels, start, stop):
    """S[start:stop] (float32): +1 where two items share a label, -1 elsewhere; +1 on the diagonal, also for an item
    without labels (an item is similar to itself, and no code can have H_i.H_i < 0)."""
    similarity = np.where(labels[start:stop] @ labels.T > 0, 1.0, -1.0).astype(np.float32)
    rows = np.arange(start, stop)
    similarity[rows - start, rows] = 1.0
    return similarity


def _residual(codes, labels):
    """L = H H^T - q S as an n x n float32 matrix, made in row blocks."""
    n, q = codes.shape
    residual = np.empty((n, n), dtype=np.float32)
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n)
        residual[start:stop] = codes[start:stop] @ codes.T - q * _similarity_rows(labels, start, stop)
    return residual


def _squared_norm(matrix):
    """||matrix||_F^2 summed in float64, block by block (no float64 copy of the whole n x n matrix)."""
    return float(sum(np.square(matrix[start:start + _BLOCK_ROWS], dtype=np.float64).sum()
                     for start in range(0, len(matrix), _BLOCK_ROWS)))


def target_code_objective(labels, codes):
    """||S - (1/q) H H^T||_F^2 / n^2: stage 1's objective, as a mean over the n^2 pairs."""
    labels = np.asarray(labels, dtype=np.float32)
    codes = np.asarray(codes, dtype=np.float64)
    n, q = codes.shape
    return _squared_norm(_residual(codes, labels)) / (q * q * n * n)


def _sweep(codes_t, residual, rows, bit_orders, max_halvings=30):
    """One pass of coordinate descent over every entry, rows in the order `rows`, the bits of the t-th row visited in
    the order bit_orders[t]. `codes_t` is H transposed (q x n, so that a column H[:, j] is contiguous) and `residual`
    is L = H H^T - q S; both are updated in place. Returns the number of entries changed."""
    col_sq = np.einsum("jk,jk->j", codes_t, codes_t)  # h.h of each column, kept current below
    changed = 0
    for t, i in enumerate(rows):
        r = residual[i].astype(np.float64)  # row i of L; L is symmetric, so this is also its column i
        for j in bit_orders[t]:
            h = codes_t[j]
            h_i = h[i]
            # einsum, not r @ h: OpenBLAS threads a dot product this long, and the threads' hand-over costs more
            # than the product (up to 30x slower per entry at n = 13,000 on two busy cores)
            g1 = 4.0 * float(np.einsum("k,k->", r, h))
            g2 = 4.0 * (col_sq[j] + h_i * h_i + r[i])
            if g1 == 0.0:
                continue
            low, high = -1.0 - h_i, 1.0 - h_i
            # the paper's Newton step in the box; with no curvature, the box's end downhill
            d = min(max(-g1 / g2, low), high) if g2 > 0 else (high if g1 < 0 else low)
            for _ in range(max_halvings):
                if d == 0.0 or g1 * d + 0.5 * g2 * d * d + 4.0 * h_i * d ** 3 + d ** 4 < 0.0:
                    break
                d *= 0.5
            else:
                d = 0.0
            if d == 0.0:
                continue
            # the rank-2 change of L restricted to row i; r[i] gets d h_i from each of the two terms, plus d^2
            r += d * h
            r[i] += d * h_i + d * d
            col_sq[j] += 2.0 * d * h_i + d * d
            h[i] = h_i + d  # h is a view: this writes H[i, j]
            changed += 1
        residual[i, :] = r
        residual[:, i] = r
    return changed


def cnnh_target_codes(labels, bits, iterations=10, seed=0, history=None):
    """Stage 1 of CNNH: (n, bits) float32 ±1 target codes of the n training items from their multi-hot labels.

    H starts uniform in [-1, 1] (seeded), then `iterations` sweeps of the coordinate descent above; the codes are the
    signs of the relaxed H (0 -> +1, the project's sign rule). With a list as `history`, the relaxed objective
    ||S - H H^T / q||_F^2 / n^2 is appended before the first sweep and after each one. It stops early when a sweep
    changes nothing. The same labels, bits, iterations and seed give the same codes.
    """
    labels = np.asarray(labels, dtype=np.float32)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (n, classes); got shape {labels.shape}")
    if bits < 1 or iterations < 0:
        raise ValueError(f"need bits >= 1 and iterations >= 0; got bits={bits}, iterations={iterations}")
    n = len(labels)
    rng = np.random.default_rng(seed)
    codes_t = rng.uniform(-1.0, 1.0, size=(bits, n))
    residual = _residual(codes_t.T, labels)
    scale = 1.0 / (bits * bits * n * n)
    if history is not None:
        history.append(_squared_norm(residual) * scale)
    for _ in range(iterations):
        rows = rng.permutation(n)
        bit_orders = rng.permuted(np.tile(np.arange(bits), (n, 1)), axis=1)
        changed = _sweep(codes_t, residual, rows, bit_orders)
        if history is not None:
            history.append(_squared_norm(residual) * scale)
        if not changed:
            break
    return np.where(codes_t.T >= 0, 1.0, -1.0).astype(np.float32)


class CNNHLoss(nn.Layer):
    """`CNNHLoss(targets)`: stage 2 of CNNH, with `targets` the (num_train, bits) ±1 codes of stage 1.

    Called as `criterion(outputs, labels, index)`; labels are unused (the targets already encode them). The targets
    are a persistable buffer, so a checkpoint carries them and a resumed run fits the same codes: to resume, build
    with any array of the right shape and let set_state_dict() replace it.
    """

    def __init__(self, targets):
        super().__init__()
        targets = np.asarray(targets, dtype=np.float32)
        if targets.ndim != 2:
            raise ValueError(f"targets must be (num_train, bits); got shape {targets.shape}")
        self.num_train, self.bit = targets.shape
        self.scale = 1.0
        self.register_buffer("targets", paddle.to_tensor(targets), persistable=True)

    def forward(self, o, y, ind):
        if o.shape[-1] != self.bit:
            raise ValueError(f"CNNHLoss holds {self.bit}-bit targets; got outputs of width {o.shape[-1]}")
        target = paddle.gather(self.targets, ind.reshape([-1]).astype("int64"))
        return ((o - target) ** 2).mean()
