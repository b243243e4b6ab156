"""A frozen backbone is run once per run (--train-scope hash, the toy preset's recipe).

With --train-scope hash only the hash layer (one 4096 x bit linear) learns, and the backbone, in eval mode (no
dropout), gives an image the same standardised fc7 in every epoch. So rather than run it over every training image
every epoch and over queries and database at every evaluation:
- training: the fc7 of the training images is computed once per run (per view, below). Every epoch the same
  TrainBatchSampler draws its batches from FeatureDataset as it would from the images, and they go through the hash
  layer alone: FeatureLoader is what engine.train_one_epoch iterates instead of the images' DataLoader;
- evaluation: the first evaluation runs the backbone over queries and database (EvalFeatures), every later one
  applies only the hash layer, in the loader's batch shapes: in one process the codes equal the image path's bit
  for bit (an `--eval` run of the checkpoint reproduces the logged mAP).
Features are gathered from every rank in dataset order (engine.predict_outputs), so every process holds all of them
in float32, 4,096 floats per image and view (the sizes: docs/training.md#the-frozen-backbone-views-time-and-memory).

Augmentation, --frozen-views N:
- 0: each training image's evaluation view (Resize + CenterCrop), the images the from-scratch recipe's fc7
  statistics are fitted on, so one backbone pass serves both;
- N > 0: N views drawn by the training transform (RandomCrop + RandomHorizontalFlip). View k is the crop the image
  path draws in epoch k (ImageList seeds it by (seed, epoch, index)) and epoch e trains on view (e - 1) % N + 1, so
  with N >= --epochs every epoch sees the crops training on the images would (to float rounding: the backbone runs on
  other batches). Each view is one more backbone pass over the training set.
0 is the default because on the toy demo no augmentation was both the best and the fastest: random crops wake fc7
units that are constant on the evaluation crops the standardisation is fitted on, and they become outliers that
evaluation never produces (the measurements: docs/training.md#the-frozen-backbone-views-time-and-memory).

A resumed run recomputes the features with the checkpoint's backbone and standardisation through this same code,
so it continues bit for bit.

This module sits below the engine, which hands it (engine.frozen_backbone_sources) the standardisation's fit and
`outputs_of(dataset, desc) -> (fc7, labels)`: the backbone over every item of a dataset, in dataset order on every
rank. Only fc7 is ever asked of the backbone (the standardisation is applied here), so the engine makes one encoder
of it per run, which serves the training set and every evaluation: on the CPU a Paddle Inference predictor unless
the run is too small to repay making one (--encoder auto, fast_encoder.PREDICTOR_MIN_PIXELS).
"""
import time

import numpy as np
import paddle

from utils.datasets.sampling import TrainBatchSampler


class FeatureDataset:
    """The training set as features: views (V, n, 4096) float32 and labels (n, C); epoch e reads view (e - 1) % V."""

    def __init__(self, views, labels):
        self.views, self.labels, self.epoch = views, np.asarray(labels, dtype=np.float32), 0
        if len(self.labels) != self.views.shape[1]:
            raise ValueError(f"{self.views.shape[1]} features per view but {len(self.labels)} labels")

    def __len__(self):
        return self.views.shape[1]

    def set_epoch(self, epoch):
        self.epoch = epoch

    def batch(self, indices):
        """(features, labels, indices) tensors of these items in this epoch's view, as the images' loader gives
        (images, labels, indices)."""
        indices = np.asarray(indices, dtype=np.int64)
        view = self.views[(self.epoch - 1) % len(self.views)]
        return paddle.to_tensor(view[indices]), paddle.to_tensor(self.labels[indices]), paddle.to_tensor(indices)


class FeatureLoader:
    """The batches of a FeatureDataset drawn by a TrainBatchSampler: what train_one_epoch needs of a loader
    (batch_sampler.set_epoch, dataset.set_epoch, len, iteration)."""

    def __init__(self, dataset, batch_sampler):
        self.dataset, self.batch_sampler = dataset, batch_sampler

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        for indices in self.batch_sampler:
            yield self.dataset.batch(indices)


def fc7_of(dataset, outputs_of, desc, epoch=None):
    """fc7 (before the standardisation) of every item of `dataset`, in dataset order on every rank; `epoch` picks the
    random crops of a training dataset."""
    if epoch is not None:
        dataset.set_epoch(epoch)
    return outputs_of(dataset, desc)[0]


@paddle.no_grad()
def standardized(model, fc7):
    return model.standardize(paddle.to_tensor(fc7)).numpy()


def training_loader(model, datasets, cfg, logger, outputs_of, fit=None):
    """The FeatureLoader of the training set's features (--frozen-views), computed here once. fit(fc7), given in a
    fresh from-scratch run, fits the standardisation first, on the evaluation view's fc7."""
    model.eval()  # no dropout: a feature is a function of the image
    start, num_views = time.time(), cfg.frozen_views
    center = None
    if num_views == 0 or fit:
        center = fc7_of(datasets["train_eval"], outputs_of, "fc7 of the training images")
    if fit:
        fit(center)
    if num_views == 0:
        views = standardized(model, center)[None]
    else:
        views = np.stack([standardized(model, fc7_of(datasets["train"], outputs_of,
                                                     f"fc7 of training view {k}/{num_views}", epoch=k))
                          for k in range(1, num_views + 1)])
    what = "the evaluation view" if num_views == 0 else f"{num_views} random view(s)"
    logger.info("frozen backbone: fc7 of the %d training images (%s) computed once, %.1f s, %.0f MB; the hash layer "
                "trains on them", views.shape[1], what, time.time() - start, views.nbytes / 1e6)
    dataset = FeatureDataset(views, datasets["train"].labels)
    return FeatureLoader(dataset, TrainBatchSampler(dataset, cfg.batch_size, cfg.seed, cfg.sampling))


@paddle.no_grad()
def hash_outputs(hash_layer, features, batch_size):
    """The hash layer over features (n, 4096), batch_size rows at a time: the shapes encoding the images gives it,
    so (in one process) the same floats."""
    return np.concatenate([hash_layer(paddle.to_tensor(features[start:start + batch_size])).numpy()
                           for start in range(0, len(features), batch_size)])


class EvalFeatures:
    """The queries' and the database's features (datasets 'test' and 'database'), computed by the backbone at the
    first evaluation (after the standardisation is fitted: it is part of them); called as (split, desc) -> (outputs,
    labels) through the hash layer alone: evaluation.evaluate's encode_split. The outputs are the image path's.
    encoder_kind() names what ran the backbone (fast_encoder.encoder_kind)."""

    def __init__(self, model, datasets, batch_size, logger, outputs_of, encoder_kind):
        self.model, self.datasets, self.batch_size, self.logger = model, datasets, batch_size, logger
        self.outputs_of, self.encoder_kind, self.features = outputs_of, encoder_kind, {}

    @property
    def encoded_by(self):
        return self.encoder_kind()

    def __call__(self, split, desc):
        if split not in self.features:
            start = time.time()
            self.model.eval()  # no dropout (the dynamic-graph encoder runs the layer as it is)
            fc7, labels = self.outputs_of(self.datasets[split], desc)
            self.features[split] = standardized(self.model, fc7), labels
            self.logger.info("frozen backbone: features of the %d %s images computed once, %.1f s; evaluations apply "
                             "only the hash layer to them", len(self.features[split][0]),
                             {"test": "query"}.get(split, split), time.time() - start)
        features, labels = self.features[split]
        return hash_outputs(self.model.hash_layer, features, self.batch_size), labels
