"""A frozen backbone is run once (utils/train/frozen.py): its cached features give the codes the images give, the
training
batches are the image path's, its views are the training transform's crops, and a run with views resumes exactly."""
import json
import logging
import shutil

import numpy as np
import paddle
import pytest

from conftest import assert_training_moved, run_cli, toy_args
from utils.hashing.codes import sign_codes

VIEWS = 2


@pytest.fixture(scope="module")
def frozen_setup(eval_toy, tmp_path_factory):
    """The toy recipe's model (random backbone, fc7 standardised) and its training features with VIEWS views, on the
    128 training images of small_toy and fewer evaluation images (eval_toy: the full model encodes them 6 times)."""
    from models import HashNet
    from utils.train import build, evaluation, frozen
    from utils.train.options import parse_args
    cfg = parse_args(["--dataset", "toy", "--list-dir", str(eval_toy["list_dir"]), "--data-path",
                      str(eval_toy["data_path"]), "--bit", "16", "--batch-size", "32", "--num_workers", "0",
                      "--output-dir", str(tmp_path_factory.mktemp("frozen")), "--frozen-views", str(VIEWS),
                      "--encoder", "dygraph"])  # the image path in the same kernels (the fast path: test_fast_encoder)
    datasets, loaders = build.build_data(cfg)
    paddle.set_device("cpu")
    paddle.seed(0)
    with paddle.utils.unique_name.guard():
        model = HashNet(16, init="kaiming")
    model.eval()
    logger = logging.getLogger("test_frozen")

    def outputs_of(dataset, desc):  # what build.frozen_backbone_sources hands utils/train/frozen.py
        return evaluation.predict_outputs(model.fc7, build.encoding_loader(dataset, cfg), desc)

    train = frozen.training_loader(model, datasets, cfg, logger, outputs_of,
                                   fit=lambda fc7: build.fit_feature_standardization(model, None, logger, fc7))
    std = model.feature_std.numpy()
    # the statistics were fitted, not left at 1 (the constant units' std is inf: HashNet.fit_standardization)
    assert float(std[np.isfinite(std)].mean()) < 0.5 and np.isinf(std).any()
    return {"cfg": cfg, "datasets": datasets, "loaders": loaders, "model": model, "train": train,
            "outputs_of": outputs_of}


@paddle.no_grad()
def backbone_on_images(model, dataset, epoch, indices):
    """Standardised fc7 of these training items as the image path computes it in `epoch` (its crops), one batch."""
    images = np.stack([dataset[(epoch, int(i))][0] for i in indices])
    return model.extract_features(paddle.to_tensor(images)).numpy()


def test_each_view_is_the_backbone_on_the_crops_of_its_epoch(frozen_setup):
    """View k holds, bit for bit, what the backbone gives the crops the image path draws in epoch k (the same first
    batch: the same floats), and those differ from view to view."""
    train, model, images = frozen_setup["train"], frozen_setup["model"], frozen_setup["datasets"]["train"]
    views, first = train.dataset.views, np.arange(frozen_setup["cfg"].batch_size)
    assert views.shape == (VIEWS, 128, 4096)
    for k in range(1, VIEWS + 1):
        np.testing.assert_array_equal(views[k - 1][first], backbone_on_images(model, images, k, first))
    assert not np.array_equal(views[0], views[1])


@pytest.mark.parametrize("epoch, view", [(1, 1), (2, 2), (3, 1), (4, 2)])
def test_epochs_cycle_through_the_views_in_the_image_paths_batches(frozen_setup, epoch, view):
    """Epoch e trains on view (e - 1) % N + 1, in the batches TrainBatchSampler draws over the images, with their
    labels."""
    from utils.datasets.sampling import TrainBatchSampler
    cfg, train, images = frozen_setup["cfg"], frozen_setup["train"], frozen_setup["datasets"]["train"]
    image_batches = TrainBatchSampler(images, cfg.batch_size, cfg.seed, cfg.sampling)
    image_batches.set_epoch(epoch)
    train.batch_sampler.set_epoch(epoch)
    train.dataset.set_epoch(epoch)
    batches = list(train)
    assert len(batches) == len(train) == len(image_batches) == 4
    for (features, labels, index), expected in zip(batches, image_batches):
        np.testing.assert_array_equal(index.numpy(), expected)
        np.testing.assert_array_equal(features.numpy(), train.dataset.views[view - 1][expected])
        np.testing.assert_array_equal(labels.numpy(), images.labels[expected])


def test_no_augmentation_trains_on_the_evaluation_view(frozen_setup):
    """--frozen-views 0: one view, the training images' evaluation crops (the fc7 statistics' own images)."""
    from utils.train import frozen
    cfg, model, datasets = frozen_setup["cfg"], frozen_setup["model"], frozen_setup["datasets"]
    centre = frozen.training_loader(model, datasets, type(cfg)(**dict(vars(cfg), frozen_views=0)),
                                    logging.getLogger("test_frozen"), frozen_setup["outputs_of"])
    first = np.arange(cfg.batch_size)
    assert centre.dataset.views.shape == (1, 128, 4096)
    np.testing.assert_array_equal(centre.dataset.views[0][first],
                                  backbone_on_images(model, datasets["train_eval"], 0, first))


def test_cached_features_and_the_hash_layer_give_the_full_models_codes(frozen_setup):
    """Queries and database through the cached features and the hash layer: the same raw outputs, codes and mAP as
    the full model on the images, at the first evaluation and at a later one (after the hash layer changed)."""
    from utils.train import evaluation, frozen
    from utils.train.logger import setup_logger
    cfg, model, loaders = frozen_setup["cfg"], frozen_setup["model"], frozen_setup["loaders"]
    cached = frozen.EvalFeatures(model, frozen_setup["datasets"], cfg.batch_size, setup_logger(),
                                 frozen_setup["outputs_of"], lambda: "dygraph")
    for step in range(2):
        for split in ("test", "database"):
            outputs, labels = cached(split, split)
            codes = sign_codes(outputs)
            raw, image_labels = evaluation.predict_outputs(model, loaders[split])
            np.testing.assert_array_equal(frozen.hash_outputs(model.hash_layer, cached.features[split][0],
                                                              cfg.batch_size), raw)
            np.testing.assert_array_equal(codes, evaluation.encode(model, loaders[split], keep_zero=True)[0])
            assert (codes[:, 0] == 0).all() == (step == 1)  # a 0 output stays 0, as the paper rule reads it
            np.testing.assert_array_equal(labels, image_labels)
            assert len(np.unique(codes, axis=0)) > 1  # codes that differ between images: equality means something
        with_cache, with_images = (evaluation.evaluate(model, loaders, cfg, encode) for encode in (cached, None))
        for timing in ("eval_time", "encoder_setup_time"):
            del with_cache[timing], with_images[timing]
        assert with_cache == with_images
        # the layer trains between them, and its bit 0 comes out exactly 0 for every image
        weight, bias = model.hash_layer.weight.numpy() * -0.5 + 0.01, model.hash_layer.bias.numpy()
        weight[:, 0], bias[0] = 0.0, 0.0
        model.hash_layer.weight.set_value(weight)
        model.hash_layer.bias.set_value(bias)


def test_the_encoder_of_a_frozen_run_is_chosen_for_everything_it_encodes(frozen_setup, monkeypatch):
    """build.frozen_backbone_sources makes one encoder for the run, sized (--encoder auto) by the training views, the
    queries and the database together, and the evaluation reports the encoder it made."""
    import copy

    from utils.retrieval import fast_encoder
    from utils.train import build
    made = []

    def recording(layer, choice, crop_size, images=None):
        made.append((choice, crop_size, images))
        return layer  # the dynamic graph

    monkeypatch.setattr(fast_encoder, "method_encoder", recording)
    cfg = copy.copy(frozen_setup["cfg"])
    cfg.frozen_views = 0  # the evaluation view alone: one pass over the 128 training images
    _, encode_split = build.frozen_backbone_sources(frozen_setup["model"], frozen_setup["datasets"], cfg,
                                                    logging.getLogger("test_frozen"), fit=False)
    assert made == [("dygraph", 64, 128 + 16 + 48)]
    assert encode_split.encoded_by == "dygraph" and len(made) == 1  # the same encoder, not a second one


def test_negative_views_are_refused(tmp_path):
    from utils.train.options import parse_args
    with pytest.raises(ValueError, match=r"^--frozen-views must be >= 0 \(0 = no augmentation\), got -1$"):
        parse_args(["--dataset", "toy", "--output-dir", str(tmp_path), "--frozen-views", "-1"])


def test_a_run_with_views_resumes_exactly(small_toy, tmp_path):
    """Two epochs with two cached views, against the same run's folder as it was after epoch 1 (what a run stopped
    there leaves: tests/dist_worker.py's snapshot) resumed with --resume auto: the resumed run recomputes the views
    from the checkpoint's backbone and standardisation and ends with the same weights, bank and mAP."""
    args = ("--epoch", "2", "--eval_epoch", "1", "--bit", "16", "--frozen-views", str(VIEWS))
    straight, resumed = tmp_path / "straight", tmp_path / "straight_after_epoch1"
    # the real entry in one process (main_multi_gpu.main on a machine without a GPU: the single-process engine)
    run_cli(["tests/dist_worker.py", *toy_args(small_toy, straight, *args)],
            env={"SNAPSHOT_AFTER_EPOCH": "1", "RECORD_RANKS": "0"})
    assert_training_moved(straight)
    shutil.copy(resumed / "last_16.pdckpt", tmp_path / "after_one.pdckpt")
    run_cli(["tests/dist_worker.py", *toy_args(small_toy, resumed, *args), "--resume", "auto"],
            env={"RECORD_RANKS": "0"})
    assert_training_moved(resumed)
    a, b = paddle.load(str(straight / "last_16.pdckpt")), paddle.load(str(resumed / "last_16.pdckpt"))
    assert b["epoch"] == 2 and paddle.load(str(tmp_path / "after_one.pdckpt"))["epoch"] == 1
    for key, value in a["model"].items():
        np.testing.assert_array_equal(b["model"][key].numpy(), value.numpy(), err_msg=key)
    np.testing.assert_array_equal(b["criterion"]["U"].numpy(), a["criterion"]["U"].numpy())
    rows = [[json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()] for run in (straight,
                                                                                                    resumed)]
    assert [(r["loss"], r["map"]) for r in rows[0]] == [(r["loss"], r["map"]) for r in rows[1]]
    log = (straight / "log_train_16.txt").read_text()
    assert f"fc7 of the 128 training images ({VIEWS} random view(s)) computed once" in log
