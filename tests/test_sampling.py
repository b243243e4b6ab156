"""--sampling replicated (the seed's schedule, docs/protocol.md#seed-recipe) and sharded: batches, shuffle keys,
memory-bank writes, and two CPU processes under paddle.distributed.launch in the replicated mode (coverage, banks, rows,
exact resume)."""
import json
import math
import shutil

import numpy as np
import paddle
import pytest

from conftest import run_cli, toy_args
from utils.config.flags import SEED_MAX
from utils.datasets.sampling import TrainBatchSampler, TwoStreamBatchSampler, shuffle_key
from utils.losses.hashnet_loss import HashNetLoss
from utils.runtime import dist


class Items(paddle.io.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return index


def epoch_batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return [list(b) for b in sampler]


def test_replicated_and_sharded_are_the_same_with_one_process():
    items = Items(100)
    for epoch in (1, 2, 150):
        rep = epoch_batches(TrainBatchSampler(items, 16, seed=2000, sampling="replicated"), epoch)
        sha = epoch_batches(TrainBatchSampler(items, 16, seed=2000, sampling="sharded"), epoch)
        assert rep == sha
        assert len(rep) == math.ceil(100 / 16) and sorted(sum(rep, [])) == list(range(100))
    assert epoch_batches(TrainBatchSampler(items, 16, 2000, "sharded"), 1) != \
        epoch_batches(TrainBatchSampler(items, 16, 2000, "sharded"), 2)


def fake_rank(monkeypatch, rank, world=2):
    """What the launcher tells a rank; Paddle's rank helpers and samplers read it from the environment."""
    monkeypatch.setenv("PADDLE_TRAINER_ID", str(rank))
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", str(world))
    monkeypatch.setattr(dist, "get_rank", lambda: rank)  # paddle caches the rank of its first call


def test_replicated_rank_covers_everything_with_its_own_shuffle(monkeypatch):
    items = Items(1000)
    orders = {}
    for rank in (0, 1):
        fake_rank(monkeypatch, rank)
        batches = epoch_batches(TrainBatchSampler(items, 64, seed=0, sampling="replicated"), 1)
        assert len(batches) == 16  # the toy train set at 64 per process: the seed's 157 steps on COCO, scaled
        orders[rank] = sum(batches, [])
        assert sorted(orders[rank]) == list(range(1000))
    assert orders[0] != orders[1]


def test_sharded_ranks_split_one_pass(monkeypatch):
    parts = []
    for rank in (0, 1):
        fake_rank(monkeypatch, rank)
        batches = epoch_batches(TrainBatchSampler(Items(1000), 64, seed=0, sampling="sharded"), 1)
        assert len(batches) == 8
        parts.append(sum(batches, []))
    assert sorted(parts[0] + parts[1]) == list(range(1000))


def test_shuffle_key_takes_every_seed():
    keys = {shuffle_key(seed, epoch, stream) for seed in (0, 1, 42950, SEED_MAX) for epoch in (1, 150)
            for stream in (0, 1)}
    assert len(keys) == 16 and all(0 <= k < 2 ** 32 for k in keys)
    batches = epoch_batches(TrainBatchSampler(Items(10), 4, seed=SEED_MAX, sampling="replicated"), 150)
    assert sorted(sum(batches, [])) == list(range(10))


def test_unknown_sampling_is_refused():
    with pytest.raises(ValueError, match="--sampling must be one of replicated, sharded, got 'both'"):
        TrainBatchSampler(Items(10), 4, 0, "both")


def test_repeated_index_in_a_gathered_step_keeps_the_highest_rank():
    loss = HashNetLoss(bit=2, num_train=5, num_class=3)
    # rank 0 wrote items 1 and 3, rank 1 items 3 and 4, gathered in rank order
    u = paddle.to_tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]])
    y = paddle.to_tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    loss.write_bank(u, y, paddle.to_tensor([1, 3, 3, 4]))
    np.testing.assert_allclose(loss.U.numpy(), [[0, 0], [0.1, 0.2], [0, 0], [0.5, 0.6], [0.7, 0.8]])
    np.testing.assert_array_equal(loss.Y.numpy()[3], [0, 0, 1])


def two_stream_passes(seed, num_items=12, half=4, passes=3):
    """{stream: (passes, num_items) dataset indices} the paper recipe's sampler draws, read as the engine reads it
    (one block of whole iterations, each the first stream's half then the second's)."""
    iterations = passes * num_items // half
    sampler = TwoStreamBatchSampler(num_items, half, iterations, iterations_per_block=iterations, seed=seed)
    sampler.set_epoch(1)
    batches = np.array([[index for _, index in batch] for batch in sampler])
    return {stream: batches[:, stream * half:(stream + 1) * half].reshape(passes, num_items) for stream in (0, 1)}


def test_each_pass_of_a_two_stream_sampler_is_a_fresh_shuffle_fixed_by_the_seed():
    """A stream that re-read one permutation would give every pass the same order: the same pairs every pass of the
    paper recipe's pairwise loss. A fresh permutation per pass, the same ones for the same seed (exact resume)."""
    drawn, again, other = two_stream_passes(seed=7), two_stream_passes(seed=7), two_stream_passes(seed=8)
    for stream in (0, 1):
        passes = drawn[stream]
        assert all(sorted(order) == list(range(12)) for order in passes)  # each pass a permutation of the set
        assert len({tuple(order) for order in passes}) == 3, passes  # and no two passes alike
        np.testing.assert_array_equal(again[stream], passes)
        assert not np.array_equal(other[stream], passes)
    assert not np.array_equal(drawn[0], drawn[1])


# ------------------------------------------------------------------------------------- two processes, replicated
EPOCHS = ["--epoch", "2", "--eval_epoch", "1", "--batch-size", "16", "--sampling", "replicated", "--log_freq", "1"]


def launch(small_toy, run, *extra, env=None):
    return run_cli(["-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
                    run.parent / f"{run.name}_launch", "tests/dist_worker.py", *toy_args(small_toy, run, *extra)],
                   env=env)


@pytest.fixture(scope="module")
def replicated(small_toy, tmp_path_factory):
    """Two epochs in two processes; the folder as it was after epoch 1 is kept as two_after_epoch1 (what a run
    stopped there leaves), for the resume test."""
    run = tmp_path_factory.mktemp("replicated") / "two"
    launch(small_toy, run, *EPOCHS, env={"SNAPSHOT_AFTER_EPOCH": "1"})
    return run


def test_every_rank_reads_the_whole_set_each_epoch_in_its_own_order(replicated):
    r0, r1 = (np.load(replicated / f"rank{r}.npz") for r in (0, 1))
    for epoch in (1, 2):
        a, b = (r["seen_index"][r["seen_epoch"] == epoch] for r in (r0, r1))
        np.testing.assert_array_equal(np.sort(a), np.arange(128))
        np.testing.assert_array_equal(np.sort(b), np.arange(128))
        assert not np.array_equal(a, b)


def test_replicated_banks_identical_and_complete(replicated):
    r0, r1 = (np.load(replicated / f"rank{r}.npz") for r in (0, 1))
    np.testing.assert_array_equal(r0["bank_U"], r1["bank_U"])
    np.testing.assert_array_equal(r0["bank_Y"], r1["bank_Y"])
    assert (np.abs(r0["bank_U"]).sum(1) > 0).all()


def test_config_log_and_rows_say_sampling_and_steps(replicated):
    config = json.loads((replicated / "config.json").read_text())
    assert (config["sampling"], config["steps_per_epoch"], config["world_size"]) == ("replicated", 8, 2)
    rows = [json.loads(line) for line in (replicated / "epochs.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["sampling"], r["steps"], r["world_size"]) for r in rows] == \
        [(1, "replicated", 8, 2), (2, "replicated", 8, 2)]
    assert rows[0]["lr"] == pytest.approx(2e-3 * 16 * 2 / 64)  # toy base lr x batch x world / 64
    head = (replicated / "log_train_64.txt").read_text().splitlines()[:6]
    assert any("sampling replicated" in line and "8 steps per epoch" in line and "effective batch 32 (2 x 16)"
               in line for line in head), head
    log = (replicated / "log_train_64.txt").read_text()
    assert "Step[0008/0008]" in log and "Step[0009" not in log


def test_replicated_resume_in_two_processes_continues_exactly(replicated, small_toy, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(replicated.parent / "two_after_epoch1", run)
    after_one = paddle.load(str(run / "last_64.pdckpt"))
    assert after_one["epoch"] == 1
    after_one = after_one["model"]["hash_layer.weight"].numpy()
    launch(small_toy, run, *EPOCHS, "--resume", "auto")
    resumed = paddle.load(str(run / "last_64.pdckpt"))
    straight = paddle.load(str(replicated / "last_64.pdckpt"))
    assert not np.array_equal(resumed["model"]["hash_layer.weight"].numpy(), after_one)  # epoch 2 trained
    for key, value in straight["model"].items():
        np.testing.assert_array_equal(resumed["model"][key].numpy(), value.numpy(), err_msg=key)
    np.testing.assert_array_equal(resumed["criterion"]["U"].numpy(), straight["criterion"]["U"].numpy())
    np.testing.assert_array_equal(np.load(run / "rank1.npz")["bank_U"], np.load(replicated / "rank1.npz")["bank_U"])
