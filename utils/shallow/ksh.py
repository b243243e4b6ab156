"""KSH, Kernel-Based Supervised Hashing ("Supervised Hashing with Kernels", Liu, Wang, Ji, Jiang & Chang, CVPR 2012),
as the authors' reference code runs it (KSH_demo.m and OptProjectionFast.m of
github.com/ColumbiaDVMM/Supervised-Hashing-with-Kernels; defaults in docs/methods.md#ksh).

Bit k is sign(k_bar(x) a_k), k_bar(x) the Gaussian RBF kernel from x to m random training points (anchors), centred by
its mean over the training set. On l labelled training points with S_ij = +1 for pairs sharing a label, -1 otherwise,
the codes B (l, r) should have inner products close to r S: min ||B B^T - r S||_F^2. The bits are learnt one after
another (greedily), each against the residual R = r S - sum of the earlier bits' y y^T, which maximises y^T R y:
first the spectral relaxation (the top generalised eigenvector of (K^T R K, K^T K)), then gradient descent on the
smooth surrogate with sign replaced by 2 / (1 + exp(-t)) - 1; the gradient result replaces the spectral one only when
its codes are better.
"""
import numpy as np

from utils.runtime.errors import UsageError
from utils.shallow.base import ShallowHash
from utils.shallow.itq import checked_features, fix_signs, sign_pm1
from utils.shallow.kernels import check_count, check_width, rbf_project, sample_rows, squared_distances

# OptProjectionFast.m: the step size 1 / beta doubles up to 50 times until the step passes the sufficient-decrease
# test; the descent stops when the surrogate cost moves by at most 1e-2 per labelled point
BACKTRACK_DOUBLINGS = 50
STOP_PER_POINT = 1e-2
# relative ridge on K^T K: with fewer labelled points than anchors (a small training set) it is singular, and only its
# range matters, where the generalised eigenproblem is unchanged to this precision
EIG_RIDGE = 1e-9


def smooth_codes(values):
    """2 / (1 + exp(-t)) - 1 of the reference code, written as tanh(t / 2), which does not overflow."""
    return np.tanh(values / 2.0)


def surrogate_cost(kernel, residual, a):
    y = smooth_codes(kernel @ a)
    return -float(y @ residual @ y)


def spectral_direction(lm, rm, labelled):
    """The top generalised eigenvector a of lm a = lambda rm a, scaled to a^T rm a = l (KSH_demo.m: eig(LM, RM))."""
    ridge = EIG_RIDGE * np.trace(rm) + np.finfo(float).tiny
    lower = np.linalg.cholesky(rm + ridge * np.eye(rm.shape[0]))
    half = np.linalg.solve(lower, lm)
    whitened = np.linalg.solve(lower, half.T)  # L^-1 LM L^-T (LM is symmetric)
    _, vectors = np.linalg.eigh((whitened + whitened.T) / 2.0)
    a = fix_signs(np.linalg.solve(lower.T, vectors[:, -1:]))[:, 0]
    return a * np.sqrt(labelled / (a @ rm @ a))


def optimise_projection(kernel, residual, a0, iterations):
    """Nesterov-accelerated gradient descent with backtracking on -y^T R y, y = smooth_codes(K a), from a0.

    As OptProjectionFast.m: the probe point v extrapolates the last two iterates with the (delta_t - 1) / delta_t+1
    momentum; the step 1 / b, b = 2^j beta, is the first passing g(z) <= g(v) + g'(v)^T (z - v) + b ||z - v||^2 / 2,
    and beta keeps the accepted b; no passing step, or a cost change of at most STOP_PER_POINT * l, ends the descent.
    """
    n = kernel.shape[0]
    previous = current = a0
    cost = surrogate_cost(kernel, residual, a0)
    delta_previous, delta, beta = 0.0, 1.0, 1.0
    for _ in range(iterations):
        probe = current + (delta_previous - 1.0) / delta * (current - previous)
        y = smooth_codes(kernel @ probe)
        cost_probe = -float(y @ residual @ y)
        gradient = -kernel.T @ ((residual @ y) * (1.0 - y ** 2))
        for j in range(BACKTRACK_DOUBLINGS + 1):
            b = 2.0 ** j * beta
            step = -gradient / b
            cost_new = surrogate_cost(kernel, residual, probe + step)
            if cost_new <= cost_probe + gradient @ step + b * (step @ step) / 2.0:
                break
        else:
            break
        beta = b
        previous, current = current, probe + step
        delta_previous, delta = delta, (1.0 + np.sqrt(1.0 + 4.0 * delta ** 2)) / 2.0
        if abs(cost_new - cost) / n <= STOP_PER_POINT:
            break
        cost = cost_new
    return current


class KSH(ShallowHash):
    name = "ksh"
    supervised = True
    # KSH_demo.m: m = 300 anchors, trn = 2000 labelled samples (label_index_2k; the paper also reports l = 1000),
    # OptProjectionFast(KK, S, A1(:,rr), 500): 500 gradient iterations per bit
    defaults = {"n_anchors": 300, "n_labelled": 2000, "grad_iters": 500}
    state_keys = ("anchors", "sigma", "kernel_mean", "A")

    def __init__(self, bits, seed=0, **params):
        super().__init__(bits, seed, **params)
        check_count(self, "n_anchors")
        check_count(self, "n_labelled", minimum=2)
        check_count(self, "grad_iters", minimum=0)
        self.anchors = self.sigma = self.kernel_mean = self.A = None
        # per bit: (||R - y y^T||_F^2 with the spectral y, the same with the kept y); the last kept value is
        # ||B B^T - r S||_F^2 of the labelled set's codes
        self.history = []
        self.labelled = None  # indices of the labelled subset in the training set

    def _fit(self, features, labels, rng):
        n = features.shape[0]
        if n < 2:
            raise UsageError(f"{self.name}: needs at least 2 training samples, got {n}")
        # 300 anchors and 2000 labelled points are sized for 59,000 training images: a smaller training set gives all
        # its points (the anchors drawn before the labelled subset, as the demo loads sample_300 then label_index_2k)
        self.anchors = features[sample_rows(n, min(self.params["n_anchors"], n), rng)]
        self.labelled = sample_rows(n, min(self.params["n_labelled"], n), rng)
        sq = squared_distances(features, self.anchors)
        # KSH_demo.m: sigma = mean(mean(KTrain,2)) of the squared distances, kernel exp(-d^2 / (2 sigma)): this sigma
        # is the mean squared distance to the anchors, a squared length
        self.sigma = float(sq.mean())
        check_width(self, self.sigma, "the mean squared distance to the anchors")
        kernel = np.exp(-sq / (2.0 * self.sigma))
        del sq
        self.kernel_mean = kernel.mean(axis=0)
        labelled_kernel = kernel[self.labelled] - self.kernel_mean
        del kernel
        tags = labels[self.labelled]
        residual = self.bits * np.where(tags @ tags.T > 0, 1.0, -1.0)
        self.A, self.history = self._learn_bits(labelled_kernel, residual)

    def _learn_bits(self, kernel, residual):
        """The greedy bit-by-bit optimisation: A (m, bits) and the history (see __init__)."""
        size, m = kernel.shape
        gram = kernel.T @ kernel
        residual_kernel = residual @ kernel  # R K, updated bit by bit rather than recomputed (l^2 m per bit)
        norm_sq = float(np.sum(residual ** 2))  # ||R||_F^2, likewise
        projections, history = np.zeros((m, self.bits)), []
        for k in range(self.bits):
            spectral = spectral_direction(kernel.T @ residual_kernel, gram, size)
            refined = optimise_projection(kernel, residual, spectral, self.params["grad_iters"])
            y_spectral, y_refined = sign_pm1(kernel @ spectral), sign_pm1(kernel @ refined)
            gain_spectral = float(y_spectral @ residual @ y_spectral)
            gain_refined = float(y_refined @ residual @ y_refined)
            # ||R - y y^T||^2 = ||R||^2 - 2 y^T R y + l^2 for +-1 y
            before = norm_sq - 2.0 * gain_spectral + size ** 2
            if gain_refined > gain_spectral:
                projections[:, k], y, gain = refined, y_refined, gain_refined
            else:
                projections[:, k], y, gain = spectral, y_spectral, gain_spectral
            norm_sq = norm_sq - 2.0 * gain + size ** 2
            history.append((before, norm_sq))
            residual -= np.outer(y, y)
            residual_kernel -= np.outer(y, y @ kernel)
        return projections, history

    def project(self, features):
        features = checked_features(self, features, None if self.anchors is None else self.anchors.shape[1])
        return rbf_project(features, self.anchors, self.sigma, self.A, centre=self.kernel_mean)
