"""The paper recipe's training pieces put together (docs/protocol.md#paper-recipe): the criterion (ScaleTanH, then
the authors' PairwiseLoss between the two halves of an iteration) and Caffe's solver, as the engine builds them for
--recipe paper. The pieces themselves live in utils/losses/scale_tanh.py, utils/losses/pairwise_loss.py and
utils/optim/caffe_sgd.py; the two-stream batches in utils/datasets/sampling.TwoStreamBatchSampler.
"""
from utils.losses.pairwise_loss import PairwiseLoss
from utils.losses.scale_tanh import ScaleTanH
from utils.optim.caffe_sgd import CaffeSGD
from utils.runtime import dist


class PaperCriterion:
    """criterion(outputs, labels, index) -> loss, as the engine calls the seed's HashNetLoss: the hash layer's raw
    outputs go through ScaleTanH, stepped once per training forward pass, then PairwiseLoss. `index` is not used
    (no memory bank). state_dict() holds the continuation's counter, so a resumed run goes on with the same scales.

    Several processes: the pairs are built over every rank's halves (PairwiseLoss.distribute).
    """

    def __init__(self, cfg):
        self.continuation = ScaleTanH(init_scale=1.0, gamma=cfg.scale_gamma, power=cfg.scale_power,
                                      step_size=cfg.step_continuation)
        self.loss = PairwiseLoss(cfg.sigmoid_param, cfg.class_num, cfg.loss_threshold, cfg.continuous_similarity)
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


def build_solver(cfg, model):
    """(CaffeSGD over the model's trainable parameters with the authors' per-blob multipliers, SolverSchedule): the
    base lr as the solver gives it (the iteration's 2 x batch images are split over the processes, so it does not
    scale with them), x0.5 every --lr-step iterations."""
    optimizer = CaffeSGD(model.named_parameters(), cfg.learning_rate, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay, stepsize=cfg.de_step, gamma=0.5)
    return optimizer, SolverSchedule()
