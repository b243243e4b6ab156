"""--recipe paper (docs/protocol.md#paper-recipe): its flags and presets, the two-stream batches, the warp resize."""
import numpy as np
import pytest
from PIL import Image

from utils.datasets.image_list import build_transform
from utils.datasets.sampling import TwoStreamBatchSampler
from utils.runtime.errors import UsageError
from utils.train.options import parse_args


def draws(sampler, block):
    sampler.set_epoch(block)
    return [list(batch) for batch in sampler]


def test_two_streams_are_independent_passes_over_the_set():
    sampler = TwoStreamBatchSampler(num_items=10, half=4, iterations=5, iterations_per_block=2, seed=7)
    batches = [batch for block in (1, 2, 3) for batch in draws(sampler, block)]
    assert [len(batch) for batch in batches] == [8] * 5  # blocks of 2, 2 and the last 1 iteration
    for stream in (0, 1):
        indices = [index for batch in batches for _, index in batch[4 * stream:4 * stream + 4]]
        # each stream is a permutation of the set, then a fresh one: every image once in its first ten draws
        assert sorted(indices[:10]) == list(range(10)) and sorted(indices[10:20]) == list(range(10))
    first, second = ([index for batch in batches for _, index in batch[4 * s:4 * s + 4]] for s in (0, 1))
    assert first != second  # two shuffles, not one read twice
    keys = [key for batch in batches for key, _ in batch]
    assert len(set(keys)) == len(keys)  # every draw its own augmentation seed


def test_a_block_is_a_function_of_the_block_alone():
    """What a resumed run relies on: block 3 drawn fresh equals block 3 drawn after blocks 1 and 2."""
    sampler = TwoStreamBatchSampler(num_items=13, half=6, iterations=9, iterations_per_block=3, seed=1)
    after = [draws(sampler, block) for block in (1, 2, 3)][-1]
    fresh = TwoStreamBatchSampler(num_items=13, half=6, iterations=9, iterations_per_block=3, seed=1)
    assert draws(fresh, 3) == after
    other_seed = TwoStreamBatchSampler(num_items=13, half=6, iterations=9, iterations_per_block=3, seed=2)
    assert draws(other_seed, 3) != after


def test_ranks_split_both_halves(monkeypatch):
    """Rank r of W takes every W-th image of each half: the ranks' shares, put back together, are the one-process
    iteration, first half then second."""
    from utils.runtime import dist
    one = draws(TwoStreamBatchSampler(num_items=20, half=6, iterations=2, iterations_per_block=2, seed=3), 1)
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(dist, "get_world_size", lambda: 2)
        monkeypatch.setattr(dist, "get_rank", lambda rank=rank: rank)
        shares.append(draws(TwoStreamBatchSampler(num_items=20, half=6, iterations=2, iterations_per_block=2, seed=3),
                            1))
    for iteration, whole in enumerate(one):
        for half in (0, 1):
            rebuilt = [None] * 6
            for rank in (0, 1):
                rebuilt[rank::2] = shares[rank][iteration][3 * half:3 * half + 3]
            assert rebuilt == whole[6 * half:6 * half + 6]
    with pytest.raises(UsageError, match=r"--batch-size 5 .* multiple of the number of processes \(2\)"):
        TwoStreamBatchSampler(num_items=20, half=5, iterations=2, iterations_per_block=2, seed=3)


def test_warp_resize_ignores_the_aspect_ratio():
    image = Image.fromarray(np.arange(40 * 80 * 3, dtype=np.uint8).reshape(40, 80, 3))
    assert build_transform(False, 32, 32, resize_mode="warp")(image).shape == (3, 32, 32)  # the whole image, squashed
    short = build_transform(False, 32, 32)(image)  # the short side to 32 (32 x 64), then the centre 32 x 32
    np.testing.assert_array_equal(short, build_transform(False, 32, 32)(image))
    assert not np.array_equal(short, build_transform(False, 32, 32, resize_mode="warp")(image))
    with pytest.raises(UsageError, match="--resize-mode must be one of short, warp, got 'stretch'"):
        build_transform(False, 32, 32, resize_mode="stretch")


def test_the_paper_presets():
    coco = parse_args(["--recipe", "paper", "--bit", "48"])
    assert (coco.unit, coco.iterations, coco.snapshot_every, coco.rounds, coco.eval_rounds) == \
        ("iteration", 10000, 1000, 10, 2)
    assert (coco.batch_size, coco.learning_rate, coco.lr_step, coco.momentum, coco.weight_decay) == \
        (256, 5e-5, 2000, 0.9, 5e-4)
    assert (coco.crop_size, coco.resize_size, coco.resize_mode, coco.map_at, coco.class_num) == \
        (227, 256, "warp", 5000, 1.0)
    assert coco.sigmoid_param == pytest.approx(10 / 48) and coco.continuation_step == 200
    assert (coco.epochs, coco.alpha, coco.sampling) == (None, None, None)  # the seed recipe's, absent here
    imagenet = parse_args(["--recipe", "paper", "--dataset", "imagenet", "--bit", "48"])
    assert (imagenet.learning_rate, imagenet.class_num, imagenet.map_at) == (2e-4, 100.0, 1000)
    assert parse_args(["--recipe", "paper", "--dataset", "nuswide_81"]).class_num == 5.0
    seed = parse_args(["--bit", "48"])
    assert (seed.unit, seed.rounds, seed.eval_rounds, seed.resize_mode, seed.recipe) == \
        ("epoch", 150, 10, "short", "seed")
    flags = parse_args(["--recipe", "paper", "--iterations", "3000", "--snapshot-every", "500", "--eval-every",
                        "1500", "--sigmoid-param", "0.5"])
    assert (flags.rounds, flags.eval_rounds, flags.sigmoid_param) == (6, 3, 0.5)


@pytest.mark.parametrize("argv, message", [
    (["--iterations", "5"], "--iterations belongs to --recipe paper, not --recipe seed"),
    (["--recipe", "paper", "--epochs", "5"], "--epochs belongs to --recipe seed, not --recipe paper"),
    (["--recipe", "paper", "--alpha", "0.2"], "--alpha belongs to --recipe seed"),
    (["--recipe", "paper", "--eval-every", "1500"], "--eval-every 1500 must be a multiple of --snapshot-every 1000"),
    (["--recipe", "paper", "--train-scope", "hash"], "--train-scope must be all, got hash"),
    (["--recipe", "paper", "--iterations", "0"], "--iterations must be >= 1, got 0"),
])
def test_recipe_flag_errors(argv, message):
    with pytest.raises(UsageError, match=message):
        parse_args(argv)


def test_scripts_run_the_paper_recipe(tmp_path):
    """RECIPE=paper sh scripts/train_single_gpu.sh / test_single_gpu.sh: --recipe paper with the preset's values
    (none of the seed's flags), run folders {dataset}_{bit}bits_paper; a wrong RECIPE stops at once. A stand-in
    `python` records the commands instead of training."""
    import shutil
    import subprocess

    from conftest import REPO as repo
    from conftest import stand_in_python
    env, log = stand_in_python(tmp_path)
    env.update(RECIPE="paper", DATASET="imagenet")
    for script in ("train_single_gpu.sh", "test_single_gpu.sh"):
        subprocess.run([shutil.which("sh"), str(repo / "scripts" / script)], env=env, check=True, timeout=120)
    calls = log.read_text().splitlines()
    assert calls[0] == ("main_single_gpu.py --recipe paper --dataset imagenet --data-path ./datasets/imagenet/ "
                        "--bit 16 --seed 0 --topK 1000 --output-dir output --run-name {dataset}_{bit}bits_paper "
                        "--resume auto")
    assert calls[7] == ("main_single_gpu.py --eval --dataset imagenet --data-path ./datasets/imagenet/ --bit 64 "
                        "--seed 2000 --batch-size 128 --topK 1000 --pretrained "
                        "output/imagenet_64bits_paper/model_best_64.pdparams --output-dir output "
                        "--run-name imagenet_64bits_paper_eval")
    wrong = subprocess.run([shutil.which("sh"), str(repo / "scripts" / "train_single_gpu.sh")], capture_output=True,
                           text=True, env={**env, "RECIPE": "caffe"}, timeout=120)
    assert wrong.returncode == 2 and "error: RECIPE=caffe: expected seed or paper" in wrong.stderr


# ------------------------------------------------------------------------------------------------ training end to end
def paper_command(small_toy, run):
    """A paper-recipe run small enough for a test: 4 iterations of 2 x 8 images in blocks of 2, the lr halved after
    iteration 3 and the scale stepped every 2 forward passes, so a resume at the block boundary crosses both (lr 1e-2
    so that 4 iterations move every layer measurably)."""
    from conftest import toy_args
    return ["main_single_gpu.py", *toy_args(small_toy, run, "--recipe", "paper", "--batch-size", "8", "--bit", "16",
                                            "--iterations", "4", "--snapshot-every", "2", "--eval-every", "4",
                                            "--lr-step", "3", "--learning-rate", "0.01", "--continuation-step", "2",
                                            "--log_freq", "1",
                                            "--resume", "auto")]


@pytest.fixture(scope="module")
def paper_run(small_toy, tmp_path_factory):
    from conftest import run_cli
    run = tmp_path_factory.mktemp("paper") / "straight"
    run_cli(paper_command(small_toy, run))
    return run


def test_the_paper_recipe_trains_every_layer_and_logs_iterations(paper_run):
    import json

    import paddle

    from conftest import assert_training_moved
    assert_training_moved(paper_run)  # every layer: the recipe trains the whole network
    config = json.loads((paper_run / "config.json").read_text())
    assert (config["recipe"], config["unit"], config["optimizer"], config["resize_mode"]) == \
        ("paper", "iteration", "caffe_sgd", "warp")
    rows = [json.loads(line) for line in (paper_run / "epochs.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["iteration"], r["steps"]) for r in rows] == [(1, 2, 2), (2, 4, 2)]
    # Caffe's lr after 2 and after 4 updates (x0.5 from update 3 on); the scale at forward 4 (counter 5, set at 4)
    assert [r["lr"] for r in rows] == pytest.approx([1e-2, 5e-3])
    assert rows[-1]["scale"] == pytest.approx((1 + 0.005 * 4) ** 0.5)
    metrics = json.loads((paper_run / "metrics.json").read_text())
    assert (metrics["final_iteration"], metrics["best_iteration"]) == (4, 4) and "map_paper_rule" in metrics["final"]
    log = (paper_run / "log_train_16.txt").read_text()
    assert "Iteration[00004/00004], Step[0002/0002]" in log and "paper recipe: 4 iterations of 2 x 8 images" in log
    state = paddle.load(str(paper_run / "last_16.pdckpt"))
    assert state["criterion"]["continuation"]["counter"] == 5  # Caffe's set-up pass and 4 forward passes


def test_the_paper_recipe_resumes_bit_for_bit_after_sigkill(paper_run, small_toy, tmp_path):
    import signal

    import paddle

    from conftest import run_cli
    from test_resume_auto import stalled, start_and_signal
    run = tmp_path / "killed"
    args, env = stalled(paper_command(small_toy, run), epoch=2, step=1)  # block 2, its first iteration logged
    code, _, _ = start_and_signal(args, run / "log_train_16.txt", "Iteration[00004/00004], Step[0001",
                                  signal.SIGKILL, env)
    assert code == -signal.SIGKILL and paddle.load(str(run / "last_16.pdckpt"))["epoch"] == 1
    proc = run_cli(paper_command(small_toy, run))
    assert "after iteration 2 " in proc.stdout
    resumed, straight = (paddle.load(str(path / "last_16.pdckpt")) for path in (run, paper_run))
    for key, value in straight["model"].items():
        np.testing.assert_array_equal(resumed["model"][key].numpy(), value.numpy(), err_msg=key)
    for key, value in straight["optimizer"]["history"].items():
        np.testing.assert_array_equal(resumed["optimizer"]["history"][key].numpy(), value.numpy(), err_msg=key)
    assert resumed["criterion"] == straight["criterion"]


# ----------------------------------------------------------------------------------------------- CaffeNet in HashNet
def test_hashnet_on_caffenet_takes_the_converted_weights_and_its_own_input(tmp_path):
    """--backbone caffenet: HashNet keeps the whole CaffeNet (names caffenet.conv1 ...), loads a converted
    .pdparams into it, feeds it the uint8 batch (CaffeNet makes its own BGR minus mean input, not the ImageNet
    normalisation) and reads its 4096 fc7 features; the predictor encodes it as the dynamic graph does."""
    import paddle

    from models import HashNet
    from models.caffenet import CaffeNet
    from utils.retrieval import fast_encoder

    paddle.seed(5)
    source = CaffeNet()
    path = tmp_path / "caffenet_imagenet.pdparams"
    paddle.save(source.state_dict(), str(path))
    paddle.seed(6)  # another random start: equal outputs can only come from the file
    model = HashNet(16, pretrained=str(path), backbone="caffenet")
    model.eval()
    source.eval()
    images = np.random.RandomState(0).randint(0, 256, (3, 3, 64, 64)).astype("uint8")
    with paddle.no_grad():
        np.testing.assert_array_equal(model.fc7(paddle.to_tensor(images)).numpy(),
                                      source(paddle.to_tensor(images)).numpy())
        outputs = model(paddle.to_tensor(images)).numpy()
    assert model.feature_mean.shape == [4096] and "caffenet.fc7.weight" in model.state_dict()
    encoder = fast_encoder.model_encoder(model, "inference", 64)
    assert fast_encoder.encoder_kind(encoder) == "inference"
    import tolerances  # rounding only: the predictor's fc7 difference, measured, through the hash layer
    tolerances.assert_outputs_agree(encoder(images), outputs, tolerances.measured_output_tolerance(model, images),
                                    "CaffeNet predictor", distinct_codes=False)


def test_the_paper_recipe_defaults_to_caffenet_and_says_where_its_weights_come_from(tmp_path):
    import logging

    from utils.train import build
    args = parse_args(["--recipe", "paper", "--bit", "32"])
    assert (args.backbone, args.backbone_weights) == ("caffenet", "auto")
    assert parse_args(["--recipe", "paper", "--backbone", "alexnet"]).backbone == "alexnet"  # a documented deviation
    assert parse_args(["--bit", "32"]).backbone == "alexnet"
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("test_paper_recipe")
    logger.addHandler(handler)
    try:
        assert build.resolve_backbone_weights(args, logger) is None  # no pretrained/ file in a clone
    finally:
        logger.removeHandler(handler)
    message = records[0].getMessage()
    assert "no ImageNet CaffeNet weights found" in message and "pretrained/caffenet_imagenet.pdparams" in message
    assert "http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel" in message
    assert "python -m models.caffemodel --convert" in message


def test_the_paper_recipe_in_two_processes(small_toy, tmp_path):
    """main_multi_gpu.py --recipe paper under the launcher (2 CPU processes, gloo): each iteration's 2 x 8 images are
    split 4 + 4 per process, the pairs are built over the gathered halves (utils/losses/pairwise_loss.py, whose
    equality to
    one process is tests/test_pairwise_distributed.py), and the run trains every layer and writes one checkpoint."""
    import json

    from conftest import assert_training_moved, run_cli, toy_args
    run = tmp_path / "two"
    args = toy_args(small_toy, run, "--recipe", "paper", "--batch-size", "8", "--bit", "16", "--iterations", "2",
                    "--snapshot-every", "2", "--eval-every", "2", "--learning-rate", "0.01", "--log_freq", "1")
    run_cli(["-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", tmp_path / "logs",
             "main_multi_gpu.py", *args])
    assert_training_moved(run)
    log = (run / "log_train_16.txt").read_text()
    assert "world size 2" in log and "2 iterations of 2 x 8 images (two shuffled streams; 8 per process)" in log
    rows = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["world_size"]) for r in rows] == [(2, 2)]
    assert json.loads((run / "metrics.json").read_text())["final"]["num_database"] == 200


def test_the_paper_criterion_pairs_over_every_process(monkeypatch):
    """With several processes the engine's paper criterion builds its pairs over the gathered halves (rank and
    world size given), and one process builds them over its own batch."""
    from utils.runtime import dist
    from utils.train.recipes.paper import PaperCriterion
    cfg = parse_args(["--recipe", "paper", "--bit", "16"])
    assert PaperCriterion(cfg).loss.gather is None
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    loss = PaperCriterion(cfg).loss
    assert (loss.gather, loss.rank, loss.world_size) == (dist.all_gather_cat, 1, 2)
    assert (loss.sigmoid_param, loss.class_num, loss.l_threshold, loss.continuous_similarity) == (10 / 16, 1.0, 15.0,
                                                                                                 True)
