"""What every shallow hashing method gives (docs/methods.md#shallow-baselines): fitted once on the training set's
features (and labels, for the supervised ones), then encoding any features into ±1 codes with the fitted functions.

A method is a subclass with `name`, `supervised`, `defaults` (its hyper-parameters as its authors' reference code sets
them, each cited in docs/methods.md), `state_keys` (the fitted arrays that make its hash functions), `_fit` and
`project` (the real values whose signs are the codes). Everything is float64 NumPy; the codes follow the project's
sign rule (utils/hashing/codes.binarize: 0 counts as +1).
"""
import numpy as np

from utils.hashing.codes import binarize
from utils.runtime.errors import UsageError


class ShallowHash:
    name = None  # the --method value
    supervised = False  # fit() needs the training labels
    defaults = {}  # hyper-parameter -> value of the authors' reference code
    state_keys = ()  # attributes holding the fitted hash functions (saved by state_dict)

    def __init__(self, bits, seed=0, **params):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise UsageError(f"{self.name}: unknown parameter(s) {', '.join(unknown)}; it takes "
                             f"{', '.join(sorted(self.defaults)) or 'none'}")
        if not isinstance(bits, (int, np.integer)) or bits < 1:
            raise UsageError(f"{self.name}: bits must be a positive integer, got {bits!r}")
        self.bits, self.seed = int(bits), int(seed)
        self.params = {**self.defaults, **params}

    def fit(self, features, labels=None):
        """Fit on the training set: features (n, d), labels (n, classes) multi-hot (supervised methods); self."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or not np.isfinite(features).all():
            raise UsageError(f"{self.name}: features must be a finite (n, d) array, got shape {features.shape}")
        if self.supervised:
            if labels is None:
                raise UsageError(f"{self.name} is supervised: fit(features, labels) needs the training labels")
            labels = np.asarray(labels, dtype=np.float64)
            if labels.ndim != 2 or labels.shape[0] != features.shape[0]:
                raise UsageError(f"{self.name}: labels must be (n, classes) with n = {features.shape[0]} rows, got "
                                 f"shape {labels.shape}")
        self._fit(features, labels, np.random.default_rng(self.seed))
        return self

    def _fit(self, features, labels, rng):
        raise NotImplementedError

    def project(self, features):
        """(n, bits) real values whose signs are the codes."""
        raise NotImplementedError

    def encode(self, features):
        """(n, bits) float32 codes in {-1, +1}."""
        return binarize(self.project(np.asarray(features, dtype=np.float64)))

    def state_dict(self):
        """The fitted hash functions as arrays (np.savez-able), with the settings that made them."""
        state = {key: np.asarray(getattr(self, key)) for key in self.state_keys}
        state.update(method=np.asarray(self.name), bits=np.asarray(self.bits), seed=np.asarray(self.seed))
        return state

    def set_state_dict(self, state):
        if str(state["method"]) != self.name or int(state["bits"]) != self.bits:
            raise UsageError(f"{self.name} ({self.bits} bits) cannot load a fitted {state['method']} "
                             f"({int(state['bits'])} bits)")
        for key in self.state_keys:
            setattr(self, key, np.asarray(state[key]))
        return self
