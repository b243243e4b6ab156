"""DNNH (Lai, Pan, Liu, Yan, CVPR 2015; docs/methods.md#dnnh): the divide-and-encode hash layer
(models/divide_encode.py, built for --method dnnh by utils/train/build.hash_head_of) trained by the triplet ranking
loss on sigmoid outputs through the piece-wise threshold function (utils/losses/dnnh_loss.py), over every valid
triplet of a batch."""
from utils.losses.dnnh_loss import DNNHLoss
from utils.train.recipes.deep_baseline import DeepBaselineRecipe

MARGIN = 1.0  # the paper's triplet ranking loss (docs/methods.md#dnnh)
EPSILON = 0.1  # the piece-wise threshold function's band, 0.5 +- epsilon


class DNNHRecipe(DeepBaselineRecipe):
    method = "dnnh"

    def loss(self, train_labels):
        return DNNHLoss(self.cfg.bit, train_labels.shape[1], margin=MARGIN, epsilon=EPSILON)
