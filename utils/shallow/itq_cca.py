"""ITQ-CCA, the supervised ITQ of Gong & Lazebnik ("Iterative Quantization: A Procrustean Approach to Learning Binary
Codes", CVPR 2011; TPAMI 2013, CCA-ITQ): canonical correlation analysis between the centred features and the label
matrix gives the projection (the top `bits` feature-side directions, each scaled by its canonical correlation), then
ITQ's rotation (utils/shallow/itq.itq_rotation) is learnt on the projected features. As the authors' cca.m and their
usage note in it (docs/methods.md#itq, #itq-cca).
"""
import numpy as np

from utils.runtime.errors import UsageError
from utils.shallow.base import ShallowHash
from utils.shallow.itq import check_bits, check_iterations, check_samples, checked_features, fix_signs, itq_rotation


def cca_directions(centred, labels, reg):
    """(directions (d, d), correlations (d,)) of ridge-regularised CCA, strongest correlation first.

    As cca.m: covariances with the n - 1 normalisation (MATLAB's cov), reg added to the diagonals of both auto-
    covariances; with Cxx = L L^T the symmetric Z = L^-1 Cxy Cyy^-1 Cyx L^-T has the squared canonical correlations as
    eigenvalues, and a direction is L^-T times an eigenvector, so that directions^T Cxx directions = I.
    """
    n = centred.shape[0]
    y = labels - labels.mean(axis=0)
    cxx = centred.T @ centred / (n - 1) + reg * np.eye(centred.shape[1])
    cyy = y.T @ y / (n - 1) + reg * np.eye(y.shape[1])
    cxy = centred.T @ y / (n - 1)
    lower = np.linalg.cholesky(cxx)
    whitened = np.linalg.solve(lower, cxy)
    z = whitened @ np.linalg.solve(cyy, whitened.T)
    values, vectors = np.linalg.eigh((z + z.T) / 2)  # symmetrised against round-off, as cca.m
    order = np.argsort(values)[::-1]
    # round-off can leave the null eigenvalues (beyond the label rank) slightly negative: their correlation is 0
    correlations = np.sqrt(np.clip(values[order], 0.0, None))
    return fix_signs(np.linalg.solve(lower.T, vectors[:, order])), correlations


class ITQCCA(ShallowHash):
    name = "itq-cca"
    supervised = True
    # n_iter: the 50 iterations of ITQ (compressITQ.m / the CCA-ITQ usage); reg: "in our work, reg = 0.0001" (cca.m)
    defaults = {"n_iter": 50, "reg": 1e-4}
    state_keys = ("mean", "projection", "rotation")

    def __init__(self, bits, seed=0, **params):
        super().__init__(bits, seed, **params)
        check_iterations(self)
        reg = self.params["reg"]
        if isinstance(reg, bool) or not isinstance(reg, (int, float, np.number)) or not reg > 0:
            raise UsageError(f"{self.name}: reg must be a positive number (the ridge added to the covariances; the "
                             f"authors' value is 1e-4), got {reg!r}")
        self.mean = self.projection = self.rotation = None
        self.history = []

    def _fit(self, features, labels, rng):
        check_samples(self, features)
        check_bits(self, features.shape[1], "the feature dimension: one CCA direction per bit")
        if not np.isfinite(labels).all():
            raise UsageError(f"{self.name}: labels contain NaN or infinite values")
        self.mean = features.mean(axis=0)
        centred = features - self.mean
        directions, correlations = cca_directions(centred, labels, float(self.params["reg"]))
        # scaled by the correlations as the authors' usage note (eigenvector(:,1:bit)*diag(r(1:bit))): weak directions
        # weigh less in the rotation's quantisation loss
        self.projection = directions[:, :self.bits] * correlations[:self.bits]
        self.rotation, self.history = itq_rotation(centred @ self.projection, self.params["n_iter"], rng)

    def project(self, features):
        features = checked_features(self, features, None if self.mean is None else len(self.mean))
        return (features - self.mean) @ self.projection @ self.rotation
