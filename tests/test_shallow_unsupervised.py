"""LSH, SH, ITQ and ITQ-CCA (utils/shallow): the properties that pin each method, each one against a re-derivation
written here from the papers (a different route to the same numbers: PCA by SVD of the data, Procrustes from the
other side, CCA by whitening and SVD), and what every method shares (codes, state round trip, user errors).
NumPy only, small synthetic data."""
import io

import numpy as np
import pytest

import utils.shallow.itq as itq_module
import utils.shallow.itq_cca as itq_cca_module
from utils.hashing.metrics import CalcTopMap
from utils.runtime.errors import UsageError
from utils.shallow.itq import ITQ
from utils.shallow.itq_cca import ITQCCA
from utils.shallow.lsh import LSH
from utils.shallow.sh import SH, lowest_modes


# ----------------------------------------------------------------------------------------------- data
def clusters(seed, n=600, k=8, d=64, latent=3, spread=6.0, noise=1.0, offset=5.0):
    """k Gaussian clusters whose centres span a `latent`-dim subspace of R^d, isotropic noise in all d, off-centre."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((d, latent)))[0]
    centres = spread * rng.standard_normal((k, latent)) @ basis.T + offset
    classes = rng.integers(0, k, n)
    return centres[classes] + noise * rng.standard_normal((n, d)), np.eye(k)[classes]


def low_variance_labels(seed, n=600):
    """4 classes told apart only by 2 low-variance dimensions, next to 4 high-variance noise dimensions."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 4, n)
    centres = 0.5 * np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]])
    noise = 3.0 * rng.standard_normal((n, 4))
    return np.hstack([noise, centres[classes] + 0.15 * rng.standard_normal((n, 2))]), np.eye(4)[classes]


def correlated_labels(seed, n=300, d=8, k=4):
    """Labels that features predict with different strengths, so the canonical correlations are distinct."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * np.linspace(1.0, 3.0, d) + 2.0
    scores = x[:, :k] * np.array([3.0, 1.5, 0.8, 0.3]) + rng.standard_normal((n, k))
    return x, np.eye(k)[np.argmax(scores, axis=1)]


def train_map(model, x, y, n_train=500):
    if model.supervised:
        model.fit(x[:n_train], y[:n_train])
    else:
        model.fit(x[:n_train])
    return CalcTopMap(model.encode(x[:n_train]), model.encode(x[n_train:]), y[:n_train], y[n_train:], n_train)


# ----------------------------------------------------------------------------------------------- re-derivations
def signs_fixed(directions):
    """The package's documented sign convention: a column's largest-magnitude entry is positive."""
    out = directions.copy()
    for j in range(out.shape[1]):
        if out[np.argmax(np.abs(out[:, j])), j] < 0:
            out[:, j] = -out[:, j]
    return out


def reference_pca(x, k):
    centred = x - x.mean(axis=0)
    return signs_fixed(np.linalg.svd(centred, full_matrices=False)[2][:k].T)


def reference_itq_rotation(v, n_iter, seed):
    """R maximising tr(R^T V^T B): with V^T B = U S W^T, R = U W^T; the start as ITQ.m; n_iter + 1 updates."""
    c = v.shape[1]
    r = np.linalg.svd(np.random.default_rng(seed).standard_normal((c, c)))[0]
    for _ in range(n_iter + 1):
        b = np.where(v @ r >= 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(v.T @ b)
        r = u @ wt
    return r


def reference_sh_values(x_train, x, bits):
    """Weiss et al.'s eigenfunctions, enumerated naively: every direction j and mode k <= bits, the `bits` lowest
    frequencies k pi / R_j, value cos(k pi (p_j - min_j) / R_j) (= sin(pi/2 + ...))."""
    pc = reference_pca(x_train, min(bits, x_train.shape[1]))
    mean = x_train.mean(axis=0)
    p_train, p = (x_train - mean) @ pc, (x - mean) @ pc
    low, ranges = p_train.min(axis=0), np.ptp(p_train, axis=0)
    candidates = sorted((k / ranges[j], j, k) for j in range(len(ranges)) for k in range(1, bits + 1))[:bits]
    return np.column_stack([np.cos(k * np.pi * (p[:, j] - low[j]) / ranges[j]) for _, j, k in candidates])


def reference_cca_projection(x, y, bits, reg=1e-4):
    """Ridge CCA by whitening both sides (inverse square roots by eigh) and an SVD of the whitened cross-covariance."""
    def inv_sqrt(c):
        w, v = np.linalg.eigh(c)
        return v @ np.diag(w ** -0.5) @ v.T

    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    n = len(x)
    wx = inv_sqrt(xc.T @ xc / (n - 1) + reg * np.eye(x.shape[1]))
    wy = inv_sqrt(yc.T @ yc / (n - 1) + reg * np.eye(y.shape[1]))
    u, s, _ = np.linalg.svd(wx @ (xc.T @ yc / (n - 1)) @ wy)
    return signs_fixed(wx @ u[:, :bits]) * s[:bits]


def assert_close(actual, expected, rel=1e-9):
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rel * scale)


# ----------------------------------------------------------------------------------------------- LSH
def test_lsh_is_the_sign_of_centred_gaussian_projections():
    x, _ = clusters(0, n=200, d=16)
    model = LSH(12, seed=3).fit(x)
    w = np.random.default_rng(3).standard_normal((16, 12))
    np.testing.assert_array_equal(model.projection, w)
    assert_close(model.project(x), (x - x.mean(axis=0)) @ w)
    np.testing.assert_array_equal(model.encode(x), np.where((x - x.mean(axis=0)) @ w >= 0, 1, -1))


def test_lsh_codes_depend_on_the_seed_alone():
    x, _ = clusters(1, n=200, d=16)
    codes = [LSH(16, seed=s).fit(x).encode(x) for s in (5, 5, 6)]
    np.testing.assert_array_equal(codes[0], codes[1])
    assert np.mean(codes[0] != codes[2]) > 0.2


# ----------------------------------------------------------------------------------------------- SH
def test_sh_modes_are_the_lowest_frequencies_in_order():
    # frequencies k pi / R: 0.4 pi k along a side of 2.5, pi k along a side of 1
    np.testing.assert_array_equal(lowest_modes(np.array([2.5, 1.0]), 4), [[1, 0], [2, 0], [0, 1], [3, 0]])
    # a tie (2 pi / 2 = pi / 1) keeps trainSH.m's enumeration order: direction 0's modes first
    np.testing.assert_array_equal(lowest_modes(np.array([2.0, 1.0]), 3), [[1, 0], [2, 0], [0, 1]])
    np.testing.assert_array_equal(lowest_modes(np.array([7.0]), 4), [[1], [2], [3], [4]])


def crossings(model, start, stop):
    """Where each bit flips along the segment start -> stop (sampled on 4001 points): {bit: positions in [0, 1]}."""
    t = np.linspace(0.0, 1.0, 4001)
    codes = model.encode(start + t[:, None] * (stop - start))
    flips = {}
    for bit in range(codes.shape[1]):
        where = np.nonzero(np.diff(codes[:, bit]))[0]
        flips[bit] = (t[where] + t[where + 1]) / 2
    return flips


def test_sh_one_dimension_bits_flip_where_the_eigenfunctions_cross_zero():
    x = np.random.default_rng(2).uniform(0.0, 10.0, size=(400, 1))
    model = SH(4).fit(x)
    np.testing.assert_array_equal(model.modes, [[1], [2], [3], [4]])
    low, high = x.min(), x.max()
    flips = crossings(model, np.array([low]), np.array([high]))
    for bit, k in enumerate((1, 2, 3, 4)):
        # cos(k pi u) on u in [0, 1] is +1 at the box's low end and crosses zero at u = (m + 1/2) / k
        np.testing.assert_allclose(flips[bit], (np.arange(k) + 0.5) / k, atol=1e-3)
    assert np.all(model.encode(np.array([[low + 0.01]])) == 1)


def test_sh_rectangle_picks_modes_across_directions():
    # a regular grid on [0, 2.5] x [0, 1]: diagonal covariance, so the PCA axes are the grid's axes, and its box
    gx, gy = np.meshgrid(np.linspace(0.0, 2.5, 51), np.linspace(0.0, 1.0, 21))
    x = np.column_stack([gx.ravel(), gy.ravel()]) + 7.0
    model = SH(4).fit(x)
    np.testing.assert_allclose(np.abs(model.pc), np.eye(2), atol=1e-12)
    np.testing.assert_allclose(model.mx - model.mn, [2.5, 1.0], atol=1e-12)
    np.testing.assert_array_equal(model.modes, [[1, 0], [2, 0], [0, 1], [3, 0]])
    corner, middle = np.array([7.0, 7.0]), np.array([0.0, 0.5])
    along_x = crossings(model, corner + middle, corner + middle + [2.5, 0.0])
    along_y = crossings(model, corner + [1.0, 0.0], corner + [1.0, 1.0])
    for bit, k in ((0, 1), (1, 2), (3, 3)):
        np.testing.assert_allclose(along_x[bit], (np.arange(k) + 0.5) / k, atol=1e-3)
        assert along_y[bit].size == 0  # a mode along x is constant along y
    np.testing.assert_allclose(along_y[2], [0.5], atol=1e-3)
    assert along_x[2].size == 0


@pytest.mark.parametrize("bits", [3, 7, 12])  # fewer, as many and more bits than the 7 dimensions
def test_sh_matches_a_naive_reimplementation(bits):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 7)) * np.array([4.0, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5]) + 3.0
    train, test = x[:250], x[250:]
    model = SH(bits).fit(train)
    for data in (train, test):
        expected = reference_sh_values(train, data, bits)
        assert_close(model.project(data), expected)
        np.testing.assert_array_equal(model.encode(data), np.where(expected >= 0, 1, -1))


# ----------------------------------------------------------------------------------------------- ITQ
def test_itq_quantisation_loss_never_increases():
    x, _ = clusters(5, n=400, d=32)
    model = ITQ(8, seed=1).fit(x)
    history = np.array(model.history)
    assert len(history) == model.params["n_iter"] + 2  # the start, then ITQ.m's n_iter + 1 updates
    assert np.all(np.diff(history) <= 1e-12 * history[0])  # round-off of sums of ~n * bits unit-size terms
    assert history[-1] < 0.95 * history[0]  # and it does decrease (by 7.5% here)
    v = (x - model.mean) @ model.pc
    final = np.sum((np.where(v @ model.rotation >= 0, 1, -1) - v @ model.rotation) ** 2)
    assert final <= history[-1] * (1 + 1e-12)  # the loss recorded last is at the stored rotation


def test_itq_rotation_is_orthogonal():
    x, _ = clusters(6, n=300, d=32)
    rotation = ITQ(10, seed=2).fit(x).rotation
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(10), atol=1e-12)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(10), atol=1e-12)


def test_itq_beats_lsh_on_clusters():
    x, y = clusters(0)
    itq, lsh = train_map(ITQ(4, seed=0), x, y), train_map(LSH(4, seed=0), x, y)
    assert itq > lsh + 0.2, (itq, lsh)


@pytest.mark.parametrize("n_iter", [3, 50])  # 3: far from converged, so a miscounted loop shows
def test_itq_matches_a_reimplementation(n_iter):
    x, _ = clusters(7, n=300, d=24)
    train, test = x[:250], x[250:]
    model = ITQ(6, seed=9, n_iter=n_iter).fit(train)
    pc = reference_pca(train, 6)
    rotation = reference_itq_rotation((train - train.mean(axis=0)) @ pc, n_iter, seed=9)
    assert_close(model.rotation, rotation)
    for data in (train, test):
        expected = (data - train.mean(axis=0)) @ pc @ rotation
        assert_close(model.project(data), expected)
        np.testing.assert_array_equal(model.encode(data), np.where(expected >= 0, 1, -1))


# ----------------------------------------------------------------------------------------------- ITQ-CCA
def test_itq_cca_finds_label_directions_that_pca_misses():
    x, y = low_variance_labels(0)
    cca, itq = train_map(ITQCCA(2, seed=0), x, y), train_map(ITQ(2, seed=0), x, y)
    assert cca > 0.9 and cca > itq + 0.4, (cca, itq)


def test_itq_cca_matches_a_reimplementation():
    x, y = correlated_labels(0)
    train, test, y_train = x[:250], x[250:], y[:250]
    model = ITQCCA(3, seed=4).fit(train, y_train)  # 3 = the label rank (4 classes, centred)
    projection = reference_cca_projection(train, y_train, 3)
    assert_close(model.projection, projection)
    rotation = reference_itq_rotation((train - train.mean(axis=0)) @ projection, 50, seed=4)
    for data in (train, test):
        expected = (data - train.mean(axis=0)) @ projection @ rotation
        assert_close(model.project(data), expected)
        np.testing.assert_array_equal(model.encode(data), np.where(expected >= 0, 1, -1))


def test_itq_cca_uses_itqs_rotation_loop():
    assert itq_cca_module.itq_rotation is itq_module.itq_rotation


# ----------------------------------------------------------------------------------------------- all methods
METHODS = [LSH, SH, ITQ, ITQCCA]


def fitted(cls, bits=6, seed=0):
    x, y = clusters(8, n=240, d=20)
    return cls(bits, seed=seed).fit(x, y if cls.supervised else None), x


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_encode_gives_float32_plus_minus_one(cls):
    model, x = fitted(cls)
    codes = model.encode(x[:50])
    assert codes.dtype == np.float32 and codes.shape == (50, 6)
    assert set(np.unique(codes)) == {-1.0, 1.0}
    np.testing.assert_array_equal(codes, np.where(model.project(x[:50]) >= 0, 1, -1))


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_state_round_trip_gives_the_same_codes(cls):
    model, x = fitted(cls, seed=1)
    buffer = io.BytesIO()
    np.savez(buffer, **model.state_dict())
    buffer.seek(0)
    with np.load(buffer) as saved:
        fresh = cls(6, seed=2).set_state_dict(dict(saved))  # another seed: the codes come from the state alone
    np.testing.assert_array_equal(fresh.encode(x), model.encode(x))


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_bad_features_raise_usage_errors(cls):
    model, x = fitted(cls)
    labels = np.eye(3)[np.arange(len(x)) % 3]
    bad = x.copy()
    bad[3, 4] = np.nan
    with pytest.raises(UsageError, match="finite"):
        cls(6).fit(bad, labels)
    with pytest.raises(UsageError, match="NaN"):
        model.encode(bad)
    with pytest.raises(UsageError, match=r"\(n, 20\)"):
        model.encode(x[:, :5])
    with pytest.raises(UsageError, match="not fitted"):
        cls(6).encode(x)
    with pytest.raises(UsageError, match="unknown parameter.*bogus"):
        cls(6, bogus=1)


def test_bad_parameters_and_labels_raise_usage_errors():
    x, y = clusters(9, n=100, d=10)
    with pytest.raises(UsageError, match="n_iter"):
        ITQ(4, n_iter=-1)
    with pytest.raises(UsageError, match="n_iter"):
        ITQCCA(4, n_iter=2.5)
    with pytest.raises(UsageError, match="reg"):
        ITQCCA(4, reg=0)
    with pytest.raises(UsageError, match="at most 10"):
        ITQ(12).fit(x)
    with pytest.raises(UsageError, match="at most 10"):
        ITQCCA(12).fit(x, y)
    with pytest.raises(UsageError, match="labels"):
        ITQCCA(4).fit(x)
    with pytest.raises(UsageError, match="labels must be"):
        ITQCCA(4).fit(x, y[:-1])
    with pytest.raises(UsageError, match="labels must be"):
        ITQCCA(4).fit(x, y.argmax(axis=1))
    bad = y.copy()
    bad[0, 0] = np.nan
    with pytest.raises(UsageError, match="labels contain NaN"):
        ITQCCA(4).fit(x, bad)


def test_principal_directions_with_fewer_samples_than_dimensions_are_the_covariances():
    """The SVD path (n < d, the toy set's 1,000 images of 4,096-d fc7) gives the covariance's top eigenvectors."""
    from utils.shallow.itq import fix_signs, principal_directions
    rng = np.random.default_rng(5)
    data = rng.standard_normal((30, 80)) * np.linspace(3.0, 0.1, 80)  # distinct variances: a unique order
    centred = data - data.mean(0)
    _, vectors = np.linalg.eigh(centred.T @ centred / 29)
    want = fix_signs(vectors[:, ::-1][:, :6])
    np.testing.assert_allclose(principal_directions(centred, 6), want, atol=1e-9)
