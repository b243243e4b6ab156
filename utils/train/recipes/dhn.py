"""DHN (Zhu, Long, Wang, Cao, AAAI 2016; docs/methods.md#dhn): HashNet's pairwise likelihood against the memory bank
with every pair weighted alike, on tanh of the outputs, plus a log cosh quantisation loss (utils/losses/dhn_loss.py)."""
from utils.losses.dhn_loss import DHNLoss
from utils.train.recipes.deep_baseline import DeepBaselineRecipe

LIKELIHOOD_ALPHA = 0.5  # the inner product's scale in the authors' cross_entropy (docs/methods.md#dhn)
QUANTIZATION_WEIGHT = 0.1  # lambda, DeepHash-pytorch's DHN.py (the paper chose it by cross-validation)


class DHNRecipe(DeepBaselineRecipe):
    method = "dhn"

    def loss(self, train_labels):
        return DHNLoss(self.cfg.bit, len(train_labels), alpha=LIKELIHOOD_ALPHA, num_class=train_labels.shape[1],
                       quantization_weight=QUANTIZATION_WEIGHT)
