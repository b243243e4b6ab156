"""What a training recipe gives the engine (utils/train/engine.py), and what recipes share.

A recipe is one training method: it builds its training batches' sampler, its criterion, its optimizer and
learning-rate schedule; it says what one round of the engine's loop is (its unit: an epoch, or a block of iterations)
and how logs, epochs.jsonl rows and metrics.json name a round; and it checks and derives its flags when the
command line is resolved. The engine runs rounds and asks the recipe; it never asks which recipe it runs.
This base class is a recipe whose rounds are epochs; a new method subclasses it (or a recipe like it) and is
registered by name in utils/train/recipes/__init__.py.
"""


class Recipe:
    name = None  # its --recipe value
    flags = ()  # config keys only this recipe takes: given with another --recipe, a UsageError names them
    unit = "epoch"  # what the rounds count (config.json's unit; logs say "at epoch 3")
    round_word = "epoch"  # what one round is called where a run stops ("during epoch 2")
    length_flag = "--epochs"  # the flag that sets how long the run is

    def __init__(self, cfg):
        self.cfg = cfg

    # ---------------------------------------------------------------------------------------- at the command line
    def resolve(self, given, spelled):
        """Check this recipe's flags and derive the loop's length: cfg.rounds rounds, evaluated every
        cfg.eval_rounds. `given`: the keys set on the command line; `spelled`: {key: the flag as typed}."""
        self.cfg.rounds, self.cfg.eval_rounds = self.cfg.epochs, self.cfg.eval_every

    # ------------------------------------------------------------------------------------------- what it builds
    def train_sampler(self, dataset):
        """The batch sampler of the training loader: set_epoch(round) before each round."""
        raise NotImplementedError

    def criterion(self, train_labels):
        """criterion(outputs, labels, index) -> loss, with a `scale` (the continuation's) and state_dict();
        train_labels: the training set's label matrix (n, classes), in dataset order (index is the row)."""
        raise NotImplementedError

    def optimizer(self, model):
        """(optimizer, scheduler); the engine steps the scheduler once per round."""
        raise NotImplementedError

    def describe_batches(self, num_train, steps):
        """The log line that says how the training set is read."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------- how it counts
    def in_units(self, rounds):
        """A round counted in the recipe's unit."""
        return rounds

    def describe_best(self, best):
        """The best evaluation so far for the resume line: 'best mAP 0.5401 at epoch 3', or 'no evaluation yet'
        (a run resumed before its first evaluation holds the placeholder mAP -1 at round 0)."""
        if best.get("epoch", 0) <= 0 or best.get("map", -1.0) < 0:
            return "no evaluation yet"
        return f"best mAP {best['map']:.4f} at {self.unit} {self.in_units(best['epoch'])}"

    def round_name(self, rounds):
        """How logs name a round: 'Epoch[003/150]'."""
        return f"Epoch[{rounds:03d}/{self.cfg.rounds:03d}]"

    def start_round(self, criterion, rounds):
        """What changes at the start of a round, before its first batch (the seed's continuation scale)."""

    def row_fields(self, rounds, optimizer):
        """The recipe's own fields of the round's epochs.jsonl row (added after, or replacing, the engine's)."""
        return {}

    def record_fields(self, final_round, best_round):
        """The recipe's own fields of metrics.json (added after, or replacing, the engine's)."""
        return {}
