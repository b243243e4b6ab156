"""CNNH (Xia, Pan, Lai, Liu, Yan, AAAI 2014; docs/methods.md#cnnh): stage 1 factorises the training set's similarity
matrix into target codes before the first epoch (NumPy, seeded by --seed, so a resumed run makes the same ones), stage
2 trains the network to regress them (utils/losses/cnnh_loss.py)."""
import time

from utils.losses.cnnh_loss import CNNHLoss, cnnh_target_codes
from utils.train.recipes.deep_baseline import DeepBaselineRecipe

STAGE1_ITERATIONS = 10  # sweeps of the coordinate descent (T = 10 in DeepHash-pytorch's CNNH.py)


class CNNHRecipe(DeepBaselineRecipe):
    method = "cnnh"

    def loss(self, train_labels):
        start = time.time()
        targets = cnnh_target_codes(train_labels, self.cfg.bit, STAGE1_ITERATIONS, seed=self.cfg.seed)
        self.stage1_time = time.time() - start
        return CNNHLoss(targets)

    def describe_batches(self, num_train, steps):
        return (f"CNNH stage 1: target codes of the {num_train} training images in {self.stage1_time:.1f} s; "
                + super().describe_batches(num_train, steps))
