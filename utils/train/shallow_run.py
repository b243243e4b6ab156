"""A shallow baseline's run (--method lsh, sh, itq, itq-cca, bre, ksh, sdh; docs/methods.md#shallow-baselines): the
backbone's fc7 of the training, query and database images (utils/train/features.py, cached), the method fitted on
the training images' (with their labels when it is supervised), queries and database encoded by it, and the same
metrics as a trained run's (evaluation.code_metrics). The run folder gets what a trained run's does for the report:
config.json, the log, metrics.json (final = the fitted method; no selection), query_outputs_{bit}.npz, plus the fitted
hash functions in shallow_{bit}.npz.
"""
import time
from pathlib import Path

import numpy as np

from utils.hashing.codes import binarize
from utils.runtime import dist
from utils.runtime.fileio import save_arrays
from utils.shallow import SHALLOW_METHODS
from utils.train import checkpoint
from utils.train.build import build_data, build_model
from utils.train.evaluation import code_metrics
from utils.train.features import backbone_features


def run_shallow(cfg, setup):
    """Fit and evaluate cfg.method; returns {"final": metrics, "run_dir": ...}. `setup`: the engine's run setup."""
    logger = setup(cfg)  # seeded before a random backbone is drawn, as a trained run's
    datasets, _ = build_data(cfg, logger)
    # only the backbone's fc7 is used; build_data draws no random number, so the backbone is the trained runs'
    features = backbone_features(lambda: build_model(cfg, logger), datasets, cfg, logger)
    (train, train_labels), (query, query_labels), (database, db_labels) = (features[s] for s in
                                                                          ("train_eval", "test", "database"))
    method = SHALLOW_METHODS[cfg.method](cfg.bit, seed=cfg.seed)
    start = time.time()
    method.fit(train, train_labels if method.supervised else None)
    fit_time = time.time() - start
    start = time.time()
    query_outputs, db_outputs = method.project(query), method.project(database)
    encode_time = time.time() - start
    logger.info("%s fitted on %d training images in %.1f s; %d queries and %d database items encoded in %.1f s",
                cfg.method, len(train), fit_time, len(query), len(database), encode_time)
    metrics = None
    if dist.is_main_process():
        metrics = code_metrics(binarize(query_outputs), query_labels, binarize(db_outputs), db_labels, cfg, len(train))
        metrics.update(fit_time=fit_time, encode_time=encode_time, encoder="fc7 + " + cfg.method)
        run_dir = Path(cfg.run_dir)
        save_arrays(run_dir / f"shallow_{cfg.bit}.npz", **method.state_dict())
        save_arrays(run_dir / f"query_outputs_{cfg.bit}.npz", outputs=query_outputs.astype(np.float32),
                    labels=query_labels.astype(np.uint8))
        checkpoint.save_json({"final": metrics, "best": None, "method": cfg.method, "train_time": fit_time,
                              "selection": "none: fitted once on the training set"}, run_dir / "metrics.json")
        logger.info("%s %d bits: mAP@%d %.4f (random codes %.4f)", cfg.method, cfg.bit, metrics["topk"],
                    metrics["map"], metrics["map_random_codes"])
    dist.barrier()
    return {"final": metrics, "run_dir": cfg.run_dir}

