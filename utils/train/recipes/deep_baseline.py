"""What the deep baselines' recipes share (docs/methods.md#deep-baselines): the seed recipe's protocol (epochs over the
training set, its sampler, momentum SGD with the hash layer at 10x, the lr halved every --lr-step epochs, the same
evaluation), with the method's own loss and no continuation: their outputs are what they are trained as, and the
codes are their signs. So a baseline differs from HashNet only in what its paper makes it differ in.
"""
from utils.runtime import dist
from utils.runtime.errors import UsageError
from utils.train.recipes.seed import SeedRecipe


class DeepBaselineRecipe(SeedRecipe):
    method = None  # the --method value

    def resolve(self, given, spelled):
        if self.cfg.recipe != "seed":
            raise UsageError(f"--method {self.method} trains with the seed recipe's protocol (docs/methods.md"
                             f"#deep-baselines); drop --recipe {self.cfg.recipe}")
        super().resolve(given, spelled)

    def loss(self, train_labels):
        """The method's criterion(outputs, labels, index) with `scale` and state_dict()."""
        raise NotImplementedError

    def criterion(self, train_labels):
        criterion = self.loss(train_labels)
        if dist.get_world_size() > 1 and hasattr(criterion, "gather"):  # a memory bank: every rank's rows in it
            criterion.gather = dist.all_gather_cat
        return criterion

    def start_round(self, criterion, rounds):
        """Nothing: no continuation."""
