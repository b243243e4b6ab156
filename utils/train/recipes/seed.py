"""The seed repository's recipe (docs/protocol.md#seed-recipe): epochs over the training set (replicated or sharded
over the processes, utils/datasets/sampling.py), HashNetLoss with a memory bank of the training set and a
continuation scale stepped per epoch (utils/losses/hashnet_loss.py), momentum SGD (or Adam/AdamW) whose lr halves
every --lr-step epochs. The ablation's variants (recipes/variants.py): HashNet-W averages the pairs unweighted,
HashNet+C takes the labels' cosine as the pairs' similarity, HashNet-sgn keeps the scale at 1.
"""
import paddle

from utils.datasets.image_list import EpochBatchSampler
from utils.datasets.sampling import TrainBatchSampler, describe
from utils.losses.hashnet_loss import HashNetLoss, continuation_scale
from utils.runtime import dist
from utils.train.recipes.base import Recipe
from utils.train.recipes.variants import variant_of


class SeedRecipe(Recipe):
    name = "seed"
    flags = ("epochs", "alpha", "sampling")

    def train_sampler(self, dataset):
        # the epoch travels with each index (EpochBatchSampler): the training workers live for the whole run
        return EpochBatchSampler(TrainBatchSampler(dataset, self.cfg.batch_size, self.cfg.seed, self.cfg.sampling),
                                 dataset)

    def criterion(self, train_labels):
        variant = variant_of(self.cfg)
        criterion = HashNetLoss(self.cfg.bit, len(train_labels), self.cfg.alpha, train_labels.shape[1],
                                weighted=variant.weighted, continuous_similarity=variant.cosine_similarity)
        if dist.get_world_size() > 1:
            criterion.gather = dist.all_gather_cat
        return criterion

    def optimizer(self, model):
        """lr = base * batch_size * world_size / 64, halved every --lr-step epochs (StepDecay, stepped per epoch)."""
        cfg = self.cfg
        lr = cfg.learning_rate * cfg.batch_size * dist.get_world_size() / 64
        scheduler = paddle.optimizer.lr.StepDecay(learning_rate=lr, step_size=cfg.lr_step, gamma=0.5)
        params = [p for p in model.parameters() if not p.stop_gradient]
        if cfg.optimizer == "sgd":
            optimizer = paddle.optimizer.Momentum(scheduler, momentum=cfg.momentum, parameters=params,
                                                  weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adam":
            optimizer = paddle.optimizer.Adam(scheduler, parameters=params, weight_decay=cfg.weight_decay)
        else:
            optimizer = paddle.optimizer.AdamW(scheduler, parameters=params, weight_decay=cfg.weight_decay)
        return optimizer, scheduler

    def describe_batches(self, num_train, steps):
        return describe(self.cfg.sampling, num_train, self.cfg.batch_size, dist.get_world_size(), steps)

    def start_round(self, criterion, rounds):
        continuation = variant_of(self.cfg).continuation
        criterion.scale = continuation_scale(rounds, self.cfg.continuation_step) if continuation else 1.0
