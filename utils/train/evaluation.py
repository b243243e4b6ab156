"""Encoding and evaluation: a model's outputs over a loader gathered from every process in dataset order, ±1 codes,
and mAP@K with the paper-style metrics of the query set against the database (utils/hashing/metrics.py).
"""
import time

import numpy as np
import paddle
from tqdm import tqdm

from utils.hashing.codes import binarize, sign_codes
from utils.hashing.metrics import CalcTopMap, retrieval_metrics
from utils.retrieval import fast_encoder
from utils.runtime import dist


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
    return_codes, (metrics, the database's ±1 codes, (the queries' raw outputs, their labels)).

    encode_split(split, desc) -> (outputs, labels) of loaders[split]'s dataset, the hash layer's raw outputs (their
    sign with 0 kept is what the paper rule ranks with, docs/protocol.md#paper-recipe); by default the model encodes
    its images (--encoder: on the CPU a Paddle Inference predictor of the current weights, made afresh for each
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
            model.eval()
            return predict_outputs(encoder, loaders[split], desc)
    setup_time = time.time() - start
    query_outputs, query_labels = encode_split("test", "encode queries")
    db_outputs, db_labels = encode_split("database", "encode database")
    encoded_by = encoded_by or encode_split.encoded_by  # a frozen backbone's: what ran it
    encoder = None  # a predictor holds its own copy of the weights: free it before training goes on
    metrics = None
    if dist.is_main_process():
        metrics = code_metrics(sign_codes(query_outputs), query_labels, sign_codes(db_outputs), db_labels, cfg,
                               len(loaders["train"].dataset))
        metrics.update(eval_time=time.time() - start, encoder=encoded_by, encoder_setup_time=setup_time)
        if logger:
            logger.info("evaluation: %.1f s, encoded by %s (%.1f s of it to make the encoder)", metrics["eval_time"],
                        metrics["encoder"], setup_time)
    metrics = dist.broadcast_object(metrics)
    return (metrics, binarize(db_outputs), (query_outputs, query_labels)) if return_codes else metrics


def code_metrics(query_signs, query_labels, db_signs, db_labels, cfg, num_train):
    """The run's metrics of given codes (±1, or with 0 kept for the paper rule): retrieval_metrics at cfg.map_at (-1:
    the whole database), mAP of random codes of the same length (the level that means nothing was learnt) and the
    protocol's sizes as the lists gave them (scripts/report.py prints them beside the paper's). Every method's codes,
    trained or fitted (utils/train/shallow_run.py), are measured here."""
    topk = len(db_signs) if cfg.map_at < 0 else cfg.map_at
    metrics = retrieval_metrics(db_signs, query_signs, db_labels, query_labels, topk=topk)
    rng = np.random.default_rng(cfg.seed)
    random_db, random_query = (binarize(rng.standard_normal((n, cfg.bit))) for n in (len(db_signs), len(query_signs)))
    metrics["map_random_codes"] = CalcTopMap(random_db, random_query, db_labels, query_labels, topk)
    metrics.update(topk=topk, num_train=num_train, num_query=len(query_signs), num_database=len(db_signs),
                   distinct_query_codes=int(len(np.unique(binarize(query_signs), axis=0))))
    return metrics
