"""Runs the real training entry (main_multi_gpu's worker, or the single-process engine) and records, per rank,
what the distributed tests check: the model it started from (each parameter's sum), the training indices it saw per
epoch, its memory bank after training and the gathered encoding of the database. Written to <run_dir>/rank<r>.npz (a
test artefact, so every rank writes).
With SNAPSHOT_AFTER_EPOCH=E, rank 0 also copies the run folder as it is when epoch E+1 starts (what a run stopped
after epoch E leaves: its checkpoint, rows, best model, log) to <run_dir>_after_epoch<E>, for the resume tests.
With STALL_AFTER_STEP=E:S, epoch E stops for 300 s once its step S is done (and logged), for the signal tests.
RECORD_RANKS=0 skips the recording (a test that only wants the snapshot, without encoding the database again).

    python -m paddle.distributed.launch --nproc_per_node 2 tests/dist_worker.py <main_single_gpu flags>
    python tests/dist_worker.py <flags>          # world size 1
"""
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import utils.runtime.before_paddle  # noqa: E402,F401  (before anything imports paddle: see that module)

import main_multi_gpu  # noqa: E402
from utils.losses.hashnet_loss import HashNetLoss  # noqa: E402
from utils.runtime import dist  # noqa: E402
from utils.train import build, checkpoint, engine, evaluation  # noqa: E402
from utils.train.logger import setup_logger  # noqa: E402
from utils.train.options import parse_args  # noqa: E402

seen, banks = [], []
original_forward, original_init = HashNetLoss.forward, HashNetLoss.__init__


def recording_forward(self, o, y, ind):
    seen.append((engine_epoch[0], ind.numpy().copy()))
    return original_forward(self, o, y, ind)


def recording_init(self, *args, **kwargs):
    original_init(self, *args, **kwargs)
    banks.append(self)


engine_epoch = [0]
original_train_one_epoch, original_build_model = engine.train_one_epoch, build.build_model
built, initial_sums = [], []


def remembering_build_model(cfg, logger, *args, **kwargs):
    """The engine's model, kept so that the recording below loads the checkpoint into it rather than build another
    (a 61-million-parameter AlexNet)."""
    built.append(original_build_model(cfg, logger, *args, **kwargs))
    # what each rank starts from: the sum of each parameter as built (before any training step)
    initial_sums.append(np.array([float(p.numpy().sum(dtype=np.float64)) for p in built[-1].parameters()]))
    return built[-1]


def snapshot_copy(src, dst):
    """The frozen backbone's file is never written again in place (an atomic write makes a new file), so the
    snapshot may share it: a hard link instead of a 230 MB copy. The rest is appended to or replaced: copies."""
    if Path(src).name.startswith("frozen_backbone_"):
        return os.link(src, dst)
    return shutil.copy2(src, dst)


class StalledLoader:
    """The epoch's loader, stopping for `seconds` before the batch after step `step` (that step logged): a signal a
    test sends on seeing the step's log line then lands inside the epoch however fast its steps are."""

    def __init__(self, loader, step, seconds=300):
        self.loader, self.step, self.seconds = loader, step, seconds

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for index, batch in enumerate(self.loader):
            if index == self.step:
                time.sleep(self.seconds)
            yield batch


def tracking_train_one_epoch(model, criterion, optimizer, loader, epoch, cfg, logger):
    engine_epoch[0] = epoch
    snapshot = int(os.environ.get("SNAPSHOT_AFTER_EPOCH", "0"))
    if snapshot and epoch == snapshot + 1 and dist.is_main_process():
        shutil.copytree(cfg.run_dir, f"{cfg.run_dir}_after_epoch{snapshot}", copy_function=snapshot_copy)
    stall_epoch, _, stall_step = os.environ.get("STALL_AFTER_STEP", "0:0").partition(":")
    if epoch == int(stall_epoch):
        loader = StalledLoader(loader, int(stall_step))
    return original_train_one_epoch(model, criterion, optimizer, loader, epoch, cfg, logger)


if __name__ == "__main__":
    HashNetLoss.forward, HashNetLoss.__init__ = recording_forward, recording_init
    engine.train_one_epoch, engine.build_model = tracking_train_one_epoch, remembering_build_model
    cfg = parse_args()
    main_multi_gpu.main(cfg)  # the real entry: a launcher's child is one worker, a bare start one process on CPU
    if os.environ.get("RECORD_RANKS", "1") == "0":
        sys.exit(0)
    # encode the database again with the final weights, through the same sharded + gathered path
    logger = setup_logger()
    weights = cfg.pretrained if cfg.eval else Path(cfg.run_dir) / f"last_{cfg.bit}.pdckpt"
    if built:
        model = checkpoint.load_model_weights(built[0], weights)
    else:
        model = engine.build_model(cfg, logger, weights=weights)  # the recording one: it notes the initial sums
    _, loaders = build.build_data(cfg)
    model.eval()
    raw, labels = evaluation.predict_outputs(model, loaders["database"])
    record = {"db_raw": raw, "db_labels": labels, "initial_sums": initial_sums[0]}
    if seen:
        record.update(seen_epoch=np.concatenate([np.full(len(i), e) for e, i in seen]),
                      seen_index=np.concatenate([i for _, i in seen]), bank_U=banks[0].U.numpy(),
                      bank_Y=banks[0].Y.numpy())
    np.savez(Path(cfg.run_dir) / f"rank{dist.get_rank()}.npz", **record)
