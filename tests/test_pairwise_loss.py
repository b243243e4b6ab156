"""The paper recipe's PairwiseLoss (utils/losses/pairwise_loss.py) against the NumPy per-pair reference
(tests/pairwise_reference.py; docs/protocol.md#paper-recipe): value and the layer's own gradient, each branch, and the
gathered pairs of several ranks simulated in one process (two real processes: tests/test_pairwise_distributed.py)."""
import numpy as np
import paddle
import pytest

from pairwise_reference import caffe_pairwise_loss, pairwise_batch
from utils.losses.pairwise_loss import PairwiseLoss
from utils.runtime.errors import UsageError

RTOL = 1e-6


def loss_and_grad(criterion, u, y, dtype="float64"):
    codes = paddle.to_tensor(u.astype(dtype), stop_gradient=False)
    loss = criterion(codes, paddle.to_tensor(y.astype(dtype)))
    loss.backward()
    return float(loss), codes.grad.numpy()


def check_against_reference(u, y, **settings):
    half = len(u) // 2
    got_loss, got_grad = loss_and_grad(PairwiseLoss(**settings), u, y)
    ref = dict(settings)
    ref["continuous"] = ref.pop("continuous_similarity", True)
    ref["alpha_on_first_entries"] = ref.pop("alpha_in_gradient", "first_entries") == "first_entries"
    ref["cosine_target"] = ref.pop("cosine_similarity", False)
    want_loss, grad1, grad2 = caffe_pairwise_loss(u[:half], y[:half], u[half:], y[half:], **ref)
    np.testing.assert_allclose(got_loss, want_loss, rtol=RTOL)
    np.testing.assert_allclose(got_grad, np.concatenate([grad1, grad2]), rtol=RTOL, atol=1e-12)
    return got_loss, got_grad


@pytest.mark.parametrize("continuous", [True, False])
def test_hashnet_plus_c_takes_the_labels_cosine_as_the_pairs_similarity(continuous):
    """HashNet+C in the paper recipe (docs/methods.md#hashnet-variants): the layer's loss and gradient with s the
    cosine of the two label vectors; it differs from the 0/1 layer wherever a similar pair's labels are not equal."""
    u, y = pairwise_batch(seed=11)
    loss, grad = check_against_reference(u, y, sigmoid_param=2.0, class_num=5.0, continuous_similarity=continuous,
                                         cosine_similarity=True)
    binary_loss, binary_grad = loss_and_grad(PairwiseLoss(2.0, 5.0, continuous_similarity=continuous), u, y)
    assert abs(loss - binary_loss) > 1e-3 and np.abs(grad - binary_grad).max() > 1e-3


@pytest.mark.parametrize("class_num", [1.0, 5.0, 100.0])
@pytest.mark.parametrize("continuous", [True, False])
def test_value_and_gradient_match_the_layer(class_num, continuous):
    u, y = pairwise_batch(seed=int(class_num) + continuous)
    check_against_reference(u, y, sigmoid_param=10 / 5, class_num=class_num, continuous_similarity=continuous)


def test_class_num_weights_similar_pairs_in_value_and_count():
    u, y = pairwise_batch(seed=3)
    one, _ = check_against_reference(u, y, sigmoid_param=0.7, class_num=1.0)
    five, _ = check_against_reference(u, y, sigmoid_param=0.7, class_num=5.0)
    assert abs(one - five) > 1e-3  # the weighting changes the value, so the comparison above means something


def test_threshold_branch_with_a_large_sigmoid_param():
    u, y = pairwise_batch(seed=4)
    p = 8.0 * u[:6] @ u[6:].T
    similar = y[:6] @ y[6:].T > 0
    assert (p >= 15).sum() >= 3 and ((p >= 15) & similar).any() and ((p >= 15) & ~similar).any()
    check_against_reference(u, y, sigmoid_param=8.0, l_threshold=15.0)
    # from 15 on, p (1 - s) and log(1 + e^p) - s p differ by less than e^-15: a lower threshold shows the branch
    assert ((p >= 1) & (p < 15)).sum() >= 5
    with_branch, _ = check_against_reference(u, y, sigmoid_param=8.0, l_threshold=1.0)
    without, _ = check_against_reference(u, y, sigmoid_param=8.0, l_threshold=-1.0)
    assert abs(with_branch - without) > 1e-3     # 1000 x the tolerance of the comparisons
    # the published setting never reaches it: sigmoid_param 10 / bits and |u| <= 1 give |p| <= 10
    assert np.abs(10 / 5 * u[:6] @ u[6:].T).max() <= 10


def test_unknown_and_zero_labels():
    u, y = pairwise_batch(seed=5)
    product = y[:6] @ y[6:].T
    assert (product < 0).any() and (product >= 4).any()      # both kinds of unknown pair
    _, grad = check_against_reference(u, y, sigmoid_param=2.0)
    # row 3 (all ones) meets the all-ones row 9 as an unknown pair and every other row as a similar one: the layer's
    # rule, not a sensible one; a batch of nothing but unknown pairs has loss 0 and gradient 0 (the count is 1)
    y_unknown = np.full_like(y, -1.0)
    y_unknown[6:] = 1.0
    loss, grad = loss_and_grad(PairwiseLoss(2.0), u, y_unknown)
    assert loss == 0.0 and not grad.any()


def test_sigmoid_param_on_the_first_entries_only():
    """The layer scales only the first `half` gradient entries (row-major) by sigmoid_param; "all" scales each."""
    u, y = pairwise_batch(seed=6, half=6, bits=5)
    _, first = check_against_reference(u, y, sigmoid_param=0.4)
    _, every = check_against_reference(u, y, sigmoid_param=0.4, alpha_in_gradient="all")
    factor = np.r_[np.ones(6), np.full(6 * 5 - 6, 0.4)]   # "all" over "first_entries", entry by entry
    for part in (slice(0, 6), slice(6, 12)):
        assert np.abs(first[part]).min() > 0
        np.testing.assert_allclose(every[part].reshape(-1), factor * first[part].reshape(-1), rtol=1e-12)


def test_float32_as_the_engine_runs_it():
    u, y = pairwise_batch(seed=7)
    got_loss, got_grad = loss_and_grad(PairwiseLoss(2.0, class_num=5.0), u, y, dtype="float32")
    want_loss, grad1, grad2 = caffe_pairwise_loss(u[:6], y[:6], u[6:], y[6:], 2.0, class_num=5.0)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    want = np.concatenate([grad1, grad2])
    np.testing.assert_allclose(got_grad, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


class FakeGather:
    """all_gather_cat of a rank in a simulated world: the k-th call returns the k-th tensors of every rank, in rank
    order, and checks that the caller passed its own."""

    def __init__(self, sequences, rank):
        self.sequences, self.rank, self.calls = sequences, rank, 0

    def __call__(self, tensor):
        parts = [sequence[self.calls] for sequence in self.sequences]
        np.testing.assert_array_equal(tensor.numpy(), parts[self.rank])
        self.calls += 1
        return paddle.to_tensor(np.concatenate(parts))


@pytest.mark.parametrize("world_size", [2, 3])
def test_shards_of_several_ranks_give_the_one_process_loss_and_rows(world_size):
    half, bits = 6, 5
    u, y = pairwise_batch(seed=8, half=half, bits=bits)
    one_loss, one_grad = loss_and_grad(PairwiseLoss(2.0, class_num=5.0), u, y)
    rows = half // world_size

    def shard(a, r):  # rank r's part of the first half, then of the second
        return np.concatenate([a[r * rows:(r + 1) * rows], a[half + r * rows:half + (r + 1) * rows]])

    # the order the loss gathers in: labels of each half, then codes of each half
    sequences = [[y[r * rows:(r + 1) * rows], y[half + r * rows:half + (r + 1) * rows],
                  u[r * rows:(r + 1) * rows], u[half + r * rows:half + (r + 1) * rows]] for r in range(world_size)]
    rank_grads = []
    for rank in range(world_size):
        criterion = PairwiseLoss(2.0, class_num=5.0)
        gather = FakeGather(sequences, rank)
        criterion.distribute(gather, rank, world_size)
        loss, grad = loss_and_grad(criterion, shard(u, rank), shard(y, rank))
        assert gather.calls == 4
        np.testing.assert_allclose(loss, one_loss, rtol=1e-12)
        # each rank's rows of the one-process gradient, times world_size: DataParallel's mean then gives the sum
        np.testing.assert_allclose(grad, world_size * shard(one_grad, rank), rtol=1e-12, atol=1e-15)
        rank_grads.append(grad)
    np.testing.assert_allclose(sum(g.sum(axis=0) for g in rank_grads) / world_size, one_grad.sum(axis=0),
                               rtol=1e-12)


def test_errors_name_the_setting():
    with pytest.raises(UsageError, match=r"class_num must be > 0 .* got 0"):
        PairwiseLoss(0.2, class_num=0)
    with pytest.raises(UsageError, match=r"alpha_in_gradient must be 'first_entries' or 'all', got 'some'"):
        PairwiseLoss(0.2, alpha_in_gradient="some")
    with pytest.raises(ValueError, match=r"codes of 5 rows with labels of 5 rows; expected the same even number"):
        PairwiseLoss(0.2)(paddle.zeros([5, 3]), paddle.zeros([5, 2]))
    criterion = PairwiseLoss(0.2)
    criterion.distribute(lambda t: paddle.concat([t, t, t]), 0, 2)
    with pytest.raises(ValueError, match=r"gathered 3 rows from a shard of 1 on 2 ranks"):
        criterion(paddle.zeros([2, 3]), paddle.zeros([2, 2]))
