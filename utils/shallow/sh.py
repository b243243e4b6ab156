"""SH, Spectral Hashing (Weiss, Torralba & Fergus, "Spectral Hashing", NIPS 2008), as the authors' reference MATLAB
code does it (trainSH.m / compressSH.m, http://www.cs.huji.ac.il/~yweiss/SpectralHashing/):

PCA to min(bits, d) directions; the data taken as uniform over the bounding box [mn, mx] of its PCA coordinates; among
the analytical eigenfunctions of that box, sin(pi/2 + k pi (x_j - mn_j) / (mx_j - mn_j)) along one direction j, the
`bits` ones with the smallest eigenvalues, i.e. the smallest frequencies k pi / (mx_j - mn_j) (mode k = 0 excluded);
each bit is the sign of one of them.
"""
import numpy as np

from utils.shallow.base import ShallowHash
from utils.shallow.itq import check_samples, checked_features, principal_directions


def lowest_modes(ranges, bits):
    """(bits, len(ranges)) integer modes of the `bits` lowest-frequency eigenfunctions over a box of side `ranges`.

    As trainSH.m: direction j offers modes 1 .. ceil((bits + 1) R_j / max R) - 1 (enough, since the widest direction
    alone offers `bits`), one row per mode with a single non-zero entry, after the all-zero constant mode; the rows are
    ranked by their squared frequency sum (k pi / R_j)^2 with a stable sort (MATLAB's), so ties keep the enumeration
    order (direction, then mode), and the constant mode, ranked first, is dropped.
    """
    npca = len(ranges)
    max_mode = np.ceil((bits + 1) * ranges / ranges.max()).astype(int)
    rows = [np.zeros(npca, dtype=np.int64)]
    for j in range(npca):
        for k in range(1, max_mode[j]):
            row = np.zeros(npca, dtype=np.int64)
            row[j] = k
            rows.append(row)
    modes = np.array(rows)
    frequencies = np.sum((modes * (np.pi / ranges)) ** 2, axis=1)
    order = np.argsort(frequencies, kind="stable")
    return modes[order[1:bits + 1]]


class SH(ShallowHash):
    name = "sh"
    defaults = {}  # trainSH.m has no setting but the number of bits
    state_keys = ("mean", "pc", "mn", "mx", "modes")

    def __init__(self, bits, seed=0, **params):
        super().__init__(bits, seed, **params)
        self.mean = self.pc = self.mn = self.mx = self.modes = None

    def _fit(self, features, labels, rng):
        check_samples(self, features)  # any bits: with bits > d the PCA keeps all d directions, as trainSH.m
        # trainSH.m projects the raw features ("no need to remove the mean"); centring first only shifts the box with
        # the data, so the codes are the same, and project() shares ITQ's centred PCA
        self.mean = features.mean(axis=0)
        self.pc = principal_directions(features - self.mean, min(self.bits, features.shape[1]))
        projected = (features - self.mean) @ self.pc
        eps = np.finfo(np.float64).eps  # MATLAB's eps, as trainSH.m widens the box by it
        self.mn = projected.min(axis=0) - eps
        self.mx = projected.max(axis=0) + eps
        self.modes = lowest_modes(self.mx - self.mn, self.bits)

    def project(self, features):
        features = checked_features(self, features, None if self.mean is None else len(self.mean))
        shifted = (features - self.mean) @ self.pc - self.mn
        omegas = self.modes * (np.pi / (self.mx - self.mn))  # (bits, npca)
        # one bit at a time as compressSH.m (an (n, bits, npca) array would not fit for a large database); the product
        # runs over the directions, where those of mode 0 contribute sin(pi/2) = 1
        values = np.empty((features.shape[0], len(omegas)))
        for i, omega in enumerate(omegas):
            values[:, i] = np.prod(np.sin(np.pi / 2 + shifted * omega), axis=1)
        return values
