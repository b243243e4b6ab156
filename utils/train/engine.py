"""The engine every training entry point runs: the loop of rounds (train, evaluate, checkpoint) and --eval.

A round is what the recipe makes it (utils/train/recipes: an epoch, or a block of iterations); the engine asks the
recipe for its sampler, criterion, optimizer and how to name a round, and never asks which recipe it runs.
Single-device training is the world-size-1 case of the same code: data always goes through a distributed batch
sampler (utils/datasets/sampling.py for the training set), and the multi-GPU entry only adds `init_parallel_env` and
`DataParallel`. What the run is made of is built by utils/train/build.py; evaluation is utils/train/evaluation.py.
"""
import time
from pathlib import Path

import paddle
from tqdm import tqdm

from models.pretrained import BATCHNORM_STATISTICS
from utils.config.methods import is_shallow
from utils.hashing.plots import save_metric_plots
from utils.runtime import dist, integrity
from utils.runtime.errors import UsageError, UserError
from utils.runtime.failure import run_or_end_process
from utils.runtime.fileio import save_arrays
from utils.train import checkpoint, preemption, run_lock
from utils.train.build import RESUME_FILE, build_data, build_model, fit_feature_standardization, frozen_backbone_sources
from utils.train.evaluation import evaluate
from utils.train.logger import AverageMeter, append_jsonl, keep_epoch_rows, rows_total, setup_logger
from utils.train.recipes import recipe_for


def train_one_epoch(model, criterion, optimizer, loader, epoch, cfg, logger):
    """One round of this rank's batches, as the recipe draws them: an epoch (--sampling), or in the paper recipe one
    block of --snapshot-every iterations (utils/datasets/sampling.TwoStreamBatchSampler). Returns {'loss' (mean over
    ranks), 'lr', 'scale', 'steps', ...} and the recipe's own fields (Recipe.row_fields).

    `loader` yields (inputs, labels, index) batches of `model`'s inputs: the training images (a DataLoader), or with a
    frozen backbone their cached features for the hash layer alone (utils/train/frozen.FeatureLoader).
    """
    recipe = recipe_for(cfg)
    # the from-scratch recipe trains only the hash layer on fixed features: no dropout in the frozen backbone
    model.train() if cfg.train_scope == "all" else model.eval()
    recipe.start_round(criterion, epoch)
    loader.batch_sampler.set_epoch(epoch)  # shuffle keyed by (seed, epoch), and the rank when replicated
    loader.dataset.set_epoch(epoch)
    lr = optimizer.get_lr()
    meter, start, num_steps = AverageMeter(), time.time(), len(loader)
    bar = tqdm(loader, desc=recipe.round_name(epoch), disable=not dist.is_main_process(), leave=False)
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
            logger.info("%s, Step[%04d/%04d], Loss: %.4f, lr: %.6g, scale: %.4f", recipe.round_name(epoch), step,
                        num_steps, dist.all_reduce_mean(meter.avg), optimizer.get_lr(), criterion.scale)
    row = {"epoch": epoch, "loss": dist.all_reduce_mean(meter.avg), "lr": lr, "scale": criterion.scale,
           "steps": num_steps, "sampling": cfg.sampling, "world_size": dist.get_world_size(),
           "time": time.time() - start}
    row.update(recipe.row_fields(epoch, optimizer))
    return row


# ------------------------------------------------------------------------------------------------------ checkpoint
def save_training_state(path, model, optimizer, scheduler, criterion, epoch, best, cfg, frozen=None):
    """Everything a resumed run needs (`frozen`: the frozen backbone's file reference, utils/train/checkpoint.py). The
    random state is not stored as such: every epoch reseeds paddle, numpy and python from (seed + rank, epoch) and
    augmentation from (seed, epoch, index), so seed and epoch determine it."""
    checkpoint.save({**checkpoint.model_entries(model, frozen), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "criterion": criterion.state_dict(), "epoch": epoch,
                     "best": best, "bit": cfg.bit, "config": vars(cfg)}, path,
                    holds=held(cfg, "the last checkpoint", epoch), keep_previous=True)


def held(cfg, what, epoch=None):
    """What a checkpoint holds, for its checksum sidecar and the messages naming it: 'the best model of run X,
    epoch 12' (utils/runtime/integrity.py)."""
    recipe = recipe_for(cfg)
    at = "" if epoch is None else f", {recipe.unit} {recipe.in_units(epoch)}"
    return f"{what} of run {Path(cfg.run_dir).name}{at}"


def load_training_state(path, optimizer, scheduler, criterion):
    """Restore what save_training_state wrote besides the model (build_model(weights=path) loads that); returns
    (epoch finished, best-so-far dict, the frozen backbone's file reference or None)."""
    state = checkpoint.load(path, RESUME_FILE)
    optimizer.set_state_dict(state["optimizer"])
    scheduler.set_state_dict(state["scheduler"])
    criterion.set_state_dict(state["criterion"])
    return int(state["epoch"]), state["best"], state.get(checkpoint.FROZEN_BACKBONE)


def resolve_resume(recipe, logger):
    """The checkpoint to continue from: --resume PATH as given; --resume auto, the run folder's last_<bit>.pdckpt when
    rank 0 sees one, else None (a fresh start), so a scheduler can rerun the identical command after preemption."""
    cfg = recipe.cfg
    if not cfg.resume:
        return None
    if cfg.resume != "auto":
        path = Path(cfg.resume)
        return path / f"last_{cfg.bit}.pdckpt" if path.is_dir() else path
    choice = {}
    if dist.is_main_process():  # rank 0 chooses (or refuses), every rank takes its answer
        try:
            choice = {"path": auto_resume_file(Path(cfg.run_dir) / f"last_{cfg.bit}.pdckpt", logger)}
        except UserError as err:
            choice = {"refused": err}
    choice = dist.broadcast_object(choice)
    if "refused" in choice:
        raise choice["refused"]
    if choice["path"]:
        return Path(choice["path"])
    logger.info("--resume auto: no %s yet, starting from %s 1", Path(cfg.run_dir) / f"last_{cfg.bit}.pdckpt",
                recipe.unit)
    return None


def auto_resume_file(last, logger):
    """(rank 0) The checkpoint --resume auto continues from: `last`, or when it is missing or damaged the previous
    one kept beside it (utils/runtime/integrity.py), saying so; None when there is neither (a fresh start)."""
    previous = integrity.previous_path(last)
    if not last.is_file() and not previous.is_file():
        return None
    reason = "is missing" if not last.is_file() else integrity.damage(last)[1]
    if not reason:
        return str(last)
    if not integrity.is_intact(previous):
        raise UsageError(integrity.refusal(last, reason, integrity.holds(last, what="the last checkpoint"),
                                           checkpoint.alternatives(last)))
    logger.warning("--resume auto: %s %s; continuing from the previous checkpoint %s (%s)", last, reason, previous,
                   integrity.holds(previous))
    return str(previous)


def stop_message(recipe, done):
    """The last line of a run stopped by SIGTERM: from which round (an epoch, or a block of iterations), and how, it
    continues."""
    cfg, unit = recipe.cfg, recipe.round_word
    last = Path(cfg.run_dir) / f"last_{cfg.bit}.pdckpt"
    if done >= cfg.rounds:
        return f"stopped by SIGTERM after the last {unit} ({done}); {last} is complete"
    how = ("rerun the same command (--resume auto)" if cfg.resume == "auto"
           else f"rerun with --resume {last} (or --resume auto)")
    if done == 0:
        return f"stopped by SIGTERM during {unit} 1, before any checkpoint: {how} starts again from {unit} 1"
    return f"stopped by SIGTERM during {unit} {done + 1}: {last} holds {unit} {done}; {how} to continue from {unit} " \
           f"{done + 1}"


def announce_stop(message, logger):
    """The stop line, in the log and, under the launcher, on its console too (where workerlog.0 no longer shows)."""
    logger.error("%s", message)
    dist.echo_to_launcher_console(message)


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


def save_query_outputs(cfg, outputs, labels):
    """The queries' raw hash-layer outputs of the latest evaluation and their labels (rank 0), for the report's
    histograms and code maps (scripts/report_method_figures.py): query_outputs_{bit}.npz in the run folder."""
    if dist.is_main_process():
        save_arrays(Path(cfg.run_dir) / f"query_outputs_{cfg.bit}.npz", outputs=outputs.astype("float32"),
                    labels=labels.astype("uint8"))


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
def claim_on_main_process(cfg):
    """Rank 0 claims the run folder (utils/train/run_lock.py: its lock, a fresh folder for a default name, no earlier
    run overwritten) before anything is written there; every rank gets the folder, or raises rank 0's refusal."""
    claim = None
    if dist.is_main_process():
        try:
            note = run_lock.claim_run_folder(cfg, training=not cfg.eval)
            claim = {"run_dir": cfg.run_dir, "run_name": cfg.run_name, "note": note}
        except UserError as err:
            claim = {"refused": err}
    claim = dist.broadcast_object(claim)
    if "refused" in claim:
        raise claim["refused"]
    return claim


def setup(cfg):
    """Device, seeds, run folder (rank 0's, locked), logger, config.json."""
    dist.select_device(cfg.device)
    if cfg.num_workers is None:
        cfg.num_workers = dist.default_num_workers()  # here, where the processes sharing this machine are known
    claim = claim_on_main_process(cfg)
    cfg.run_dir, cfg.run_name = claim["run_dir"], claim["run_name"]
    logger = setup_logger(cfg.run_dir, cfg.log_path)
    if claim["note"]:
        logger.info("%s", claim["note"])
    checkpoint.save_json(vars(cfg), Path(cfg.run_dir) / "config.json")
    logger.info("config: %s", " ".join(f"{k}={v}" for k, v in sorted(vars(cfg).items())))
    logger.info("world size %d, device %s, paddle %s", dist.get_world_size(), paddle.get_device(),
                paddle.__version__)
    dist.seed_everything(cfg.seed)
    return logger


def run_eval(cfg):
    """--eval: evaluate a checkpoint and write metrics.json in the run folder (by default beside the checkpoint's
    run folder, utils/train/options.py). The folder is made only once the checkpoint and the data have loaded, so
    an evaluation that cannot start leaves nothing behind (those first lines go to the console only)."""
    dist.select_device(cfg.device)
    if cfg.num_workers is None:
        cfg.num_workers = dist.default_num_workers()
    console = setup_logger()
    model = build_model(cfg, console, weights=cfg.pretrained)
    datasets, loaders = build_data(cfg, console)
    logger = setup(cfg)
    metrics = evaluate(model, loaders, cfg, logger=logger)
    logger.info("%s: mAP@%d = %.4f (random codes %.4f)", cfg.pretrained, metrics["topk"], metrics["map"],
                metrics["map_random_codes"])
    checkpoint.save_json({"checkpoint": str(cfg.pretrained), "final": metrics}, Path(cfg.run_dir) / "metrics.json")
    write_plots(cfg, logger)
    return metrics


def run_train(cfg, wrap_model=None):
    """Train with periodic evaluation, best/last checkpoints, per-epoch rows; returns the final metrics dict."""
    logger = setup(cfg)
    run_dir, recipe = Path(cfg.run_dir), recipe_for(cfg)
    resume = resolve_resume(recipe, logger)
    model = build_model(cfg, logger, weights=resume, what=RESUME_FILE) if resume else \
        build_model(cfg, logger, weights=cfg.pretrained)
    datasets, loaders = build_data(cfg, logger)
    num_classes = datasets["train"].labels.shape[1]
    criterion = recipe.criterion(datasets["train"].labels)
    optimizer, scheduler = recipe.optimizer(model)
    logger.info("data: %d train, %d query, %d database images, %d classes", len(datasets["train"]),
                len(datasets["test"]), len(datasets["database"]), num_classes)
    cfg.world_size, cfg.steps_per_epoch = dist.get_world_size(), len(loaders["train"])
    logger.info("%s", recipe.describe_batches(len(datasets["train"]), cfg.steps_per_epoch))
    checkpoint.save_json(vars(cfg), run_dir / "config.json")  # again, now with the steps per epoch

    start_epoch, best, frozen = 1, {"map": -1.0, "epoch": 0}, None
    if resume:
        done, best, frozen = load_training_state(resume, optimizer, scheduler, criterion)
        start_epoch = done + 1
        keep_epoch_rows(run_dir / "epochs.jsonl", done)  # rows of an epoch whose checkpoint never got written
        logger.info("resumed from %s after %s %d (%s)", resume, recipe.unit, recipe.in_units(done),
                    recipe.describe_best(best))
        if done >= cfg.rounds:
            logger.info("all %d %ss were already trained; nothing to do (raise %s to train longer)", cfg.rounds,
                        recipe.round_word, recipe.length_flag)
    fit = not resume and cfg.standardize_features and not cfg.pretrained
    train_batches, encode_split, trained = loaders["train"], None, model
    if cfg.train_scope == "hash" and start_epoch <= cfg.rounds:  # a frozen backbone runs once, the hash layer trains
        train_batches, encode_split = frozen_backbone_sources(model, datasets, cfg, logger, fit)
        trained = model.hash_layer
        # written once; the checkpoints then hold only what the run changes (utils/train/checkpoint.py)
        frozen = checkpoint.save_frozen_backbone(model, run_dir / f"frozen_backbone_{cfg.bit}.pdparams", frozen,
                                                 held(cfg, "the frozen backbone"))
    elif fit:
        fit_feature_standardization(model, loaders["train_eval"], logger)
    net = wrap_model(trained) if wrap_model else trained

    last_path, final = run_dir / f"last_{cfg.bit}.pdckpt", None
    # SIGTERM (preemption) stops the run at once, saying from which epoch the last checkpoint continues
    guard = preemption.SigtermGuard(lambda done: announce_stop(stop_message(recipe, done), logger),
                                    done=start_epoch - 1)
    guard.install()
    for epoch in range(start_epoch, cfg.rounds + 1):
        dist.seed_everything(cfg.seed, epoch)
        row = train_one_epoch(net, criterion, optimizer, train_batches, epoch, cfg, logger)
        scheduler.step()
        # BatchNorm's running statistics are each process's own (DataParallel all-reduces gradients, not them; no
        # SyncBN, as in the authors' code): every rank takes rank 0's, which its checkpoint keeps, so that each
        # evaluation shard is encoded by the checkpoint's network and a resume continues exactly
        dist.broadcast_layer(model, suffixes=BATCHNORM_STATISTICS)
        logger.info("%s done: loss %.4f, lr %.6g, scale %.4f, %.1f s", recipe.round_name(epoch), row["loss"],
                    row["lr"], row["scale"], row["time"])
        if epoch % cfg.eval_rounds == 0 or epoch == cfg.rounds:
            final, db_codes, queries = evaluate(model, loaders, cfg, encode_split, return_codes=True, logger=logger)
            save_query_outputs(cfg, *queries)
            row.update(map=final["map"], map_random_codes=final["map_random_codes"])
            if final["map"] > best["map"]:
                best = {"map": final["map"], "epoch": epoch, "metrics": final}
                best_path = checkpoint.save_weights(model, run_dir / f"model_best_{cfg.bit}.pdparams", frozen,
                                                    held(cfg, "the best model", epoch))
                checkpoint.save(optimizer.state_dict(), run_dir / f"model_best_{cfg.bit}.pdopt",
                                held(cfg, "the optimizer state of the best model", epoch))
                save_retrieval_codes(cfg, db_codes, best_path)
            logger.info("%s mAP@%d: %.4f (best %.4f at %s %d; random codes %.4f)", recipe.round_name(epoch),
                        final["topk"], final["map"], best["map"], recipe.unit, recipe.in_units(best["epoch"]),
                        final["map_random_codes"])
            record = {"final_epoch": epoch, "final": final, "best_epoch": best["epoch"], "best": best.get("metrics"),
                      "selection": "best epoch chosen on the query set", "method": cfg.method,
                      "train_time": rows_total(run_dir / "epochs.jsonl", "time") + row["time"], "scale": row["scale"]}
            record.update(recipe.record_fields(epoch, best["epoch"]))
            checkpoint.save_json(record, run_dir / "metrics.json")
        with guard.deferred():  # the epoch's row and checkpoint are written whole before a SIGTERM acts
            append_jsonl(run_dir / "epochs.jsonl", row)
            save_training_state(last_path, model, optimizer, scheduler, criterion, epoch, best, cfg, frozen)
            guard.done = epoch
    guard.uninstall()
    if final is not None:
        logger.info("finished: final %s %d mAP@%d %.4f; best %s %d mAP %.4f (best is chosen on the query set, so it "
                    "is optimistic; the final %s's number is the unselected one)", recipe.unit,
                    recipe.in_units(cfg.rounds), final["topk"], final["map"], recipe.unit,
                    recipe.in_units(best["epoch"]), best["map"], recipe.unit)
        write_plots(cfg, logger)
    dist.barrier()
    return {"final": final, "best": best, "run_dir": str(run_dir)}


def run(cfg, wrap_model=None):
    """The top level of a training or evaluation process: a failure anywhere (a bad image met by a DataLoader
    thread or worker included) ends the process at once with its cause as the last line (utils/runtime/failure.py)."""
    if is_shallow(cfg.method):
        from utils.train.shallow_run import run_shallow
        return run_or_end_process(lambda: run_shallow(cfg, setup))
    return run_or_end_process(lambda: run_eval(cfg) if cfg.eval else run_train(cfg, wrap_model))
