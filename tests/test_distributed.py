"""Two CPU processes under paddle.distributed.launch (gloo) against one process, on the small toy lists."""
import json
import shutil

import numpy as np
import paddle
import pytest

import tolerances
from conftest import assert_training_moved, run_cli, toy_args
from models import HashNet
from utils.datasets.image_list import build_transform
from utils.retrieval.search import load_batch
from utils.train.checkpoint import load_model_state

# evaluated every epoch, the lr halved after epoch 1: a resume at epoch 1 crosses an lr step. Two cached views of the
# frozen backbone (utils/train/frozen.py): each epoch trains on the training crops an image-path epoch would, so the two
# processes also cover the views; without them (centre crops) this 64-bit run's epoch 2 is no new best, and the resume
# test needs one in the resumed part
EPOCHS = ["--epoch", "2", "--eval_epoch", "1", "--de_step", "1", "--frozen-views", "2"]


def launch(small_toy, run, *extra, nproc=2, env=None):
    args = toy_args(small_toy, run, *extra)
    if nproc == 1:
        return run_cli(["tests/dist_worker.py", *args], env=env)
    return run_cli(["-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc), "--log_dir",
                    run.parent / f"{run.name}_launch", "tests/dist_worker.py", *args], env=env)


@pytest.fixture(scope="module")
def runs(small_toy, tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    # same global batch: 2 x 16 against 1 x 32; the two-process run also leaves its folder as it was after epoch 1
    # (two_after_epoch1: what a run stopped there leaves), for the resume test
    launch(small_toy, base / "two", *EPOCHS, "--batch-size", "16", env={"SNAPSHOT_AFTER_EPOCH": "1"})
    launch(small_toy, base / "one", *EPOCHS, "--batch-size", "32", nproc=1)
    for run in ("two", "one"):
        assert_training_moved(base / run)
    return base


def load(run, rank):
    return np.load(run / f"rank{rank}.npz")


def test_every_rank_starts_from_the_network_one_process_draws(runs):
    """Rank 0 alone draws the random backbone (the others build theirs without drawing and take rank 0's): both ranks
    start from the same weights, those of the one-process run with the same seed."""
    start = [load(runs / "two", rank)["initial_sums"] for rank in (0, 1)] + [load(runs / "one", 0)["initial_sums"]]
    assert len(start[0]) >= 16 and (start[0] != 0).sum() > len(start[0]) // 3  # the draws, not a network of zeros
    np.testing.assert_array_equal(start[1], start[0])
    np.testing.assert_array_equal(start[2], start[0])


def test_each_training_index_seen_once_per_epoch_across_ranks(runs):
    r0, r1 = load(runs / "two", 0), load(runs / "two", 1)
    for epoch in (1, 2):
        a = r0["seen_index"][r0["seen_epoch"] == epoch]
        b = r1["seen_index"][r1["seen_epoch"] == epoch]
        assert len(a) == len(b) == 64
        assert not set(a) & set(b)
        np.testing.assert_array_equal(np.sort(np.concatenate([a, b])), np.arange(128))


def test_memory_banks_identical_on_both_ranks(runs):
    r0, r1 = load(runs / "two", 0), load(runs / "two", 1)
    np.testing.assert_array_equal(r0["bank_U"], r1["bank_U"])
    np.testing.assert_array_equal(r0["bank_Y"], r1["bank_Y"])
    assert (np.abs(r0["bank_U"]).sum(1) > 0).all()  # every item written, by whichever rank trained on it
    train_list = [line.split() for line in open(json.loads((runs / "two" / "config.json").read_text())["list_dir"]
                                                + "/train.txt")]
    np.testing.assert_array_equal(r0["bank_Y"], np.array([[float(v) for v in f[1:]] for f in train_list]))


def test_gathered_codes_equal_single_process_encoding(runs, small_toy, tmp_path):
    two = load(runs / "two", 0)
    np.testing.assert_array_equal(two["db_raw"], load(runs / "two", 1)["db_raw"])  # every rank has all of them
    # a single process encoding the same weights (rank 0's checkpoint), in dataset order
    single = tmp_path / "single"
    run_cli(["tests/dist_worker.py", *toy_args(small_toy, single, "--epoch", "1", "--batch-size", "32",
                                               "--pretrained", runs / "two" / "last_64.pdckpt", "--eval")])
    ref = np.load(single / "rank0.npz")
    assert two["db_raw"].shape == (200, 64)
    # batches of 16 on two ranks against 32 on one: float sums in another order (kernels are picked by batch shape),
    # so rounding only, bounded a priori for the checkpoint's network on the database images (tests/tolerances.py);
    # a sign nearer 0 than that bound is rounding's. A wrong order or a padding repeat differs by the outputs' size.
    config = json.loads((runs / "two" / "config.json").read_text())
    database = [small_toy["data_path"] / line.split()[0]
                for line in (small_toy["list_dir"] / "database.txt").read_text().splitlines()]
    with paddle.utils.unique_name.guard():
        model = HashNet(64, init="none")
    model.set_state_dict(load_model_state(runs / "two" / "last_64.pdckpt"))
    model.eval()
    tolerance = tolerances.apriori_output_tolerance(
        model, load_batch(database, build_transform(False, config["resize_size"], config["crop_size"])))
    tolerances.assert_outputs_agree(two["db_raw"], ref["db_raw"], tolerance, "two processes", all_codes=False)
    np.testing.assert_array_equal(two["db_labels"], ref["db_labels"])


def test_two_processes_match_one_with_the_same_global_batch(runs):
    two = json.loads((runs / "two" / "metrics.json").read_text())["final"]["map"]
    one = json.loads((runs / "one" / "metrics.json").read_text())["final"]["map"]
    assert abs(two - one) < 0.05, (two, one)


def test_resume_in_two_processes_continues_exactly(runs, small_toy, tmp_path):
    """The two-process run's folder after epoch 1, resumed in two processes, ends where the straight run ended."""
    run = tmp_path / "resumed"
    shutil.copytree(runs / "two_after_epoch1", run)
    after_one = paddle.load(str(run / "last_64.pdckpt"))
    assert after_one["epoch"] == 1 and [json.loads(line)["epoch"] for line in
                                        (run / "epochs.jsonl").read_text().splitlines()] == [1]
    launch(small_toy, run, *EPOCHS, "--batch-size", "16", "--resume", run / "last_64.pdckpt")
    assert_training_moved(run)
    resumed = paddle.load(str(run / "last_64.pdckpt"))
    straight = paddle.load(str(runs / "two" / "last_64.pdckpt"))
    assert not np.array_equal(resumed["model"]["hash_layer.weight"].numpy(),
                              after_one["model"]["hash_layer.weight"].numpy())  # epoch 2 trained
    for key, value in straight["model"].items():
        np.testing.assert_array_equal(resumed["model"][key].numpy(), value.numpy(), err_msg=key)
    np.testing.assert_array_equal(resumed["criterion"]["U"].numpy(), straight["criterion"]["U"].numpy())
    rows = [[json.loads(line) for line in (r / "epochs.jsonl").read_text().splitlines()] for r in (run, runs / "two")]
    assert [r["lr"] for r in rows[0]] == [r["lr"] for r in rows[1]] == pytest.approx([1e-3, 5e-4])  # 2e-3 x 16 x 2 / 64
    assert [r["map"] for r in rows[0]] == [r["map"] for r in rows[1]]
    # the resumed part holds a new best epoch, and it writes the same best checkpoint
    assert resumed["best"]["epoch"] == straight["best"]["epoch"] == 2
    best_resumed = load_model_state(run / "model_best_64.pdparams")
    for key, value in load_model_state(runs / "two" / "model_best_64.pdparams").items():
        np.testing.assert_array_equal(best_resumed[key].numpy(), value.numpy(), err_msg=key)


def test_a_whole_resnet18_in_two_processes_is_evaluated_as_its_checkpoint(small_toy, tmp_path):
    """BatchNorm's running statistics are each process's own (no SyncBN): the engine gives every rank rank 0's after
    each epoch, so the database codes the run's evaluation kept (both ranks' shards) are the checkpoint's codes."""
    run = tmp_path / "resnet18"
    launch(small_toy, run, "--backbone", "resnet18", "--epoch", "1", "--bit", "16", "--crop-size", "32",
           "--resize-size", "36", "--train-scope", "all", "--standardize-features", "false", "--encoder", "dygraph",
           "--batch-size", "16", "--learning-rate", "0.01")
    # 4 steps: the BatchNorm scales (all 1 at the start, so of norm sqrt(channels)) move by ~1e-6 of their size; a
    # larger lr saturates the codes, which then hide the statistics this test is about
    assert_training_moved(run, min_change=1e-7)
    state = paddle.load(str(run / "last_16.pdckpt"))["model"]
    assert np.abs(state["bn1._mean"].numpy()).max() > 0  # the statistics followed the batches (they start at 0)
    kept = np.load(run / "retrieval" / "database_code_16.npy")
    recomputed = np.where(load(run, 0)["db_raw"] >= 0, 1, -1)  # the checkpoint's network on both ranks
    assert kept.shape == recomputed.shape == (200, 16)
    np.testing.assert_array_equal(kept, recomputed)
