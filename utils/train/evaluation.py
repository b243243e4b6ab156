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
        topk = len(db_codes) if cfg.map_at < 0 else cfg.map_at
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

