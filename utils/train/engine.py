"""The engine every entry point uses: build, train one epoch, encode, evaluate, checkpoint, and the run loop.

Single-device training is the world-size-1 case of the same code: data always goes through a
DistributedBatchSampler (utils/datasets/sampling.py for the training set), and the multi-GPU entry only adds
`init_parallel_env` and `DataParallel`.
"""
import functools
import time
from pathlib import Path

import numpy as np
import paddle
from paddle.io import DistributedBatchSampler
from tqdm import tqdm

from models import HashNet
from models.backbones import DEFAULT_BACKBONE, backbone_spec
from models.pretrained import BATCHNORM_STATISTICS
from utils import PROJECT_ROOT
from utils.datasets.image_list import EpochBatchSampler, ImageList, build_datasets, build_loader
from utils.datasets.sampling import TrainBatchSampler, TwoStreamBatchSampler, describe
from utils.hashing.codes import binarize, sign_codes
from utils.hashing.metrics import CalcTopMap, retrieval_metrics
from utils.hashing.plots import save_metric_plots
from utils.losses.hashnet_loss import HashNetLoss, continuation_scale
from utils.retrieval import fast_encoder
from utils.runtime import dist
from utils.runtime.failure import run_or_end_process
from utils.train import checkpoint, preemption
from utils.train.logger import AverageMeter, append_jsonl, keep_epoch_rows, setup_logger

# ----------------------------------------------------------------------------------------------------------- build
RESUME_FILE = "resume checkpoint (--resume)"  # how errors name the file --resume gave


def backbone_of(cfg):
    """cfg's --backbone; a configuration written before there was a choice (an old run's config.json) is AlexNet's."""
    return getattr(cfg, "backbone", None) or DEFAULT_BACKBONE


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
            model = HashNet(cfg.bit, init="none", backbone=backbone_of(cfg))
        else:
            model = HashNet(cfg.bit, pretrained=resolve_backbone_weights(cfg, logger), init=cfg.init,
                            backbone=backbone_of(cfg))
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
    # the training workers live for the whole run (the epoch travels with each index: EpochBatchSampler; the paper
    # recipe's sampler keys each draw itself)
    if cfg.recipe == "paper":
        sampler = TwoStreamBatchSampler(len(datasets["train"]), cfg.batch_size, cfg.iterations, cfg.snapshot_every,
                                        cfg.seed)
    else:
        sampler = EpochBatchSampler(TrainBatchSampler(datasets["train"], cfg.batch_size, cfg.seed, cfg.sampling),
                                    datasets["train"])
    loaders["train"] = build_loader(datasets["train"], cfg.num_workers, persistent=True, batch_sampler=sampler,
                                    image_bytes=3 * cfg.crop_size ** 2)
    return datasets, loaders


def encoding_loader(dataset, cfg):
    """A loader for encoding `dataset`: one shard per rank, in order (predict_outputs gathers them back). Idle
    between evaluations, it starts its workers at each pass rather than hold their memory."""
    sampler = DistributedBatchSampler(dataset, batch_size=cfg.batch_size, shuffle=False, drop_last=False)
    return build_loader(dataset, cfg.num_workers, batch_sampler=EpochBatchSampler(sampler, dataset),
                        image_bytes=3 * cfg.crop_size ** 2)


def build_criterion(cfg, num_train, num_classes):
    """The seed recipe's HashNetLoss (memory bank of the training set), or the paper recipe's ScaleTanH +
    PairwiseLoss (utils/train/paper_recipe.py)."""
    if cfg.recipe == "paper":
        from utils.train.paper_recipe import PaperCriterion
        return PaperCriterion(cfg)
    criterion = HashNetLoss(cfg.bit, num_train, cfg.alpha, num_classes)
    if dist.get_world_size() > 1:
        criterion.gather = dist.all_gather_cat
    return criterion


def build_optimizer(cfg, model):
    """docs/protocol.md#seed-recipe: lr = base * batch_size * world_size / 64, halved every de_step epochs (StepDecay,
    per epoch). The paper recipe: Caffe's solver (utils/train/paper_recipe.build_solver)."""
    if cfg.recipe == "paper":
        from utils.train.paper_recipe import build_solver
        return build_solver(cfg, model)
    lr = cfg.learning_rate * cfg.batch_size * dist.get_world_size() / 64
    scheduler = paddle.optimizer.lr.StepDecay(learning_rate=lr, step_size=cfg.de_step, gamma=0.5)
    params = [p for p in model.parameters() if not p.stop_gradient]
    if cfg.optimizer == "sgd":
        optimizer = paddle.optimizer.Momentum(scheduler, momentum=cfg.momentum, parameters=params,
                                              weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        optimizer = paddle.optimizer.Adam(scheduler, parameters=params, weight_decay=cfg.weight_decay)
    else:
        optimizer = paddle.optimizer.AdamW(scheduler, parameters=params, weight_decay=cfg.weight_decay)
    return optimizer, scheduler


# ----------------------------------------------------------------------------------------------------- train/eval
def in_units(cfg, epoch):
    """A round as the recipe's unit counts it: the epoch, or the last iteration of a paper-recipe block."""
    return epoch if cfg.unit == "epoch" else min(epoch * cfg.snapshot_every, cfg.iterations)


def round_name(cfg, epoch):
    """How logs name a round of the loop: 'Epoch[003/150]', or in the paper recipe, whose rounds are blocks of
    --snapshot-every iterations, 'Iteration[03000/10000]' (the block's last iteration)."""
    if cfg.unit == "epoch":
        return f"Epoch[{epoch:03d}/{cfg.rounds:03d}]"
    return f"Iteration[{in_units(cfg, epoch):05d}/{cfg.iterations:05d}]"


def train_one_epoch(model, criterion, optimizer, loader, epoch, cfg, logger):
    """One round of this rank's batches: an epoch (--sampling), or in the paper recipe one block of --snapshot-every
    iterations (utils/datasets/sampling.TwoStreamBatchSampler). Returns {'loss' (mean over ranks), 'lr', 'scale',
    'steps', ...}.

    `loader` yields (inputs, labels, index) batches of `model`'s inputs: the training images (a DataLoader), or with a
    frozen backbone their cached features for the hash layer alone (utils/train/frozen.FeatureLoader).
    """
    # the from-scratch recipe trains only the hash layer on fixed features: no dropout in the frozen backbone
    model.train() if cfg.train_scope == "all" else model.eval()
    if cfg.unit == "epoch":  # the paper recipe's continuation advances per iteration, inside the criterion
        criterion.scale = continuation_scale(epoch, cfg.step_continuation)
    loader.batch_sampler.set_epoch(epoch)  # shuffle keyed by (seed, epoch), and the rank when replicated
    loader.dataset.set_epoch(epoch)
    lr = optimizer.get_lr()
    meter, start, num_steps = AverageMeter(), time.time(), len(loader)
    bar = tqdm(loader, desc=round_name(cfg, epoch), disable=not dist.is_main_process(), leave=False)
    for step, (images, labels, index) in enumerate(bar, 1):
        loss = criterion(model(images), labels, index)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        meter.update(float(loss), images.shape[0])
        bar.set_postfix(loss=f"{meter.avg:.4f}")
        if step % cfg.log_freq == 0 or step == num_steps:
            # every rank reaches the same steps (replicated: the same set; sharded: padded to equal length), so this
            # collective is safe
            logger.info("%s, Step[%04d/%04d], Loss: %.4f, lr: %.6g, scale: %.4f", round_name(cfg, epoch), step,
                        num_steps, dist.all_reduce_mean(meter.avg), optimizer.get_lr(), criterion.scale)
    row = {"epoch": epoch, "loss": dist.all_reduce_mean(meter.avg), "lr": lr, "scale": criterion.scale,
           "steps": num_steps, "sampling": cfg.sampling, "world_size": dist.get_world_size(),
           "time": time.time() - start}
    if cfg.unit == "iteration":  # a block: its last iteration, and the lr it ended with (Caffe's lr steps inside)
        row.update(iteration=in_units(cfg, epoch), lr=optimizer.get_lr())
    return row


@paddle.no_grad()
def predict_outputs(fn, loader, desc="encode"):
    """fn over a loader, gathered from every rank back into dataset order with the sampler's padding removed.

    fn returns a tensor (the model) or a numpy array (a utils/retrieval/fast_encoder.py Predictor). Returns (outputs,
    labels) as numpy arrays with one row per dataset item.
    """
    outputs, labels, indices = [], [], []
    for images, y, index in tqdm(loader, desc=desc, disable=not dist.is_main_process(), leave=False):
        out = fn(images)
        outputs.append((paddle.to_tensor(out) if isinstance(out, np.ndarray) else out).astype("float32"))
        labels.append(y.astype("float32"))
        indices.append(index.reshape([-1]).astype("int64"))
    gathered = [dist.all_gather_cat(paddle.concat(parts)).numpy() for parts in (outputs, labels, indices)]
    out, lab, ind = gathered
    # DistributedBatchSampler pads the last shard with repeats of the first items; keep one copy of each index
    unique, first = np.unique(ind, return_index=True)
    if len(unique) != len(loader.dataset):
        raise RuntimeError(f"encoding saw {len(unique)} distinct items of {len(loader.dataset)}")
    return out[first], lab[first]


def encode(model, loader, desc="encode", encoder=None, keep_zero=False):
    """±1 codes (sign, 0 -> +1; with keep_zero the sign with 0 kept, for the paper rule) and labels of every item of
    the loader's dataset, in dataset order; `encoder` stands for the eval-mode model when given
    (fast_encoder.model_encoder)."""
    model.eval()
    outputs, labels = predict_outputs(encoder or model, loader, desc)
    return (sign_codes if keep_zero else binarize)(outputs), labels


def evaluate(model, loaders, cfg, encode_split=None, return_codes=False, logger=None):
    """Encode queries and database; mAP@K and the paper-style metrics, computed once on rank 0 and shared; with
    return_codes, (metrics, the database's ±1 codes).

    encode_split(split, desc) -> (codes, labels) of loaders[split]'s dataset, the codes ±1 or with 0 kept
    (codes.sign_codes: the paper rule ranks with them, docs/protocol.md#paper-recipe); by default the model encodes its
    images (--encoder: on the CPU a Paddle Inference predictor of the current weights, made afresh for each
    evaluation); a frozen backbone's run passes utils/train/frozen.EvalFeatures, which runs the backbone once per run
    and says by its `encoded_by` which encoder that was.
    """
    start = time.time()
    encoder, encoded_by = None, None
    if encode_split is None:
        images = (len(loaders["test"].dataset) + len(loaders["database"].dataset)) // dist.get_world_size()
        encoder = fast_encoder.model_encoder(model, cfg.encoder, cfg.crop_size, images)
        encoded_by = fast_encoder.encoder_kind(encoder)

        def encode_split(split, desc):
            return encode(model, loaders[split], desc, encoder, keep_zero=True)
    setup_time = time.time() - start
    query_signs, query_labels = encode_split("test", "encode queries")  # ±1, or with 0 kept (the paper rule's)
    db_signs, db_labels = encode_split("database", "encode database")
    encoded_by = encoded_by or encode_split.encoded_by  # a frozen backbone's: what ran it
    query_codes, db_codes = binarize(query_signs), binarize(db_signs)
    encoder = None  # a predictor holds its own copy of the weights: free it before training goes on
    metrics = None
    if dist.is_main_process():
        topk = len(db_codes) if cfg.topK < 0 else cfg.topK
        metrics = retrieval_metrics(db_signs, query_signs, db_labels, query_labels, topk=topk)
        rng = np.random.default_rng(cfg.seed)
        random_db, random_query = (binarize(rng.standard_normal((n, cfg.bit))) for n in (len(db_codes),
                                                                                          len(query_codes)))
        metrics["map_random_codes"] = CalcTopMap(random_db, random_query, db_labels, query_labels, topk)
        # the protocol's sizes as the lists used gave them (scripts/report.py prints them beside the paper's)
        metrics.update(topk=topk, num_train=len(loaders["train"].dataset), num_query=len(query_codes),
                       num_database=len(db_codes),
                       distinct_query_codes=int(len(np.unique(query_codes, axis=0))), eval_time=time.time() - start,
                       encoder=encoded_by, encoder_setup_time=setup_time)
        if logger:
            logger.info("evaluation: %.1f s, encoded by %s (%.1f s of it to make the encoder)", metrics["eval_time"],
                        metrics["encoder"], setup_time)
    metrics = dist.broadcast_object(metrics)
    return (metrics, db_codes) if return_codes else metrics


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


# ------------------------------------------------------------------------------------------------------ checkpoint
def save_training_state(path, model, optimizer, scheduler, criterion, epoch, best, cfg, frozen=None):
    """Everything a resumed run needs (`frozen`: the frozen backbone's file reference, utils/train/checkpoint.py). The
    random state is not stored as such: every epoch reseeds paddle, numpy and python from (seed + rank, epoch) and
    augmentation from (seed, epoch, index), so seed and epoch determine it."""
    checkpoint.save({**checkpoint.model_entries(model, frozen), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "criterion": criterion.state_dict(), "epoch": epoch,
                     "best": best, "bit": cfg.bit, "config": vars(cfg)}, path)


def load_training_state(path, optimizer, scheduler, criterion):
    """Restore what save_training_state wrote besides the model (build_model(weights=path) loads that); returns
    (epoch finished, best-so-far dict, the frozen backbone's file reference or None)."""
    state = checkpoint.load(path, RESUME_FILE)
    optimizer.set_state_dict(state["optimizer"])
    scheduler.set_state_dict(state["scheduler"])
    criterion.set_state_dict(state["criterion"])
    return int(state["epoch"]), state["best"], state.get(checkpoint.FROZEN_BACKBONE)


def resolve_resume(cfg, logger):
    """The checkpoint to continue from: --resume PATH as given; --resume auto, the run folder's last_<bit>.pdckpt when
    rank 0 sees one, else None (a fresh start), so a scheduler can rerun the identical command after preemption."""
    if not cfg.resume:
        return None
    if cfg.resume != "auto":
        path = Path(cfg.resume)
        return path / f"last_{cfg.bit}.pdckpt" if path.is_dir() else path
    path = Path(cfg.run_dir) / f"last_{cfg.bit}.pdckpt"
    if dist.broadcast_object(path.is_file()):
        return path
    logger.info("--resume auto: no %s yet, starting from %s 1", path, cfg.unit)
    return None


def stop_message(cfg, done):
    """The last line of a run stopped by SIGTERM: from which epoch, and how, it continues."""
    last = Path(cfg.run_dir) / f"last_{cfg.bit}.pdckpt"
    unit = "epoch" if cfg.unit == "epoch" else "block"  # a block: --snapshot-every iterations
    if done >= cfg.rounds:
        return f"stopped by SIGTERM after the last {unit} ({done}); {last} is complete"
    how = ("rerun the same command (--resume auto)" if cfg.resume == "auto"
           else f"rerun with --resume {last} (or --resume auto)")
    if done == 0:
        return f"stopped by SIGTERM during {unit} 1, before any checkpoint: {how} starts again from {unit} 1"
    return f"stopped by SIGTERM during {unit} {done + 1}: {last} holds {unit} {done}; {how} to continue from {unit} " \
           f"{done + 1}"


def save_retrieval_codes(cfg, codes, checkpoint_path):
    """The database codes of the best checkpoint, from its evaluation, in the database-code cache where predict.py
    and serve.py look for a run's (<run folder>/retrieval, utils/retrieval/search.py): they search at once. Rank 0."""
    if not dist.is_main_process():
        return
    from utils.retrieval import search as retrieval
    from utils.retrieval.database import Database
    from utils.runtime.fileio import file_fingerprint
    database = Database(cfg.dataset, cfg.data_path, cfg.list_dir, getattr(cfg, "path_prefix", None))
    identity = retrieval.cache_identity(cfg.bit, file_fingerprint(checkpoint_path), database, cfg.resize_size,
                                        cfg.crop_size, cfg.resize_mode)
    retrieval.save_codes(Path(cfg.run_dir) / "retrieval", codes, identity)


def write_plots(cfg, logger):
    """PR / P@N / training-curve PNGs next to metrics.json (rank 0, unless --plots false); a plotting failure never
    fails a finished run."""
    if not dist.is_main_process() or not cfg.plots:
        return
    try:
        paths = save_metric_plots(Path(cfg.run_dir) / "metrics.json", cfg.run_dir)
        logger.info("plots: %s", ", ".join(p.name for p in paths))
    except (ValueError, OSError) as err:
        logger.warning("plots not written: %s", err)


# ------------------------------------------------------------------------------------------------------- the runs
def setup(cfg):
    """Device, seeds, run folder (rank 0's name wins), logger, config.json."""
    dist.select_device(cfg.device)
    if cfg.num_workers is None:
        cfg.num_workers = dist.default_num_workers()  # here, where the processes sharing this machine are known
    cfg.run_dir = dist.broadcast_object(cfg.run_dir)
    logger = setup_logger(cfg.run_dir, cfg.log_path)
    checkpoint.save_json(vars(cfg), Path(cfg.run_dir) / "config.json")
    logger.info("config: %s", " ".join(f"{k}={v}" for k, v in sorted(vars(cfg).items())))
    logger.info("world size %d, device %s, paddle %s", dist.get_world_size(), paddle.get_device(),
                paddle.__version__)
    dist.seed_everything(cfg.seed)
    return logger


def run_eval(cfg):
    """--eval: evaluate a checkpoint and write metrics.json in the run folder."""
    logger = setup(cfg)
    model = build_model(cfg, logger, weights=cfg.pretrained)
    datasets, loaders = build_data(cfg, logger)
    metrics = evaluate(model, loaders, cfg, logger=logger)
    logger.info("%s: mAP@%d = %.4f (random codes %.4f)", cfg.pretrained, metrics["topk"], metrics["map"],
                metrics["map_random_codes"])
    checkpoint.save_json({"checkpoint": str(cfg.pretrained), "final": metrics}, Path(cfg.run_dir) / "metrics.json")
    write_plots(cfg, logger)
    return metrics


def run_train(cfg, wrap_model=None):
    """Train with periodic evaluation, best/last checkpoints, per-epoch rows; returns the final metrics dict."""
    logger = setup(cfg)
    run_dir = Path(cfg.run_dir)
    resume = resolve_resume(cfg, logger)
    model = build_model(cfg, logger, weights=resume, what=RESUME_FILE) if resume else \
        build_model(cfg, logger, weights=cfg.pretrained)
    datasets, loaders = build_data(cfg, logger)
    num_classes = datasets["train"].labels.shape[1]
    criterion = build_criterion(cfg, len(datasets["train"]), num_classes)
    optimizer, scheduler = build_optimizer(cfg, model)
    logger.info("data: %d train, %d query, %d database images, %d classes", len(datasets["train"]),
                len(datasets["test"]), len(datasets["database"]), num_classes)
    cfg.world_size, cfg.steps_per_epoch = dist.get_world_size(), len(loaders["train"])
    if cfg.recipe == "paper":
        logger.info("paper recipe: %d iterations of 2 x %d images (two shuffled streams; %d per process), in blocks "
                    "of %d iterations", cfg.iterations, cfg.batch_size, 2 * cfg.batch_size // cfg.world_size,
                    cfg.snapshot_every)
    else:
        logger.info("%s", describe(cfg.sampling, len(datasets["train"]), cfg.batch_size, cfg.world_size,
                                   cfg.steps_per_epoch))
    checkpoint.save_json(vars(cfg), run_dir / "config.json")  # again, now with the steps per epoch

    start_epoch, best, frozen = 1, {"map": -1.0, "epoch": 0}, None
    if resume:
        done, best, frozen = load_training_state(resume, optimizer, scheduler, criterion)
        start_epoch = done + 1
        keep_epoch_rows(run_dir / "epochs.jsonl", done)  # rows of an epoch whose checkpoint never got written
        logger.info("resumed from %s after %s %d (best mAP %.4f at %s %d)", resume, cfg.unit, in_units(cfg, done),
                    best["map"], cfg.unit, in_units(cfg, best["epoch"]))
        if done >= cfg.rounds:
            logger.info("all %d %ss were already trained; nothing to do (raise %s to train longer)", cfg.rounds,
                        "epoch" if cfg.unit == "epoch" else "block",
                        "--epochs" if cfg.unit == "epoch" else "--iterations")
    fit = not resume and cfg.standardize_features and not cfg.pretrained
    train_batches, encode_split, trained = loaders["train"], None, model
    if cfg.train_scope == "hash" and start_epoch <= cfg.rounds:  # a frozen backbone runs once, the hash layer trains
        train_batches, encode_split = frozen_backbone_sources(model, datasets, cfg, logger, fit)
        trained = model.hash_layer
        # written once; the checkpoints then hold only what the run changes (utils/train/checkpoint.py)
        frozen = checkpoint.save_frozen_backbone(model, run_dir / f"frozen_backbone_{cfg.bit}.pdparams", frozen)
    elif fit:
        fit_feature_standardization(model, loaders["train_eval"], logger)
    net = wrap_model(trained) if wrap_model else trained

    last_path, final = run_dir / f"last_{cfg.bit}.pdckpt", None
    # SIGTERM (preemption) stops the run at once, saying from which epoch the last checkpoint continues
    guard = preemption.SigtermGuard(lambda done: logger.error("%s", stop_message(cfg, done)), done=start_epoch - 1)
    guard.install()
    for epoch in range(start_epoch, cfg.rounds + 1):
        dist.seed_everything(cfg.seed, epoch)
        row = train_one_epoch(net, criterion, optimizer, train_batches, epoch, cfg, logger)
        scheduler.step()
        # BatchNorm's running statistics are each process's own (DataParallel all-reduces gradients, not them; no
        # SyncBN, as in the authors' code): every rank takes rank 0's, which its checkpoint keeps, so that each
        # evaluation shard is encoded by the checkpoint's network and a resume continues exactly
        dist.broadcast_layer(model, suffixes=BATCHNORM_STATISTICS)
        logger.info("%s done: loss %.4f, lr %.6g, scale %.4f, %.1f s", round_name(cfg, epoch), row["loss"],
                    row["lr"], row["scale"], row["time"])
        if epoch % cfg.eval_rounds == 0 or epoch == cfg.rounds:
            final, db_codes = evaluate(model, loaders, cfg, encode_split, return_codes=True, logger=logger)
            row.update(map=final["map"], map_random_codes=final["map_random_codes"])
            if final["map"] > best["map"]:
                best = {"map": final["map"], "epoch": epoch, "metrics": final}
                best_path = checkpoint.save_weights(model, run_dir / f"model_best_{cfg.bit}.pdparams", frozen)
                checkpoint.save(optimizer.state_dict(), run_dir / f"model_best_{cfg.bit}.pdopt")
                save_retrieval_codes(cfg, db_codes, best_path)
            logger.info("%s mAP@%d: %.4f (best %.4f at %s %d; random codes %.4f)", round_name(cfg, epoch),
                        final["topk"], final["map"], best["map"], cfg.unit, in_units(cfg, best["epoch"]),
                        final["map_random_codes"])
            record = {"final_epoch": epoch, "final": final, "best_epoch": best["epoch"], "best": best.get("metrics"),
                      "selection": "best epoch chosen on the query set"}
            if cfg.unit == "iteration":  # the rounds are blocks: say which iterations they end
                record.update(final_iteration=in_units(cfg, epoch), best_iteration=in_units(cfg, best["epoch"]),
                              selection="best block chosen on the query set")
            checkpoint.save_json(record, run_dir / "metrics.json")
        with guard.deferred():  # the epoch's row and checkpoint are written whole before a SIGTERM acts
            append_jsonl(run_dir / "epochs.jsonl", row)
            save_training_state(last_path, model, optimizer, scheduler, criterion, epoch, best, cfg, frozen)
            guard.done = epoch
    guard.uninstall()
    if final is not None:
        logger.info("finished: final %s %d mAP@%d %.4f; best %s %d mAP %.4f (best is chosen on the query set, so it "
                    "is optimistic; the final %s's number is the unselected one)", cfg.unit,
                    in_units(cfg, cfg.rounds), final["topk"], final["map"], cfg.unit, in_units(cfg, best["epoch"]),
                    best["map"], cfg.unit)
        write_plots(cfg, logger)
    dist.barrier()
    return {"final": final, "best": best, "run_dir": str(run_dir)}


def run(cfg, wrap_model=None):
    """The top level of a training or evaluation process: a failure anywhere (a bad image met by a DataLoader
    thread or worker included) ends the process at once with its cause as the last line (utils/runtime/failure.py)."""
    return run_or_end_process(lambda: run_eval(cfg) if cfg.eval else run_train(cfg, wrap_model))
