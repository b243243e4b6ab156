"""The authors' Caffe recipe that produced the paper's Table 1 (docs/protocol.md#paper-recipe): iterations of two
independently shuffled streams (utils/datasets/sampling.TwoStreamBatchSampler), the hash layer's outputs through
ScaleTanH (a continuation stepped per iteration, utils/losses/scale_tanh.py) into the pairwise loss between the two
halves (utils/losses/pairwise_loss.py), and Caffe's solver (utils/optim/caffe_sgd.py). The loop's rounds are blocks of
--snapshot-every iterations (Caffe's snapshot interval: a checkpoint and a log row each). The ablation's variants
(recipes/variants.py) are settings of the same layers: HashNet-W weighs every pair 1 (--class-num 1, no
--continuous-similarity), HashNet-sgn keeps the scale at 1 (--scale-gamma 0), HashNet+C gives PairwiseLoss the
labels' cosine as the pairs' similarity.
"""
from utils.config.presets import preset_for
from utils.datasets.sampling import TwoStreamBatchSampler
from utils.losses.pairwise_loss import PairwiseLoss
from utils.losses.scale_tanh import ScaleTanH
from utils.optim.caffe_sgd import CaffeSGD
from utils.runtime import dist
from utils.runtime.errors import UsageError
from utils.train.recipes.base import Recipe
from utils.train.recipes.variants import variant_of


class PaperCriterion:
    """criterion(outputs, labels, index) -> loss, as the engine calls the seed's HashNetLoss: the hash layer's raw
    outputs go through ScaleTanH, stepped once per training forward pass, then PairwiseLoss. `index` is not used
    (no memory bank). state_dict() holds the continuation's counter, so a resumed run goes on with the same scales.

    Several processes: the pairs are built over every rank's halves (PairwiseLoss.distribute).
    """

    def __init__(self, cfg):
        self.continuation = ScaleTanH(init_scale=1.0, gamma=cfg.scale_gamma, power=cfg.scale_power,
                                      step_size=cfg.continuation_step)
        self.loss = PairwiseLoss(cfg.sigmoid_param, cfg.class_num, cfg.loss_threshold, cfg.continuous_similarity,
                                 cosine_similarity=variant_of(cfg).cosine_similarity)
        if dist.get_world_size() > 1:
            self.loss.distribute(dist.all_gather_cat, dist.get_rank(), dist.get_world_size())

    @property
    def scale(self):
        return self.continuation.scale

    def __call__(self, outputs, labels, index=None):
        self.continuation.step()
        return self.loss(self.continuation(outputs), labels)

    def state_dict(self):
        return {"continuation": self.continuation.state_dict()}

    def set_state_dict(self, state):
        self.continuation.set_state_dict(state["continuation"])


class SolverSchedule:
    """The engine steps its learning-rate scheduler once per round; Caffe's solver steps its own once per iteration
    (CaffeSGD), so the round's step is nothing here and its state lives in the optimizer's."""

    def step(self):
        pass

    def state_dict(self):
        return {}

    def set_state_dict(self, state):
        pass


class PaperRecipe(Recipe):
    name = "paper"
    flags = ("iterations", "snapshot_every", "sigmoid_param", "class_num", "loss_threshold", "continuous_similarity",
             "scale_gamma", "scale_power")
    unit = "iteration"
    round_word = "block"  # --snapshot-every iterations
    length_flag = "--iterations"

    def resolve(self, given, spelled):
        """--lr-step, --continuation-step and --eval-every count iterations; a round is a block of --snapshot-every
        of them. The whole network trains, as the authors' did; --sigmoid-param defaults to 10 / bits."""
        cfg = self.cfg
        if "backbone" not in given:  # --backbone's default is the seed recipe's AlexNet
            cfg.backbone = preset_for(cfg.dataset, self.name)["backbone"]
        if cfg.frozen_views:
            raise UsageError(f"{spelled['frozen_views']} is for a frozen backbone (--train-scope hash); the paper "
                             f"recipe trains the whole network")
        if cfg.train_scope != "all":
            raise UsageError(f"--recipe paper trains the whole network as the authors did: {spelled['train_scope']} "
                             f"must be all, got {cfg.train_scope}")
        if cfg.eval_every % cfg.snapshot_every:
            raise UsageError(f"{spelled['eval_every']} {cfg.eval_every} must be a multiple of "
                             f"{spelled['snapshot_every']} {cfg.snapshot_every}: evaluations happen at the end of a "
                             f"block")
        if cfg.sigmoid_param is None:
            cfg.sigmoid_param = 10.0 / cfg.bit
        self.resolve_variant(given, spelled)
        cfg.rounds = -(-cfg.iterations // cfg.snapshot_every)
        cfg.eval_rounds = cfg.eval_every // cfg.snapshot_every

    def resolve_variant(self, given, spelled):
        """Set the flags that make --method's variant in this recipe's layers; a flag given with a value that
        contradicts it is a UsageError naming both."""
        variant, cfg = variant_of(self.cfg), self.cfg
        settings = {}
        if not variant.weighted:
            settings.update(class_num=1.0, continuous_similarity=False)
        if not variant.continuation:
            settings.update(scale_gamma=0.0)
        for key, value in settings.items():
            if key in given and getattr(cfg, key) != value:
                raise UsageError(f"--method {cfg.method} sets {spelled[key]} {value}; got {getattr(cfg, key)} "
                                 f"(docs/methods.md#hashnet-variants)")
            setattr(cfg, key, value)

    def train_sampler(self, dataset):
        # each draw carries its own key (TwoStreamBatchSampler), so the workers need no epoch
        return TwoStreamBatchSampler(len(dataset), self.cfg.batch_size, self.cfg.iterations, self.cfg.snapshot_every,
                                     self.cfg.seed)

    def criterion(self, train_labels):
        return PaperCriterion(self.cfg)

    def optimizer(self, model):
        """(CaffeSGD over the model's trainable parameters with the authors' per-blob multipliers, SolverSchedule):
        the base lr as the solver gives it (the iteration's 2 x batch images are split over the processes, so it does
        not scale with them), x0.5 every --lr-step iterations."""
        cfg = self.cfg
        optimizer = CaffeSGD(model.named_parameters(), cfg.learning_rate, momentum=cfg.momentum,
                             weight_decay=cfg.weight_decay, stepsize=cfg.lr_step, gamma=0.5)
        return optimizer, SolverSchedule()

    def describe_batches(self, num_train, steps):
        cfg = self.cfg
        return (f"paper recipe: {cfg.iterations} iterations of 2 x {cfg.batch_size} images (two shuffled streams; "
                f"{2 * cfg.batch_size // dist.get_world_size()} per process), in blocks of {cfg.snapshot_every} "
                f"iterations")

    def in_units(self, rounds):
        """The block's last iteration."""
        return min(rounds * self.cfg.snapshot_every, self.cfg.iterations)

    def round_name(self, rounds):
        """'Iteration[03000/10000]': the block's last iteration."""
        return f"Iteration[{self.in_units(rounds):05d}/{self.cfg.iterations:05d}]"

    def start_round(self, criterion, rounds):
        """Nothing: the continuation advances per iteration, inside the criterion."""

    def row_fields(self, rounds, optimizer):
        """The block's last iteration, and the lr it ended with (Caffe's lr steps inside a block)."""
        return {"iteration": self.in_units(rounds), "lr": optimizer.get_lr()}

    def record_fields(self, final_round, best_round):
        return {"final_iteration": self.in_units(final_round), "best_iteration": self.in_units(best_round),
                "selection": "best block chosen on the query set"}
