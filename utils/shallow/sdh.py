"""SDH, Supervised Discrete Hashing (Shen, Shen, Liu & Shen, CVPR 2015), with the L2 loss, as the authors' reference
code runs it (SDH.m, RRC.m and demo_SDH.m of github.com/bd622/DiscretHashing; defaults in docs/methods.md#sdh).

Features become phi(x), the Gaussian RBF kernel to m random training points (anchors) with a constant 1 appended;
the codes B of the training set, a linear classifier W from codes to labels and the projection P from phi(x) to codes
minimise
    ||Y - B W||^2 + lam ||W||^2 + nu (||B - phi(X) P||^2 + p_ridge ||P||^2)
by alternating: B by discrete cyclic coordinate descent (each bit column in turn, exactly, the others fixed), W and P
by ridge regression. Each step minimises the objective over its block, so self.history never increases. Codes of any
features are sign(phi(x) P).
"""
import numpy as np

from utils.runtime.errors import UsageError
from utils.shallow.base import ShallowHash
from utils.shallow.itq import checked_features, sign_pm1
from utils.shallow.kernels import (
    check_count,
    check_number,
    check_width,
    rbf_project,
    sample_rows,
    squared_distances,
)

# DCC sweeps end early once a sweep leaves B unchanged: norm(B - Z0) < 1e-6 norm(Z0) in SDH.m, which for +-1 codes
# means no bit moved
DCC_STOP = 1e-6


def ridge(inputs, targets, lam):
    """argmin_W ||targets - inputs W||^2 + lam ||W||^2, as RRC.m: through the smaller of the two Gram matrices."""
    n, d = inputs.shape
    if n < d:
        return inputs.T @ np.linalg.solve(inputs @ inputs.T + lam * np.eye(n), targets)
    return np.linalg.solve(inputs.T @ inputs + lam * np.eye(d), inputs.T @ targets)


def discrete_cyclic_descent(codes, q, classifier, sweeps):
    """B minimising ||Y - B W||^2 + nu ||B - F||^2 bit by bit, from `codes`, with q = Y W^T + nu F (n, bits).

    With every other bit column fixed, column k's minimiser is sign(q_k - B' W' w_k) (B', W' without column / row k,
    w_k row k of W): ||B||^2 is constant for +-1 codes, so only the cross terms with the other bits remain. A zero
    argument leaves both signs equally good; it takes +1, the project's sign rule.
    """
    codes = codes.copy()
    gram = classifier @ classifier.T  # (bits, bits): w_j . w_k
    for _ in range(sweeps):
        before = codes.copy()
        for k in range(codes.shape[1]):
            others = codes @ gram[:, k] - codes[:, k] * gram[k, k]
            codes[:, k] = sign_pm1(q[:, k] - others)
        if np.linalg.norm(codes - before) < DCC_STOP * np.linalg.norm(before):
            break
    return codes


class SDH(ShallowHash):
    name = "sdh"
    supervised = True
    # demo_SDH.m: n_anchors = 1000, gmap.lambda = 1 (lam), Fmap.nu = 1e-5 (nu), Fmap.lambda = 1e-2 (p_ridge), maxItr = 5
    # (n_iter); SDH.m: tol = 1e-5 (its default, the demo passes []), 10 DCC sweeps per B-step ("for time = 1:10")
    defaults = {"n_anchors": 1000, "lam": 1.0, "nu": 1e-5, "p_ridge": 1e-2, "n_iter": 5, "dcc_iter": 10, "tol": 1e-5}
    state_keys = ("anchors", "sigma", "projection")

    def __init__(self, bits, seed=0, **params):
        super().__init__(bits, seed, **params)
        for key in ("n_anchors", "dcc_iter"):
            check_count(self, key)
        check_count(self, "n_iter", minimum=0)
        for key in ("lam", "nu", "p_ridge", "tol"):
            check_number(self, key)
        self.anchors = self.sigma = self.projection = None
        self.history = []  # the objective after the initial W and P, then after each outer iteration
        self.codes = None  # the training set's B (not part of the hash functions)

    def _fit(self, features, labels, rng):
        n = features.shape[0]
        if n < 2:
            raise UsageError(f"{self.name}: needs at least 2 training samples, got {n}")
        if not np.isfinite(labels).all():
            raise UsageError(f"{self.name}: labels contain NaN or infinite values")
        # 1000 anchors are sized for 59,000 training images; a smaller training set gives all its points as anchors
        m = min(self.params["n_anchors"], n)
        chosen = sample_rows(n, m, rng)
        self.anchors = features[chosen]
        sq = squared_distances(features, self.anchors)
        self.sigma = self._width(sq, chosen)
        phi = np.hstack([np.exp(-sq / (2.0 * self.sigma ** 2)), np.ones((n, 1))])
        del sq
        lam, nu, p_ridge = (float(self.params[key]) for key in ("lam", "nu", "p_ridge"))

        codes = sign_pm1(rng.standard_normal((n, self.bits)))  # demo_SDH.m: Zinit = sign(randn(Ntrain, nbits))
        classifier = ridge(codes, labels, lam)
        projection = ridge(phi, codes, p_ridge)
        self.history = [self._objective(phi, labels, codes, classifier, projection)]
        for _ in range(self.params["n_iter"]):
            q = nu * (phi @ projection) + labels @ classifier.T
            # Warm-started from the previous B, as the paper's alternating scheme: the authors' SDH.m zeroes B before
            # each B-step, after which the B-step need not lower the objective (see docs/methods.md#sdh)
            codes = discrete_cyclic_descent(codes, q, classifier, self.params["dcc_iter"])
            classifier = ridge(codes, labels, lam)
            previous = projection
            projection = ridge(phi, codes, p_ridge)
            self.history.append(self._objective(phi, labels, codes, classifier, projection))
            tol = self.params["tol"]
            # SDH.m's two early stops; its norm(WF0) without 'fro' is the spectral norm
            if np.linalg.norm(codes - phi @ projection) < tol * np.linalg.norm(codes):
                break
            if np.linalg.norm(projection - previous) < tol * np.linalg.norm(previous, 2):
                break
        self.projection, self.codes = projection, codes

    def _width(self, sq, chosen):
        """The RBF sigma: the mean over training points of the distance to the nearest anchor.

        The data-driven rule the authors give next to their fixed sigma = 0.4 for unit-normalised GIST (demo_SDH.m,
        sigma = mean(min(Dis,[],2).^0.5)); these features are not normalised, so the data rule. A training point that
        is an anchor would count 0 (every point, when the set is smaller than n_anchors): its nearest other anchor
        (none with a single anchor: that point is left out).
        """
        own = sq[chosen, np.arange(len(chosen))].copy()
        sq[chosen, np.arange(len(chosen))] = np.inf
        nearest = np.sqrt(sq.min(axis=1))
        sq[chosen, np.arange(len(chosen))] = own
        sigma = float(nearest[np.isfinite(nearest)].mean())
        check_width(self, sigma, "the mean distance to the nearest anchor")
        return sigma

    def _objective(self, phi, labels, codes, classifier, projection):
        nu, lam, p_ridge = (float(self.params[key]) for key in ("nu", "lam", "p_ridge"))
        return float(np.sum((labels - codes @ classifier) ** 2) + lam * np.sum(classifier ** 2)
                     + nu * (np.sum((codes - phi @ projection) ** 2) + p_ridge * np.sum(projection ** 2)))

    def project(self, features):
        features = checked_features(self, features, None if self.anchors is None else self.anchors.shape[1])
        return rbf_project(features, self.anchors, self.sigma ** 2, self.projection[:-1], bias=self.projection[-1])
