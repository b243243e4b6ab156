"""LSH, locality-sensitive hashing (HashNet's Table 1 cites Gionis, Indyk & Motwani, VLDB 1999) in the sign-random-
projection form for angles (Charikar, STOC 2002) that the ITQ and SH authors' benchmark code runs as "LSH": each bit is
the sign of the centred feature's projection on a standard Gaussian direction. Nothing is learnt but the training mean.
"""
from utils.shallow.base import ShallowHash
from utils.shallow.itq import checked_features


class LSH(ShallowHash):
    name = "lsh"
    state_keys = ("mean", "projection")

    def __init__(self, bits, seed=0, **params):
        super().__init__(bits, seed, **params)
        self.mean = self.projection = None

    def _fit(self, features, labels, rng):
        # Centred as in the ITQ authors' benchmark code (their recall/precision demo, main.m, centres the features once
        # before every method, its LSH branch included): a hyperplane through the origin then cuts through the data,
        # not past it, so the bits are near balanced. The training mean, as fit sees no test data.
        self.mean = features.mean(axis=0)
        self.projection = rng.standard_normal((features.shape[1], self.bits))

    def project(self, features):
        features = checked_features(self, features, None if self.mean is None else len(self.mean))
        return (features - self.mean) @ self.projection
