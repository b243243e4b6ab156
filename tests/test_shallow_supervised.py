"""The supervised kernel baselines BRE, KSH and SDH (utils/shallow/bre.py, ksh.py, sdh.py): what pins each method (KSH
and SDH retrieve by label where ITQ and LSH cannot, KSH's gradient phase, SDH's monotone objective, BRE's descent),
one comparison per method against a plain re-derivation written here, and the contract every shallow method keeps
(codes, seeds, state round trip, user errors, training sets smaller than the authors' sizes). NumPy only, small data.
"""
import io

import numpy as np
import pytest

from utils.hashing.metrics import CalcTopMap
from utils.runtime.errors import UsageError
from utils.shallow import BRE, ITQ, KSH, LSH, SDH
from utils.shallow.bre import line_search

METHODS = {"bre": BRE, "ksh": KSH, "sdh": SDH}
BITS = 4
CLASSES = 4
# a relative tolerance for values computed two ways in float64: far above their round-off (~1e-13 of the scale)
RTOL = 1e-9


def toy_set(rng, n, noise_std=2.0):
    """(features (n, 6), multi-hot labels (n, 4)): the classes lie on a circle in two dimensions of small variance
    (std ~1.1), four dimensions of pure noise (std 2) around them carry the top variance, so PCA-based codes (ITQ)
    see only noise. One point in five lies halfway between two neighbouring classes and carries both labels."""
    which = rng.integers(0, CLASSES, n)
    between = rng.random(n) < 0.2
    angle = 2 * np.pi * (which + 0.5 * between) / CLASSES
    signal = 1.5 * np.stack([np.cos(angle), np.sin(angle)], axis=1) + 0.3 * rng.standard_normal((n, 2))
    noise = noise_std * rng.standard_normal((n, 4))
    labels = np.zeros((n, CLASSES))
    labels[np.arange(n), which] = 1
    labels[np.flatnonzero(between), (which[between] + 1) % CLASSES] = 1
    return np.hstack([noise[:, :2], signal, noise[:, 2:]]), labels


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    return toy_set(rng, 240), toy_set(rng, 60)


@pytest.fixture(scope="module")
def fitted(toy):
    (features, labels), _ = toy
    return {name: cls(BITS, seed=0).fit(features, labels) for name, cls in METHODS.items()}


def similarity(labels):
    return np.where(labels @ labels.T > 0, 1.0, -1.0)


def squared_distances_plain(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)


def assert_close(actual, expected, what):
    scale = max(float(np.max(np.abs(expected))), 1e-300)
    assert np.max(np.abs(np.asarray(actual) - expected)) <= RTOL * scale, what


# ------------------------------------------------------------------------------------------------ retrieval quality

@pytest.mark.parametrize("name", ["ksh", "sdh"])
def test_beats_itq_and_lsh_when_labels_are_not_the_top_variance(toy, fitted, name):
    (features, labels), (queries, query_labels) = toy

    def map_of(model):
        return CalcTopMap(model.encode(features), model.encode(queries), labels, query_labels, len(features))

    unsupervised = {"itq": map_of(ITQ(BITS, seed=0).fit(features)), "lsh": map_of(LSH(BITS, seed=0).fit(features))}
    ours = map_of(fitted[name])
    # measured over toy seeds 0-7: KSH 0.91-0.99, SDH 0.80-0.89, ITQ 0.32-0.39, LSH 0.38-0.51 (chance: 0.34)
    assert ours >= 0.7, (name, ours)
    for other, value in unsupervised.items():
        assert ours >= value + 0.25, (name, ours, other, value)


# ------------------------------------------------------------------------------------------------ KSH

def test_ksh_gradient_phase_lowers_the_objective(toy, fitted):
    (features, labels), _ = toy
    model = fitted["ksh"]
    spectral, kept = np.array(model.history).T
    assert np.all(kept <= spectral)
    assert np.any(kept < spectral - 1.0), model.history  # the gradient phase won on some bit
    # the last kept value is ||B B^T - r S||^2 of the labelled set's codes, recomputed here from encode
    codes = model.encode(features[model.labelled]).astype(np.float64)
    objective = np.sum((codes @ codes.T - BITS * similarity(labels[model.labelled])) ** 2)
    assert kept[-1] == pytest.approx(objective, rel=RTOL)
    # and the whole run ends lower than the spectral relaxation alone
    spectral_only = KSH(BITS, seed=0, grad_iters=0).fit(features, labels)
    assert spectral_only.history[-1][1] > kept[-1] + 1.0


def test_ksh_codes_are_signs_of_the_centred_kernel(toy, fitted):
    (features, _), (queries, _) = toy
    model = fitted["ksh"]
    kernel = np.exp(-squared_distances_plain(queries, model.anchors) / (2 * model.sigma))
    train_kernel = np.exp(-squared_distances_plain(features, model.anchors) / (2 * model.sigma))
    assert model.sigma == pytest.approx(squared_distances_plain(features, model.anchors).mean(), rel=RTOL)
    assert_close(model.kernel_mean, train_kernel.mean(axis=0), "kernel mean")
    values = (kernel - train_kernel.mean(axis=0)) @ model.A
    assert_close(model.project(queries), values, "projections")
    np.testing.assert_array_equal(model.encode(queries), np.where(values >= 0, 1.0, -1.0).astype(np.float32))


def test_ksh_spectral_start_is_the_top_generalised_eigenvector(toy):
    (features, labels), _ = toy
    # 20 anchors under 240 labelled points: K^T K is invertible, so the problem is the plain eigenproblem of
    # (K^T K)^-1 K^T (r S) K, solved here by a general eigensolver
    model = KSH(1, seed=0, n_anchors=20, grad_iters=0).fit(features, labels)
    kernel = np.exp(-squared_distances_plain(features, model.anchors) / (2 * model.sigma))
    centred = (kernel - kernel.mean(axis=0))[model.labelled]
    lm = centred.T @ similarity(labels[model.labelled]) @ centred
    rm = centred.T @ centred
    values, vectors = np.linalg.eig(np.linalg.solve(rm, lm))
    top = np.real(vectors[:, np.argmax(np.real(values))])
    a = model.A[:, 0]
    cosine = abs(a @ top) / (np.linalg.norm(a) * np.linalg.norm(top))
    assert cosine == pytest.approx(1.0, abs=1e-7)
    assert a @ rm @ a == pytest.approx(len(model.labelled), rel=1e-7)


# ------------------------------------------------------------------------------------------------ SDH

def test_sdh_objective_never_increases_and_codes_stay_binary(toy):
    (features, labels), _ = toy
    model = SDH(BITS, seed=0, tol=1e-12).fit(features, labels)  # no early stop: all 5 iterations
    history = np.array(model.history)
    assert len(history) == 1 + SDH.defaults["n_iter"]
    assert np.all(np.diff(history) <= RTOL * history[:-1]), history
    assert history[-1] < history[0]
    assert set(np.unique(model.codes)) == {-1.0, 1.0}


def dcc_plain(codes, q, classifier, sweeps):
    """SDH's B-step written out: bit k = sign(q_k - sum over the other bits j of b_j (w_j . w_k))."""
    codes = codes.copy()
    for _ in range(sweeps):
        for k in range(codes.shape[1]):
            total = np.zeros(codes.shape[0])
            for j in range(codes.shape[1]):
                if j != k:
                    total += codes[:, j] * (classifier[j] @ classifier[k])
            codes[:, k] = np.where(q[:, k] - total >= 0, 1.0, -1.0)
    return codes


def test_sdh_matches_a_plain_rederivation(toy):
    (features, labels), _ = toy
    from utils.shallow.sdh import discrete_cyclic_descent

    rng = np.random.default_rng(1)
    codes = np.where(rng.standard_normal((50, 6)) >= 0, 1.0, -1.0)
    q, classifier = rng.standard_normal((50, 6)), rng.standard_normal((6, 3))
    for sweeps in (1, 3):
        np.testing.assert_array_equal(discrete_cyclic_descent(codes, q, classifier, sweeps),
                                      dcc_plain(codes, q, classifier, sweeps))
    # the fitted sigma, and P = the ridge regression of the final codes on phi(x) = [rbf to the anchors, 1]
    model = SDH(BITS, seed=0).fit(features, labels)
    sq = squared_distances_plain(features, model.anchors)
    nearest = [min(sq[i, k] for k in range(sq.shape[1]) if not np.array_equal(features[i], model.anchors[k]))
               for i in range(len(features))]
    assert model.sigma == pytest.approx(np.mean(np.sqrt(nearest)), rel=RTOL)
    phi = np.hstack([np.exp(-sq / (2 * model.sigma ** 2)), np.ones((len(features), 1))])
    ridge = np.linalg.inv(phi.T @ phi + SDH.defaults["p_ridge"] * np.eye(phi.shape[1])) @ phi.T @ model.codes
    assert_close(model.projection, ridge, "P")


# ------------------------------------------------------------------------------------------------ BRE

def test_bre_reconstruction_error_decreases(fitted):
    history = np.array(fitted["bre"].history)
    assert np.all(np.diff(history) <= 0), history
    assert history[-1] < 0.8 * history[0], history


def test_bre_matches_a_plain_rederivation(toy, fitted):
    (features, labels), _ = toy
    model = fitted["bre"]
    # the error the descent ends with, recomputed from the hash functions: kernel, bits, pairs, targets
    points, tags = features[model.train_index], labels[model.train_index]
    kernel = np.exp(-squared_distances_plain(points, model.landmarks) / (2 * model.width))
    bits = np.stack([kernel[:, model.landmark_index[b]] @ model.weights[:, b] > 0 for b in range(BITS)], axis=1)
    first, second = model.pairs
    targets = np.array([0.0 if tags[i] @ tags[j] > 0 else 1.0 for i, j in zip(first, second)])
    hamming = (bits[first] != bits[second]).sum(axis=1) / BITS
    assert 0.5 * np.sum((hamming - targets) ** 2) == pytest.approx(model.history[-1], rel=RTOL)
    np.testing.assert_array_equal(model.encode(points) > 0, bits)
    # one line search against the error evaluated directly at each of its candidate values
    b, q = 1, 2
    column = kernel[:, model.landmark_index[b, q]]
    other = (np.delete(bits, b, axis=1)[first] != np.delete(bits, b, axis=1)[second]).sum(axis=1)
    kw = kernel[:, model.landmark_index[b]] @ model.weights[:, b]
    candidates, errors = line_search(kw, column, model.weights[q, b], other, first, second, targets, BITS)
    assert len(candidates) == len(points) + 1
    for value, error in zip(candidates, errors):
        moved = kw + (value - model.weights[q, b]) * column > 0
        direct = 0.5 * np.sum(((other + (moved[first] != moved[second])) / BITS - targets) ** 2)
        assert error == pytest.approx(direct, rel=RTOL)


# ------------------------------------------------------------------------------------------------ every method

@pytest.mark.parametrize("name", sorted(METHODS))
def test_codes_are_float32_signs(toy, fitted, name):
    _, (queries, _) = toy
    codes = fitted[name].encode(queries)
    assert codes.dtype == np.float32 and codes.shape == (len(queries), BITS)
    assert set(np.unique(codes)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(codes, np.where(fitted[name].project(queries) >= 0, 1, -1))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_same_seed_same_codes(toy, fitted, name):
    (features, labels), (queries, _) = toy
    again = METHODS[name](BITS, seed=0).fit(features, labels)
    np.testing.assert_array_equal(again.encode(queries), fitted[name].encode(queries))
    other = METHODS[name](BITS, seed=1).fit(features, labels)
    assert not np.array_equal(other.project(queries), fitted[name].project(queries))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_state_round_trip(toy, fitted, name):
    _, (queries, _) = toy
    buffer = io.BytesIO()
    np.savez(buffer, **fitted[name].state_dict())
    buffer.seek(0)
    with np.load(buffer) as stored:
        fresh = METHODS[name](BITS, seed=5).set_state_dict(dict(stored))
    np.testing.assert_array_equal(fresh.encode(queries), fitted[name].encode(queries))
    with pytest.raises(UsageError, match="cannot load"):
        METHODS[name](BITS + 1).set_state_dict(fitted[name].state_dict())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_training_set_smaller_than_the_authors_sizes(name):
    features, labels = toy_set(np.random.default_rng(3), 30)
    model = METHODS[name](8, seed=0).fit(features, labels)
    codes = model.encode(features)
    assert codes.shape == (30, 8)
    if name == "ksh":
        assert model.anchors.shape == (30, 6) and len(model.labelled) == 30
    elif name == "sdh":
        assert model.anchors.shape == (30, 6) and model.projection.shape == (31, 8)
    else:
        assert len(model.train_index) == 30 and model.landmark_index.shape == (8, 30)


BAD_PARAMS = [
    ("ksh", {"n_anchors": 0}, "n_anchors must be an integer >= 1"),
    ("ksh", {"n_labelled": 1.5}, "n_labelled must be an integer >= 2"),
    ("ksh", {"grad_iters": -1}, "grad_iters must be an integer >= 0"),
    ("sdh", {"nu": -1e-5}, "nu must be a finite number > 0"),
    ("sdh", {"lam": float("nan")}, "lam must be a finite number > 0"),
    ("sdh", {"n_iter": True}, "n_iter must be an integer >= 0"),
    ("bre", {"hash_size": "50"}, "hash_size must be an integer >= 1"),
    ("bre", {"pair_fraction": 2.0}, "pair_fraction must be at most 1"),
    ("bre", {"sigma": 1.0}, "unknown parameter"),
]


@pytest.mark.parametrize("name, params, message", BAD_PARAMS)
def test_bad_parameters_raise_usage_error(name, params, message):
    with pytest.raises(UsageError, match=message):
        METHODS[name](BITS, **params)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_bad_inputs_raise_usage_error(toy, fitted, name):
    (features, labels), _ = toy
    cls = METHODS[name]
    with pytest.raises(UsageError, match="not fitted"):
        cls(BITS).encode(features)
    with pytest.raises(UsageError, match="supervised"):
        cls(BITS).fit(features)
    with pytest.raises(UsageError, match="labels must be"):
        cls(BITS).fit(features, labels[:-1])
    with pytest.raises(UsageError, match="at least 2 training samples"):
        cls(BITS).fit(features[:1], labels[:1])
    with pytest.raises(UsageError, match="all identical"):
        cls(BITS).fit(np.ones((10, 6)), labels[:10])
    with pytest.raises(UsageError, match=r"features must be \(n, 6\)"):
        fitted[name].encode(features[:, :5])
    with pytest.raises(UsageError, match="NaN"):
        fitted[name].encode(np.full((2, 6), np.nan))
