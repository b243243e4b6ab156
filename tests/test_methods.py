"""The methods of the comparison (docs/methods.md) as the engine runs them: the ablation's HashNet variants in both
recipes (their losses against NumPy re-derivations, the flags each sets), --method in config.json and what a
shallow baseline's run writes."""
import argparse
import json

import numpy as np
import paddle
import pytest

from conftest import run_cli, toy_args
from utils.losses.hashnet_loss import HashNetLoss
from utils.runtime.errors import UsageError


def numpy_hashnet_loss(u_batch, y_batch, bank_u, bank_y, alpha, weighted, cosine):
    """HashNetLoss's value from its equations (docs/protocol.md#loss, docs/methods.md#hashnet-variants), in float64,
    one pair at a time: the batch's codes tanh(o) against the bank (which already holds the batch)."""
    total_pos = total_neg = count_pos = count_neg = 0.0
    pairs = []
    for u, y in zip(u_batch, y_batch):
        for v, z in zip(bank_u, bank_y):
            overlap = float(y @ z)
            s = overlap / np.sqrt(float(y @ y) * float(z @ z)) if cosine and overlap > 0 else float(overlap > 0)
            theta = alpha * float(u @ v)
            nll = np.log1p(np.exp(theta)) - s * theta
            pairs.append(nll)
            if overlap > 0:
                total_pos, count_pos = total_pos + nll, count_pos + 1
            else:
                total_neg, count_neg = total_neg + nll, count_neg + 1
    if not weighted:
        return np.mean(pairs)
    return total_pos / max(count_pos, 1) + total_neg / max(count_neg, 1)


@pytest.mark.parametrize("weighted,cosine", [(True, False), (False, False), (True, True), (False, True)])
def test_the_seed_loss_of_each_variant_matches_its_equations(weighted, cosine):
    rng = np.random.default_rng(3)
    n, bits, classes = 6, 8, 4
    outputs = rng.standard_normal((n, bits))
    labels = (rng.random((n, classes)) < 0.5).astype(np.float64)
    labels[0] = [1, 1, 1, 0]  # overlaps of several sizes, so the cosine is not 0/1
    criterion = HashNetLoss(bits, n, alpha=0.3, num_class=classes, weighted=weighted, continuous_similarity=cosine)
    outputs = outputs.astype(np.float32).astype(np.float64)  # the engine's float32 outputs, exactly
    o = paddle.to_tensor(outputs, dtype="float32", stop_gradient=False)
    loss = criterion(o, paddle.to_tensor(labels, dtype="float32"), paddle.arange(n))
    loss.backward()
    u = np.tanh(outputs)
    want = numpy_hashnet_loss(u, labels, u, labels, 0.3, weighted, cosine)
    # float32 throughout (rounding 6e-8 per operation) over sums of 36 terms of order 1: 1e-5 relative holds with a
    # margin of ~10x and fails at any wrong term or weight (a weight off by one pair changes the loss by ~3%)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    # the gradient through the batch's codes only (the bank is a constant copy): central differences of the same
    # equations in float64 (their own error ~1e-9); float32 rounding bounds the agreement at ~1e-6 of the largest
    step, numeric = 1e-6, np.zeros_like(outputs)
    for i in range(n):
        for k in range(bits):
            shifted = []
            for sign in (1, -1):
                moved = outputs.copy()
                moved[i, k] += sign * step
                shifted.append(numpy_hashnet_loss(np.tanh(moved), labels, u, labels, 0.3, weighted, cosine))
            numeric[i, k] = (shifted[0] - shifted[1]) / (2 * step)
    np.testing.assert_allclose(o.grad.numpy(), numeric, rtol=0, atol=1e-5 * np.abs(numeric).max())


def paper_args(*flags):
    from utils.train.options import parse_args
    return parse_args(["--recipe", "paper", "--dataset", "toy", "--bit", "16", "--output-dir", "/nonexistent",
                       *flags])


def test_each_variant_sets_its_flags_in_the_paper_recipe():
    base = paper_args()
    assert (base.method, base.class_num, base.continuous_similarity, base.scale_gamma) == ("hashnet", 1.0, True, 0.005)
    w = paper_args("--method", "hashnet-w", "--dataset", "nuswide_81")
    assert (w.class_num, w.continuous_similarity, w.scale_gamma) == (1.0, False, 0.005)
    sgn = paper_args("--method", "hashnet-sgn")
    assert (sgn.class_num, sgn.continuous_similarity, sgn.scale_gamma) == (1.0, True, 0.0)
    with pytest.raises(UsageError, match=r"--method hashnet-w sets --class-num 1.0; got 5.0"):
        paper_args("--method", "hashnet-w", "--class-num", "5")
    with pytest.raises(UsageError, match=r"--method hashnet-sgn sets --scale-gamma 0.0; got 0.01"):
        paper_args("--method", "hashnet-sgn", "--scale-gamma", "0.01")


def test_hashnet_sgn_keeps_the_scale_at_one_in_both_recipes():
    from utils.losses.scale_tanh import ScaleTanH
    from utils.train.recipes import recipe_for
    seed = argparse.Namespace(recipe="seed", method="hashnet-sgn", continuation_step=20, bit=16, alpha=0.1, seed=0)
    criterion = argparse.Namespace(scale=None)
    recipe_for(seed).start_round(criterion, 61)
    assert criterion.scale == 1.0
    seed.method = "hashnet"
    recipe_for(seed).start_round(criterion, 61)
    assert criterion.scale == 2.0  # sqrt(floor(60 / 20) + 1)
    sgn = ScaleTanH(gamma=paper_args("--method", "hashnet-sgn").scale_gamma, step_size=2)
    assert {sgn.step() for _ in range(10)} == {1.0}


def test_a_shallow_method_cannot_be_evaluated_with_eval():
    with pytest.raises(UsageError, match="--method itq is fitted and evaluated in one run"):
        paper_args("--method", "itq", "--eval", "--pretrained", "x")


@pytest.fixture(scope="module")
def shallow_runs(small_toy, tmp_path_factory):
    """ITQ (unsupervised) and KSH (supervised) fitted on the small toy set's fc7, into one output folder: the second
    run takes the features from the cache the first wrote."""
    out = tmp_path_factory.mktemp("shallow")
    logs = {}
    for method in ("itq", "ksh"):
        result = run_cli(["main_single_gpu.py", *toy_args(small_toy, out / method, "--method", method, "--bit", "16")])
        logs[method] = result.stdout + result.stderr
    return out, logs


def test_a_shallow_run_writes_what_the_report_reads(shallow_runs):
    out, logs = shallow_runs
    for method in ("itq", "ksh"):
        run = out / method
        config = json.loads((run / "config.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        assert config["method"] == metrics["method"] == method
        final = metrics["final"]
        assert (final["num_query"], final["num_database"], final["num_train"], final["bits"]) == (40, 200, 128, 16)
        assert metrics["train_time"] > 0 and metrics["best"] is None
    assert "fc7 features cached in" in logs["itq"] and "fc7 features from the cache" in logs["ksh"]
    assert len(list((out / "features").iterdir())) == 1  # one backbone, one set of lists: one cache


def test_a_shallow_runs_saved_functions_give_its_codes_and_its_map(shallow_runs):
    """shallow_{bit}.npz re-made into the method encodes the cached query features into the codes the run measured:
    their mAP against the database's codes is the run's."""
    from utils.hashing.codes import binarize
    from utils.hashing.metrics import CalcTopMap
    from utils.shallow import SHALLOW_METHODS
    out, _ = shallow_runs
    cache = next((out / "features").iterdir())
    features = {split: np.load(cache / f"{split}.npz") for split in ("test", "database")}
    for method in ("itq", "ksh"):
        with np.load(out / method / "shallow_16.npz") as state:
            fitted = SHALLOW_METHODS[method](16).set_state_dict(dict(state))
        codes = {split: fitted.encode(features[split]["fc7"]) for split in features}
        with np.load(out / method / "query_outputs_16.npz") as saved:
            np.testing.assert_array_equal(codes["test"], binarize(saved["outputs"]))
            np.testing.assert_array_equal(saved["labels"], features["test"]["labels"])
        got = CalcTopMap(codes["database"], codes["test"], features["database"]["labels"], features["test"]["labels"],
                         200)
        want = json.loads((out / method / "metrics.json").read_text())["final"]["map"]
        assert got == pytest.approx(want, abs=1e-12)


def test_a_shallow_runs_random_backbone_is_the_trained_runs():
    """On the toy set (no ImageNet weights) the shallow baselines' fc7 come from the random backbone a HashNet run of
    the same seed starts from: shallow_run builds the data before the network, run_train after, and neither draws."""
    import logging

    from utils.runtime import dist
    from utils.train.build import build_data, build_model
    from utils.train.options import parse_args
    cfg = parse_args(["--dataset", "toy", "--bit", "16", "--num-workers", "0", "--output-dir", "/nonexistent"])
    log = logging.getLogger("test")
    dist.seed_everything(cfg.seed)
    trained = build_model(cfg, log)
    build_data(cfg, log)
    dist.seed_everything(cfg.seed)
    build_data(cfg, log)
    shallow = build_model(cfg, log)
    for name, value in trained.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), shallow.state_dict()[name].numpy(), err_msg=name)


def test_a_deep_baseline_trains_only_with_the_seed_protocol():
    with pytest.raises(UsageError, match=r"--method dhn trains with the seed recipe's protocol .* drop --recipe paper"):
        paper_args("--method", "dhn")


@pytest.fixture(scope="module")
def deep_runs(small_toy, tmp_path_factory):
    """Each deep baseline trained for 2 epochs on the small toy set (frozen random backbone, as the toy preset)."""
    out = tmp_path_factory.mktemp("deep")
    for method in ("dhn", "dnnh", "cnnh"):
        run_cli(["main_single_gpu.py", *toy_args(small_toy, out / method, "--method", method, "--bit", "16",
                                                 "--epochs", "2", "--eval-every", "2")])
    return out


@pytest.mark.parametrize("method", ["dhn", "dnnh", "cnnh"])
def test_each_deep_baseline_trains_its_hash_layer(deep_runs, method):
    from conftest import assert_training_moved
    run = deep_runs / method
    assert_training_moved(run)
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert config["method"] == metrics["method"] == method and metrics["scale"] == 1.0  # no continuation
    rows = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    assert [row["scale"] for row in rows] == [1.0, 1.0]
    with np.load(run / "query_outputs_16.npz") as saved:
        assert saved["outputs"].shape == (40, 16) and saved["labels"].shape[0] == 40


def test_a_dnnh_run_is_loaded_with_its_own_hash_layer_by_predict(deep_runs, small_toy):
    """predict.py takes --method from the run folder (utils/config/run_folder.NETWORK_KEYS): DNNH's checkpoint holds
    the divide-and-encode layer, which a linear hash layer could not load."""
    from utils.train.checkpoint import load_model_state
    state = load_model_state(deep_runs / "dnnh" / "model_best_16.pdparams")
    assert state["hash_layer.weight"].shape == [4096]  # one weight per fc7 unit: each feeds one bit
    query = small_toy["data_path"] / (small_toy["list_dir"] / "test.txt").read_text().split()[0]
    result = run_cli(["predict.py", "--pretrained", str(deep_runs / "dnnh"), "--img", str(query), "--json",
                      "--num-results", "3", "--device", "cpu"])
    assert len(json.loads(result.stdout.splitlines()[-1])["results"]) == 3
