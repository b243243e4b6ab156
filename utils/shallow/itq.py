"""ITQ, Iterative Quantization (Gong & Lazebnik, "Iterative Quantization: A Procrustean Approach to Learning Binary
Codes", CVPR 2011; TPAMI 2013): PCA of the centred features to `bits` dimensions, then the orthogonal rotation R that
minimises the quantisation loss ||B - VR||_F^2, found by alternating B = sign(VR) with the orthogonal Procrustes
solution for R. Follows the authors' ITQ.m / compressITQ.m (docs/methods.md#itq, #itq-cca).

Also home of what LSH, SH and ITQ-CCA share with it: the input check of `project`, the PCA directions and (for
ITQ-CCA) the rotation loop itself.
"""
import numpy as np

from utils.runtime.errors import UsageError
from utils.shallow.base import ShallowHash


def checked_features(model, features, dim):
    """`features` as a finite float64 (n, dim) array; UsageError naming the method otherwise, or if it is not fitted
    (dim None: no fitted state).

    encode() hands project() its input unchecked: a NaN would otherwise surface as binarize's "network diverged".
    """
    if dim is None:
        raise UsageError(f"{model.name}: not fitted; call fit(features) or set_state_dict(state) before encode")
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != dim:
        raise UsageError(f"{model.name}: features must be (n, {dim}) like the training features, got shape "
                         f"{features.shape}")
    if not np.isfinite(features).all():
        raise UsageError(f"{model.name}: features contain NaN or infinite values")
    return features


def check_iterations(model):
    n_iter = model.params["n_iter"]
    if not isinstance(n_iter, (int, np.integer)) or isinstance(n_iter, bool) or n_iter < 0:
        raise UsageError(f"{model.name}: n_iter must be a non-negative integer, got {n_iter!r}")


def check_samples(model, features):
    if features.shape[0] < 2:
        raise UsageError(f"{model.name}: needs at least 2 training samples for a covariance, got {features.shape[0]}")


def check_bits(model, at_most, what):
    if model.bits > at_most:
        raise UsageError(f"{model.name}: bits must be at most {at_most} ({what}), got {model.bits}")


def fix_signs(directions):
    """Each column flipped so its largest-magnitude entry is positive.

    An eigenvector's sign is arbitrary (it depends on the LAPACK path); fixing it makes the fitted functions a function
    of the data alone, so another implementation can be compared bit for bit.
    """
    rows = np.argmax(np.abs(directions), axis=0)
    signs = np.where(directions[rows, np.arange(directions.shape[1])] < 0, -1.0, 1.0)
    return directions * signs


def principal_directions(centred, k):
    """(d, k) top-k eigenvectors of the sample covariance (the authors' eigs(cov(X), k)), largest variance first.

    With fewer samples than dimensions (the toy set's 1,000 images of 4,096-d fc7) they are the right singular vectors
    of the centred data: the same directions (signs fixed alike), at O(n^2 d) instead of the d x d eigenproblem's
    O(d^3), ~10 s at d = 4,096."""
    n, d = centred.shape
    if n < d:
        _, _, right_t = np.linalg.svd(centred, full_matrices=False)
        return fix_signs(right_t[:k].T)
    cov = centred.T @ centred / (n - 1)
    _, vectors = np.linalg.eigh(cov)
    return fix_signs(vectors[:, ::-1][:, :k])


def sign_pm1(values):
    """±1 with 0 counted as +1, the rule of the authors' code (UX(Z>=0) = 1) and of utils.hashing.codes.binarize."""
    return np.where(values >= 0, 1.0, -1.0)


def itq_rotation(projected, n_iter, rng):
    """The ITQ rotation of `projected` (n, c): returns (R, history).

    As ITQ.m: R starts as the left singular vectors of a c x c Gaussian matrix, then the loop `for iter=0:n_iter`
    (n_iter + 1 updates) sets B = sign(VR) and R = UA UB^T from the SVD B^T V = UB S UA^T (orthogonal Procrustes).
    history[0] is the loss ||B - VR||_F^2 of the first B at the initial R, then one entry per update, at the new R;
    each half-step minimises the loss over its variable, so the sequence never increases.
    """
    c = projected.shape[1]
    rotation = np.linalg.svd(rng.standard_normal((c, c)))[0]
    codes = sign_pm1(projected @ rotation)
    history = [float(np.sum((codes - projected @ rotation) ** 2))]
    for _ in range(n_iter + 1):
        left, _, right_t = np.linalg.svd(codes.T @ projected)
        rotation = right_t.T @ left.T
        history.append(float(np.sum((codes - projected @ rotation) ** 2)))
        codes = sign_pm1(projected @ rotation)
    return rotation, history


class ITQ(ShallowHash):
    name = "itq"
    # 50: the authors' call ITQ(XX, 50) in compressITQ.m and their recall/precision demo ("50 is usually enough")
    defaults = {"n_iter": 50}
    state_keys = ("mean", "pc", "rotation")

    def __init__(self, bits, seed=0, **params):
        super().__init__(bits, seed, **params)
        check_iterations(self)
        self.mean = self.pc = self.rotation = None
        self.history = []

    def _fit(self, features, labels, rng):
        check_samples(self, features)
        check_bits(self, features.shape[1], "the feature dimension: one PCA direction per bit")
        # centring makes sign() split each direction through the data's middle ("VERY IMPORTANT", compressITQ.m)
        self.mean = features.mean(axis=0)
        centred = features - self.mean
        self.pc = principal_directions(centred, self.bits)
        self.rotation, self.history = itq_rotation(centred @ self.pc, self.params["n_iter"], rng)

    def project(self, features):
        features = checked_features(self, features, None if self.mean is None else len(self.mean))
        return (features - self.mean) @ self.pc @ self.rotation
