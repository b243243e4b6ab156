"""What a training or evaluation run is made of, built as its configuration says: the model (ImageNet weights, a
checkpoint, or a random backbone), the datasets and loaders (the training batches from the recipe's sampler,
utils/train/recipes), and for a frozen backbone (--train-scope hash) the features that stand in for its images.
"""
import functools
from pathlib import Path

import paddle
from paddle.io import DistributedBatchSampler

from models import HashNet
from models.backbones import DEFAULT_BACKBONE, backbone_spec
from utils import PROJECT_ROOT
from utils.datasets.image_list import EpochBatchSampler, ImageList, build_datasets, build_loader
from utils.retrieval import fast_encoder
from utils.runtime import dist
from utils.train import checkpoint
from utils.train.evaluation import predict_outputs
from utils.train.recipes import recipe_for

RESUME_FILE = "resume checkpoint (--resume)"  # how errors name the file --resume gave


def backbone_of(cfg):
    """cfg's --backbone; a configuration written before there was a choice (an old run's config.json) is AlexNet's."""
    return getattr(cfg, "backbone", None) or DEFAULT_BACKBONE


def hash_head_of(cfg):
    """The hash layer of cfg's --method: DNNH's divide-and-encode module, else HashNet's linear layer."""
    return "divide_encode" if getattr(cfg, "method", None) == "dnnh" else "linear"


def resolve_backbone_weights(cfg, logger):
    """Path of the backbone's ImageNet weights to start from, or None for a random backbone (with a warning on real
    data)."""
    choice = cfg.backbone_weights
    if choice == "none":
        return None
    if choice != "auto":
        return choice  # a wrong path is reported by the loader, with where the file comes from
    spec = backbone_spec(backbone_of(cfg))
    for candidate in spec.candidates:
        if (PROJECT_ROOT / candidate).is_file():
            return str(PROJECT_ROOT / candidate)
    logger.warning(
        "WARNING: no ImageNet %s weights found (looked for %s). Training starts from a random backbone and "
        "results will be far from the paper's (docs/protocol.md#reference-numbers). See "
        "docs/backbones.md#imagenet-weights to get and convert them (%s), or pass --backbone-weights "
        "PATH.", spec.title, ", ".join(spec.candidates), spec.source)
    return None


def build_model(cfg, logger, weights=None, what="checkpoint (--pretrained)"):
    """HashNet as cfg says; with `weights` (a checkpoint, `what` in errors) every weight is that file's, so the layers
    are made without drawing random values and no ImageNet file is read (a second less per process). Otherwise rank 0
    alone draws the weights or reads the ImageNet file and the other ranks take its model: every rank starts from the
    same network, and the others skip drawing 61 M values they would discard (~0.8 s, and a copy of the memory)."""
    # unique_name.guard: parameter (and so optimizer-state) names do not depend on what else this process built
    with paddle.utils.unique_name.guard():
        if weights or not dist.is_main_process():
            model = HashNet(cfg.bit, init="none", backbone=backbone_of(cfg), hash_head=hash_head_of(cfg))
        else:
            model = HashNet(cfg.bit, pretrained=resolve_backbone_weights(cfg, logger), init=cfg.init,
                            backbone=backbone_of(cfg), hash_head=hash_head_of(cfg))
    if weights:
        checkpoint.load_model_weights(model, weights, what)
    else:
        dist.broadcast_layer(model)
    if cfg.train_scope == "hash":
        for param in model.backbone_parameters():
            param.stop_gradient = True
    return model


def build_data(cfg, logger=None):
    """Datasets and loaders; the toy set is generated on first use (by rank 0, the others wait). With --cache_dir the
    query, database and training images come from utils/datasets/cache.py's caches (built on first use by rank 0)."""
    if cfg.dataset == "toy" and cfg.list_dir is None:
        from utils.datasets.toy import ensure_toy_dataset
        if dist.is_main_process():
            ensure_toy_dataset(Path(cfg.data_path))
        dist.barrier()
    path_prefix = getattr(cfg, "path_prefix", None)
    datasets = build_datasets(cfg.dataset, cfg.data_path, cfg.resize_size, cfg.crop_size, cfg.seed, cfg.list_dir,
                              path_prefix, cfg.resize_mode)
    # the training images with the eval transform: for the fc7 statistics of the from-scratch recipe
    datasets["train_eval"] = ImageList(cfg.data_path, datasets["train"].list_path, datasets["test"].transform,
                                       path_prefix=path_prefix)
    if cfg.cache_dir:
        from utils.datasets import cache as datacache
        log = logger.info if logger else datacache.log_to_stderr
        if cfg.cache in ("all", "eval"):  # train_eval is read once per run: caching it would cost what it saves
            for split in ("test", "database"):
                datasets[split] = datacache.cached_eval_dataset(datasets[split], cfg.cache_dir, cfg.resize_size,
                                                                cfg.crop_size, log, cfg.resize_mode)
        if cfg.cache in ("all", "train") and not cfg.eval:
            datasets["train"] = datacache.cached_train_dataset(datasets["train"], cfg.cache_dir, cfg.resize_size,
                                                               cfg.crop_size, log, cfg.resize_mode)
    loaders = {split: encoding_loader(ds, cfg) for split, ds in datasets.items() if split != "train"}
    # the training workers live for the whole run: the epoch travels with each index (EpochBatchSampler) or each draw
    # carries its own key (the paper recipe's)
    sampler = recipe_for(cfg).train_sampler(datasets["train"])
    loaders["train"] = build_loader(datasets["train"], cfg.num_workers, persistent=True, batch_sampler=sampler,
                                    image_bytes=3 * cfg.crop_size ** 2)
    return datasets, loaders


def encoding_loader(dataset, cfg):
    """A loader for encoding `dataset`: one shard per rank, in order (predict_outputs gathers them back). Idle
    between evaluations, it starts its workers at each pass rather than hold their memory."""
    sampler = DistributedBatchSampler(dataset, batch_size=cfg.batch_size, shuffle=False, drop_last=False)
    return build_loader(dataset, cfg.num_workers, batch_sampler=EpochBatchSampler(sampler, dataset),
                        image_bytes=3 * cfg.crop_size ** 2)


def frozen_backbone_images(cfg, datasets):
    """About how many images a frozen backbone's run encodes in each process (its training views, queries and
    database): what --encoder auto decides by (fast_encoder.PREDICTOR_MIN_PIXELS)."""
    views = max(cfg.frozen_views, 1)
    return (views * len(datasets["train"]) + len(datasets["test"]) + len(datasets["database"])) // dist.get_world_size()


def frozen_backbone_sources(model, datasets, cfg, logger, fit):
    """(training batches, encode_split) of a run whose backbone is frozen: its features are computed once per run and
    the hash layer alone trains and encodes (utils/train/frozen.py); fit: fit the standardisation on them first."""
    from utils.train import frozen

    @functools.cache  # made at the first pass and kept: the backbone's weights do not change during the run
    def fc7_encoder():
        model.eval()
        return fast_encoder.method_encoder(model.fc7, cfg.encoder, cfg.crop_size, frozen_backbone_images(cfg, datasets))

    def outputs_of(dataset, desc):  # fc7 of every item, in dataset order on every rank (--encoder)
        return predict_outputs(fc7_encoder(), encoding_loader(dataset, cfg), desc)

    fit_on = (lambda fc7: fit_feature_standardization(model, None, logger, fc7)) if fit else None
    return (frozen.training_loader(model, datasets, cfg, logger, outputs_of, fit_on),
            frozen.EvalFeatures(model, datasets, cfg.batch_size, logger, outputs_of,
                                lambda: fast_encoder.encoder_kind(fc7_encoder())))


def fit_feature_standardization(model, loader, logger, fc7=None):
    """Fit fc7's standardisation on the training set (from-scratch recipe, HashNet.fit_standardization): on `fc7`,
    the training images' features (n, 4096) when the caller has them (utils/train/frozen.py), else on loader's
    images."""
    if fc7 is None:
        model.eval()
        fc7, _ = predict_outputs(model.fc7, loader, "fc7 statistics")
    stats = model.fit_standardization(fc7)
    logger.info("fc7 standardised on %d training images (mean of means %.4f, mean std %.4f; %d constant units "
                "standardised to 0)", stats["images"], stats["mean_of_means"], stats["mean_std"],
                stats["constant_units"])
