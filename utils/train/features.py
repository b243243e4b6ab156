"""The backbone's fc7 of a dataset's training, query and database images, computed once and cached: what the shallow
baselines are fitted on and encode (the paper's "DeCAF7" features, docs/methods.md#shallow-baselines).

The features are the evaluation view's (Resize + CenterCrop, or the paper recipe's warp + centre crop), by the fast
encoder (--encoder). The cache folder is keyed by everything that makes them: the backbone and its weights file (or,
for a random backbone, its init and seed), the three list files and the image transform. It lives under
<output-dir>/features/, shared by every method and bit width of a comparison; each split is one .npz (fc7 float32 and
labels), written atomically. Several processes: each encodes its shard and the features are gathered
(evaluation.predict_outputs); rank 0 writes.
"""
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from utils.retrieval import fast_encoder
from utils.runtime import dist
from utils.runtime.fileio import atomic_write, file_fingerprint, save_arrays
from utils.train.build import backbone_of, encoding_loader, resolve_backbone_weights
from utils.train.evaluation import predict_outputs

SPLITS = ("train_eval", "test", "database")  # the training images in the evaluation view, queries, database


def cache_key(cfg, datasets, weights):
    """What makes the features, as a short digest, and the record written beside them."""
    record = {
        "backbone": backbone_of(cfg), "crop_size": cfg.crop_size, "resize_size": cfg.resize_size,
        "resize_mode": cfg.resize_mode, "data_path": str(cfg.data_path),
        "weights": {k: v for k, v in file_fingerprint(weights).items() if k != "mtime"} if weights else
        {"init": cfg.init, "seed": cfg.seed},
        "lists": {split: {k: v for k, v in file_fingerprint(datasets[split].list_path).items() if k != "mtime"}
                  for split in SPLITS},
    }
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return digest, record


def backbone_features(build_model, datasets, cfg, logger):
    """{split: (fc7 (n, 4096) float32, labels)} for the SPLITS of `datasets`, from the cache when it holds them;
    build_model() makes the network only when they must be computed (a 61 M-parameter build saved otherwise)."""
    digest, record = cache_key(cfg, datasets, resolve_backbone_weights(cfg, logger))
    folder = Path(cfg.output_dir) / "features" / f"{cfg.dataset}-{backbone_of(cfg)}-{digest}"
    wanted = {split: folder / f"{split}.npz" for split in SPLITS}
    if all(path.is_file() for path in wanted.values()):
        logger.info("fc7 features from the cache %s", folder)
        return {split: _load(path) for split, path in wanted.items()}
    start = time.time()
    model = build_model()
    model.eval()
    images = sum(len(datasets[split]) for split in SPLITS) // dist.get_world_size()
    encoder = fast_encoder.method_encoder(model.fc7, cfg.encoder, cfg.crop_size, images)
    features = {split: predict_outputs(encoder, encoding_loader(datasets[split], cfg), f"fc7 of {split}")
                for split in SPLITS}
    logger.info("fc7 features of %d images computed in %.1f s by %s", sum(len(f[0]) for f in features.values()),
                time.time() - start, fast_encoder.encoder_kind(encoder))
    if dist.is_main_process():
        for split, (fc7, labels) in features.items():
            save_arrays(wanted[split], fc7=fc7.astype(np.float32), labels=labels.astype(np.float32))
        atomic_write(folder / "key.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))
        logger.info("fc7 features cached in %s", folder)
    return features


def _load(path):
    with np.load(path) as data:
        return data["fc7"], data["labels"]
