"""Every command-line flag, every default and the one way they are resolved, for every entry point.

The flags are defined once, in FLAGS: an entry point picks the ones it takes (add_flags) and resolves them with
resolve_flags, so `--dataset`, `--batch-size` or `--num-workers` mean and default the same everywhere. Help shows
the hyphenated spellings; each flag also answers to the other separator (`--data_path`) and to the seed
repository's spellings (`--epoch`, `--topK`, `--eval_epoch`, ...). Flags left unset take, in this order, the value
of the trained run's config.json (predict.py, serve.py, export_model.py, infer.py, `--eval`; utils/config/run_folder.py)
and of the dataset's preset: COCO's is the seed repository's recipe (docs/protocol.md#seed-recipe); the toy set's
a from-scratch recipe, since no ImageNet weights are used there (docs/protocol.md#training-from-scratch).
The resolved configuration of a training run is written to its run folder as config.json, data paths absolute.
"""
import argparse
import os
import time
from pathlib import Path

from models.backbones import BACKBONE_NAMES, DEFAULT_BACKBONE
from utils import PROJECT_ROOT
from utils.config.run_folder import EVAL_KEYS, PATH_KEYS, apply_run_config, resolve_checkpoint
from utils.runtime.errors import UsageError

BIT_SEEDS = {16: 0, 32: 2000, 48: 200, 64: 2000}  # the seed's per-bit seeds (docs/protocol.md#seed-recipe)

# docs/protocol.md#seed-recipe: the seed's COCO recipe. The paper's three datasets use it alike and differ in K of
# mAP@K, the data root and how their upstream lists spell image paths (docs/protocol.md#nus-wide-and-imagenet).
_SEED_RECIPE = dict(
    data_path="./datasets/COCO2014/", batch_size=128, epoch=150, eval_epoch=10, learning_rate=1e-3,
    optimizer="sgd", weight_decay=5e-4, momentum=0.9, alpha=0.1, step_continuation=20, de_step=50,
    topK=5000, crop_size=224, resize_size=256, resize_mode="short", backbone_weights="auto", init="paddle",
    standardize_features=False, train_scope="all", path_prefix=[], sampling="replicated")

PRESETS = {
    # MS-COCO, and any other list-file dataset without a preset of its own.
    "default": _SEED_RECIPE,
    # HashNet's ImageNet-100 lists hold the authors' absolute paths; mapped, they are relative to a data root
    # holding image/ (training images) and val_image/ (ILSVRC 2012 val images). mAP@1000
    # (docs/protocol.md#nus-wide-and-imagenet).
    "imagenet": dict(_SEED_RECIPE, data_path="./datasets/imagenet/", topK=1000,
                     path_prefix=["/home/caozhangjie/run-czj/dataset/imagenet/="]),
    # HashNet's NUS-WIDE-81 lists say ./data/nuswide_81/images/...: relative to a data root holding images/.
    "nuswide_81": dict(_SEED_RECIPE, data_path="./datasets/nuswide_81/", topK=5000,
                       path_prefix=["./data/nuswide_81/="]),
    # From scratch on 64 px toy images: a random Kaiming AlexNet, fc7 standardised on the training set and only
    # the hash layer trained (docs/protocol.md#training-from-scratch). The loss and network are HashNet's; the
    # continuation runs faster because the run is short.
    "toy": dict(
        data_path=str(PROJECT_ROOT / "data" / "toy"), batch_size=64, epoch=12, eval_epoch=6, learning_rate=2e-3,
        optimizer="sgd", weight_decay=5e-4, momentum=0.9, alpha=0.1, step_continuation=4, de_step=50,
        topK=-1, crop_size=64, resize_size=72, resize_mode="short", backbone_weights="none", init="kaiming",
        standardize_features=True, train_scope="hash", path_prefix=[], sampling="sharded"),
}

# docs/protocol.md#paper-recipe: the authors' Caffe recipe (thuml/HashNet caffe/models/train/<dataset>/solver.prototxt
# and train_val.prototxt). It counts iterations: --lr-step and --continuation-step are in iterations here, and the
# loop runs in blocks of --snapshot-every iterations (Caffe's snapshot interval: a checkpoint and a log row each).
_PAPER_RECIPE = dict(
    data_path="./datasets/COCO2014/", batch_size=256, iterations=10000, snapshot_every=1000, eval_epoch=2000,
    learning_rate=5e-5, optimizer="caffe_sgd", weight_decay=5e-4, momentum=0.9, de_step=2000,
    step_continuation=200, scale_gamma=0.005, scale_power=0.5, sigmoid_param=None, class_num=1.0,
    loss_threshold=15.0, continuous_similarity=True, topK=5000, crop_size=227, resize_size=256, resize_mode="warp",
    backbone="caffenet", backbone_weights="auto", init="paddle", standardize_features=False, train_scope="all",
    path_prefix=[])
PAPER_PRESETS = {
    "default": _PAPER_RECIPE,
    "imagenet": dict(_PAPER_RECIPE, data_path=PRESETS["imagenet"]["data_path"], learning_rate=2e-4, class_num=100.0,
                     topK=1000, path_prefix=PRESETS["imagenet"]["path_prefix"]),
    "nuswide_81": dict(_PAPER_RECIPE, data_path=PRESETS["nuswide_81"]["data_path"], class_num=5.0,
                       path_prefix=PRESETS["nuswide_81"]["path_prefix"]),
    # The recipe's structure at toy sizes (two streams, iterations, the Caffe solver), to try it in a minute: not a
    # recipe that learns much from a random backbone.
    "toy": dict(_PAPER_RECIPE, data_path=PRESETS["toy"]["data_path"], batch_size=32, iterations=60,
                snapshot_every=20, eval_epoch=60, learning_rate=1e-3, de_step=40, step_continuation=20, topK=-1,
                crop_size=64, resize_size=72, backbone="alexnet", backbone_weights="none", init="kaiming"),
}
RECIPES = ("seed", "paper")
SEED_MAX = 2 ** 32 - 1
ENCODERS = ("auto", "dygraph", "inference")  # --encoder (utils/retrieval/fast_encoder.py)
PRESET_LABELS = {"default": "COCO", "imagenet": "ImageNet", "nuswide_81": "NUS-WIDE", "toy": "toy"}


def preset_for(dataset, recipe="seed"):
    """The preset of a dataset name under a recipe (--recipe): its own, else the recipe's COCO values."""
    presets = PAPER_PRESETS if recipe == "paper" else PRESETS
    return presets.get(dataset, presets["default"])


def metric_name(top_k):
    """How the run's metric is written in config.json, logs and reports: mAP@1000, mAP@5000, mAP@all."""
    return "mAP@all" if top_k is None or top_k < 0 else f"mAP@{top_k}"


def parse_path_prefix(items, flag="--path-prefix"):
    """['OLD=NEW', ...] -> [(OLD, NEW), ...], longest OLD first so the most specific mapping wins.

    NEW may be empty: the rest of the path is then relative to the data root.
    """
    pairs = []
    for item in items or ():
        old, sep, new = str(item).partition("=")
        if not sep or not old:
            raise UsageError(f"{flag} {item!r}: expected OLD=NEW (a path prefix as the lists spell it, '=', and "
                             f"what replaces it; NEW may be empty to make the rest relative to --data-path), e.g. "
                             f"{flag} /home/caozhangjie/run-czj/dataset/imagenet/=")
        pairs.append((old, new))
    return sorted(pairs, key=lambda pair: -len(pair[0]))

# Measured (docs/training.md#training-the-whole-network-from-scratch): fc7 standardised once for the initial backbone,
# then the backbone trained under it (dropout on, fc7 gradients scaled by 1/std ~ 50x), the hash outputs saturate and
# mAP stays at random codes' level.
STANDARDIZED_WHOLE_NETWORK = (
    "--train_scope all cannot train with --standardize_features true (the toy preset's from-scratch recipe): the fc7 "
    "standardisation is fitted once for the initial backbone and does not follow a backbone that trains, so nothing "
    "learns; use --train_scope hash, or --standardize_features false with ImageNet weights (--backbone_weights)")


def str2bool(value):
    if isinstance(value, bool):
        return value
    if value.lower() in ("1", "true", "yes", "y"):
        return True
    if value.lower() in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


# ------------------------------------------------------------------------------------------------------------ flags
def add_flag(parser, name, *aliases, **kwargs):
    """Register a flag under its hyphenated name, its other-separator twin and any older `aliases`; help shows the
    name and the older names. The destination is the seed repository's name when it differs (`--epochs` -> epoch)."""
    stem = name[2:]
    twins = [f"--{alt}" for alt in dict.fromkeys((stem.replace("_", "-"), stem.replace("-", "_"))) if alt != stem]
    spellings = [name] + twins + [a for a in aliases if a not in twins]
    for alias in aliases:
        twin = "--" + alias[2:].replace("_", "-")
        if twin not in spellings:
            spellings.append(twin)
    kwargs.setdefault("dest", (aliases[0] if aliases else name)[2:].replace("-", "_"))
    if kwargs.get("action") in (None, "append", "extend") and "choices" not in kwargs:
        kwargs.setdefault("metavar", stem.replace("-", "_").upper())
    action = parser.add_argument(*spellings, **kwargs)
    # help names the flag and its older names, not the spellings that differ only in the separator
    action.shown_options = [name] + [a for a in aliases if a[2:].replace("_", "-") != stem]
    return action


# Every flag more than one entry point takes: (older spellings, argparse keywords). default None = "the trained
# run's value, else the dataset preset's" (resolve_flags). An entry point may give its own help text.
FLAGS = {
    # the model
    "--bit": ((), dict(type=int, default=64, help="hash code length (default: the trained run's, else 64)")),
    "--backbone": ((), dict(
        default=DEFAULT_BACKBONE, type=str.lower, choices=BACKBONE_NAMES,
        help="the network under the hash layer (models/backbones.py, docs/backbones.md): AlexNet (the seed's), or "
             "the ResNets and VGGs of the authors' PyTorch code (default: the trained run's, else alexnet)")),
    "--pretrained": ((), dict(default=None, help="HashNet checkpoint: model_best_{bit}.pdparams, last_{bit}.pdckpt, "
                                                 "or the run folder holding one")),
    "--device": ((), dict(default="auto", help="auto | cpu | gpu | gpu:N")),
    "--encoder": ((), dict(
        default="auto", choices=ENCODERS,
        help="what encodes images for evaluation and retrieval: 'inference' = the network as a static program under "
             "Paddle Inference (oneDNN on the CPU, several times faster there: utils/retrieval/fast_encoder.py), "
             "'dygraph' = "
             "the dynamic graph; auto = inference on the CPU (dygraph for a job of under 256 images of 64 px, "
             "which it finishes before a predictor is made), dygraph on a GPU")),
    "--resize-size": (("--resize_size",), dict(type=int, default=None, help="size the image is resized to first "
                                                                             "(--resize-mode)")),
    "--resize-mode": ((), dict(default=None, choices=("short", "warp"),
                               help="short = the short side to --resize-size, aspect kept (seed recipe); warp = "
                                    "a --resize-size square, aspect not kept (the authors' Caffe data layer)")),
    "--crop-size": (("--crop_size",), dict(type=int, default=None, help="center (eval) or random (train) crop")),
    # the data
    "--dataset": ((), dict(default="coco", help="lists in data/<dataset>/; presets: coco, imagenet, nuswide_81; "
                                                "'toy' is generated on first use")),
    "--data-path": (("--data_path",), dict(default=None, help="data root the list paths are relative to")),
    "--path-prefix": (("--path_prefix",), dict(
        action="append", default=None, metavar="OLD=NEW",
        help="rewrite list paths starting with OLD to start with NEW (repeatable; NEW empty = relative to "
             "--data-path), so lists with another machine's paths work unchanged")),
    "--list-dir": (("--list_dir",), dict(default=None, help="folder of train/test/database.txt "
                                                            "(default data/<dataset>)")),
    "--batch-size": (("--batch_size",), dict(type=int, default=None, help="images per step (per process)")),
    "--num-workers": (("--num_workers",), dict(
        type=int, default=None,
        help="DataLoader worker processes per process (default: the CPUs available to each process, at most 8)")),
    "--cache-dir": (("--cache_dir",), dict(
        default=None,
        help="keep decoded images here (uint8 .npy, built once, rebuilt when the lists or images change): the "
             "evaluation view of the query/database lists and the resized training images (docs/data.md#data-caches)")),
    # retrieval
    "--img": ((), dict(action="extend", nargs="+", default=None, metavar="PATH",
                       help="query images and/or folders of images (--img a.jpg b.jpg, or --img repeated)")),
    "--num-results": (("--topk",), dict(type=int, default=10, help="results per query")),
    "--save-path": (("--save_path",), dict(
        default=None, help="database-code cache, best-match copies and contact sheets (default: <run "
                           "folder>/retrieval for a trained run, else output)")),
    "--show": ((), dict(action="store_true", help="open each contact sheet (skipped without a display)")),
    "--json": ((), dict(action="store_true", help="print one JSON object per query instead of the table")),
}
MODEL_FLAGS = ("--bit", "--backbone", "--pretrained", "--device", "--encoder", "--resize-size", "--resize-mode",
               "--crop-size")
DATA_FLAGS = ("--dataset", "--data-path", "--path-prefix", "--list-dir", "--batch-size", "--num-workers",
              "--cache-dir")
RETRIEVAL_FLAGS = ("--img", "--num-results", "--save-path", "--show", "--json")


def add_flags(parser, names, title=None, help=None):
    """Add the named FLAGS (to a new argument group when `title` is given); help={name: text} overrides the
    table's help for this entry point. Returns the group."""
    group = parser.add_argument_group(title) if title else parser
    for name in names:
        aliases, kwargs = FLAGS[name]
        kwargs = dict(kwargs)
        if help and name in help:
            kwargs["help"] = help[name]
        add_flag(group, name, *aliases, **kwargs)
    return group


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the entry script's usage examples as written, shows a flag's name and older spellings (not the
    separator twins) and its default (or its preset's values)."""

    def _format_action_invocation(self, action):
        shown = getattr(action, "shown_options", None)
        if not shown:
            return super()._format_action_invocation(action)
        if action.nargs == 0:
            return ", ".join(shown)
        return ", ".join(shown) + " " + self._format_args(action, self._get_default_metavar_for_optional(action))

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None and action.dest in PRESETS["default"]:
            by_value = {}
            for name, preset in PRESETS.items():
                by_value.setdefault(repr(preset[action.dest]), []).append(PRESET_LABELS[name])
            shown = "; ".join(f"{'/'.join(names)} {value}" for value, names in by_value.items())
            return text + f" (default: dataset preset; {shown})".replace("%", "%%")
        if action.default not in (None, argparse.SUPPRESS, False) and action.option_strings:
            return text + " (default: %(default)s)"
        return text


def entry_parser(description):
    """The parser of an entry point: its docstring as the description, HelpFormatter."""
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)


def get_parser(description="HashNet (ICCV 2017) in PaddlePaddle"):
    """The training / evaluation flags of main_single_gpu.py and main_multi_gpu.py."""
    p = entry_parser(description)
    g = p.add_argument_group("run")
    add_flags(g, ("--bit",), help={"--bit": "hash code length"})
    add_flag(g, "--seed", type=seed_value, default=None,
             help=f"random seed, 0 to {SEED_MAX} (default: the seed repository's per-bit seed, "
                  f"docs/protocol.md#seed-recipe)")
    add_flag(g, "--eval", action="store_true", help="only evaluate --pretrained")
    add_flags(g, ("--pretrained", "--device", "--encoder"),
              help={"--pretrained": "HashNet checkpoint to evaluate (or its run folder) or to start from"})
    add_flag(g, "--resume", default=None,
             help="last_{bit}.pdckpt (or its run folder) to continue training from; 'auto' = the run folder's "
                  "last_{bit}.pdckpt when there is one, else start fresh (rerun the identical command after "
                  "preemption)")
    add_flag(g, "--output-dir", default="output", help="parent folder of the run folders")
    add_flag(g, "--run-name", default=None,
             help="run folder name; {dataset} and {bit} are filled in (default {dataset}_{bit}bits_train_{time}, "
                  "or {dataset}_{bit}bits_train with --resume auto, so a rerun finds its folder)")
    add_flag(g, "--log-path", "--log_path", default=None,
             help="log file name inside the run folder (default log_train_{bit}.txt / log_eval_{bit}.txt)")
    add_flag(g, "--log-freq", "--log_freq", type=int, default=50, help="log a training line every N steps")
    add_flag(g, "--plots", type=str2bool, default=True,
             help="draw pr_curve.png, precision_at_n.png and training_curve.png into the run folder at its end "
                  "(matplotlib, ~1 s); false for sweeps and tests: `python -m utils.hashing.plots RUN_DIR` draws them "
                  "later")
    add_flag(g, "--recipe", default="seed", choices=RECIPES,
             help="seed = the seed repository's recipe (docs/protocol.md#seed-recipe); paper = the authors' Caffe "
                  "recipe that produced the paper's Table 1, counted in iterations (docs/protocol.md#paper-recipe)")
    g = add_flags(p, DATA_FLAGS, "data")
    add_flag(g, "--cache", default="all", choices=["all", "eval", "train"],
             help="which caches --cache-dir holds: evaluation (exact, ~150 KB per image at 224 px), training "
                  "(resized images, ~260 KB per COCO image), or both")
    add_flag(g, "--sampling", default=None, choices=["replicated", "sharded"],
             help="several processes: 'replicated' = every process reads the whole training set each epoch with its "
                  "own shuffle (the seed repository's schedule, docs/protocol.md#seed-recipe); 'sharded' = one pass "
                  "over the data split among the processes (half the steps on 2 processes). Identical with one "
                  "process")
    add_flags(g, ("--crop-size", "--resize-size", "--resize-mode"))
    g = p.add_argument_group("optimisation")
    add_flag(g, "--epochs", "--epoch", type=int, default=None, help="training epochs (seed recipe)")
    add_flag(g, "--iterations", type=int, default=None, help="training iterations (paper recipe; Caffe's max_iter)")
    add_flag(g, "--snapshot-every", type=int, default=None,
             help="paper recipe: iterations per block, each ending in a checkpoint and a log row (Caffe's snapshot)")
    add_flag(g, "--eval-every", "--eval_epoch", type=int, default=None,
             help="evaluate every N epochs (seed recipe) or iterations (paper recipe), and at the end")
    add_flag(g, "--learning-rate", "--learning_rate", type=float, default=None,
             help="base lr per 64 images; the run uses lr * batch_size * world_size / 64 (hash layer x10)")
    add_flag(g, "--optimizer", default=None, choices=["sgd", "adam", "adamw"],
             help="sgd = momentum SGD (the seed repository's)")
    add_flag(g, "--weight-decay", "--weight_decay", type=float, default=None)
    add_flag(g, "--momentum", type=float, default=None)
    add_flag(g, "--lr-step", "--de_step", type=int, default=None,
             help="halve the lr every N epochs (seed recipe) or iterations (paper recipe)")
    add_flag(g, "--alpha", type=float, default=None, help="HashNetLoss alpha (seed recipe; docs/protocol.md#loss)")
    add_flag(g, "--continuation-step", "--step_continuation", type=int, default=None,
             help="epochs (seed recipe) or iterations (paper recipe) per step of the continuation tanh(scale*o) "
                  "(docs/protocol.md#continuation)")
    g = p.add_argument_group("the paper recipe's loss and continuation (docs/protocol.md#paper-recipe)")
    add_flag(g, "--sigmoid-param", type=float, default=None,
             help="alpha of the pairwise layer, p = alpha * u1.u2 (default 10 / bits, as the authors' prototxt notes)")
    add_flag(g, "--class-num", type=float, default=None, help="weight of a similar pair (COCO 1, NUS-WIDE 5, "
                                                                  "ImageNet 100)")
    add_flag(g, "--loss-threshold", type=float, default=None, help="above it a pair's loss is linear (l_threshold)")
    add_flag(g, "--continuous-similarity", type=str2bool, default=None,
             help="weight each pair's gradient by its label overlap (continous_similarity in the prototxt)")
    add_flag(g, "--scale-gamma", type=float, default=None, help="ScaleTanH: scale = (1 + gamma * iteration) ** power")
    add_flag(g, "--scale-power", type=float, default=None, help="ScaleTanH power")
    add_flag(g, "--map-at", "--topK", type=int, default=None, help="K of mAP@K; -1 = the whole database")
    g = add_flags(p, ("--backbone",), "backbone", help={"--backbone": FLAGS["--backbone"][1]["help"].replace(
        "the trained run's, else ", "")})
    add_flag(g, "--backbone-weights", "--backbone_weights", default=None,
             help="ImageNet weights of the backbone (.pth or .pdparams); 'auto' looks in pretrained/ by the "
                  "backbone's file names (docs/backbones.md), 'none' = random init")
    add_flag(g, "--init", default=None, type=init_name, choices=["paddle", "kaiming"],
             help="init of a random backbone: Paddle's default initialisation, or Kaiming normal ('torchvision' is "
                  "read as 'paddle')")
    add_flag(g, "--standardize-features", "--standardize_features", type=str2bool, default=None,
             help="standardise fc7 with training-set statistics before the hash layer (from-scratch recipe)")
    add_flag(g, "--train-scope", "--train_scope", default=None, choices=["all", "hash"],
             help="train the whole network or the hash layer")
    add_flag(g, "--frozen-views", type=int, default=0,
             help="with --train-scope hash the frozen backbone runs once per run (utils/train/frozen.py): its features "
                  "of "
                  "the training images are cached, 0 = of the evaluation view (no augmentation), N = of N random "
                  "crops + flips drawn like the training transform, epoch e using view (e - 1) %% N + 1 (one more "
                  "backbone pass over the training set per view; docs/training.md)")
    return p


def resolve_recipe(args, given, spelled):
    """The loop's unit and length for --recipe: `rounds` of `unit`s (epochs; or blocks of --snapshot-every
    iterations), evaluated every `eval_rounds` rounds. A flag of the other recipe is a UsageError naming it."""
    other = "paper" if args.recipe == "seed" else "seed"
    wrong = [spelled.get(key, "--" + key) for key in RECIPE_ONLY[other] if key in given]
    if wrong:
        raise UsageError(f"{', '.join(wrong)} belongs to --recipe {other}, not --recipe {args.recipe} "
                         f"(docs/protocol.md#paper-recipe compares the two)")
    if args.recipe == "seed":
        args.unit, args.rounds, args.eval_rounds = "epoch", args.epoch, args.eval_epoch
        return args
    if "backbone" not in given:  # --backbone's default is the seed recipe's AlexNet
        args.backbone = preset_for(args.dataset, "paper")["backbone"]
    if args.frozen_views:
        raise UsageError(f"{spelled['frozen_views']} is for a frozen backbone (--train-scope hash); the paper recipe "
                         f"trains the whole network")
    if args.train_scope != "all":
        raise UsageError(f"--recipe paper trains the whole network as the authors did: {spelled['train_scope']} "
                         f"must be all, got {args.train_scope}")
    if args.eval_epoch % args.snapshot_every:
        raise UsageError(f"{spelled['eval_epoch']} {args.eval_epoch} must be a multiple of {spelled['snapshot_every']} "
                         f"{args.snapshot_every}: evaluations happen at the end of a block")
    if args.sigmoid_param is None:
        args.sigmoid_param = 10.0 / args.bit
    args.epoch = args.alpha = args.sampling = None  # not this recipe's: config.json shows none
    args.unit = "iteration"
    args.rounds = -(-args.iterations // args.snapshot_every)
    args.eval_rounds = args.eval_epoch // args.snapshot_every
    return args


def init_name(value):
    """--init: 'torchvision' was this flag's old name for Paddle's default initialisation."""
    return "paddle" if value == "torchvision" else value


def seed_value(text):
    """--seed: a whole number in [0, 2**32 - 1] (numpy's seed range), else an argparse error saying so."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {SEED_MAX}, got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be from 0 to {SEED_MAX} (2**32 - 1), got {value}")
    return value


def apply_preset(args, keys=None):
    """Fill the unset flags (all preset keys, or only `keys`) from the dataset's preset."""
    preset = preset_for(args.dataset, getattr(args, "recipe", "seed"))
    for key in preset if keys is None else keys:
        if getattr(args, key, None) is None:
            value = preset[key]
            setattr(args, key, list(value) if isinstance(value, list) else value)  # never share the preset's list
    return args


def check_positive(args, names, spelled=None):
    """Every named flag is a whole number >= 1, else a UsageError naming the flag (as spelled: flag_spellings)
    and the value."""
    for name in names:
        value = getattr(args, name)
        if value is None or value < 1:
            raise UsageError(f"{(spelled or {}).get(name, '--' + name)} must be >= 1, got {value}")

# ------------------------------------------------------------------------------------------------------ resolution
POSITIVE = ("bit", "batch_size", "epoch", "eval_epoch", "step_continuation", "de_step", "resize_size", "crop_size",
            "topk", "iterations", "snapshot_every")
# flags that belong to one recipe only (docs/protocol.md#paper-recipe): given with the other, a UsageError
RECIPE_ONLY = {"seed": ("epoch", "alpha", "sampling"),
               "paper": ("iterations", "snapshot_every", "sigmoid_param", "class_num", "loss_threshold",
                         "continuous_similarity", "scale_gamma", "scale_power")}


def given_flags(parser, argv=None):
    """dest names of the flags written on the command line (argparse itself cannot tell them from defaults)."""
    saved = {action: action.default for action in parser._actions}
    try:
        for action in saved:
            action.default = argparse.SUPPRESS
        namespace, _ = parser.parse_known_args(argv)
    finally:
        for action, default in saved.items():
            action.default = default
    return set(vars(namespace))


def flag_spellings(parser, argv=None):
    """{dest: the flag as the command line spelled it (`--epoch` or `--epochs`), else its name in help}, so that a
    message names the flag the user typed."""
    import sys
    tokens = {token.split("=", 1)[0] for token in (sys.argv[1:] if argv is None else argv) if str(token)[:2] == "--"}
    spelled = {}
    for action in parser._actions:
        if action.option_strings:
            typed = [option for option in action.option_strings if option in tokens]
            spelled[action.dest] = typed[0] if typed else getattr(action, "shown_options", action.option_strings)[0]
    return spelled


def absolute_data_paths(args):
    """Data paths as absolute paths, so config.json and exports work from any folder."""
    for key in PATH_KEYS:
        if getattr(args, key, None) is not None:
            setattr(args, key, os.path.abspath(getattr(args, key)))
    return args


def resolve_flags(parser, argv=None, *, from_run=True, run_config=None, run_keys=(), preset_keys=None,
                  checkpoint=False, derive_workers=True):
    """The one resolution of every entry point. Returns (args, given, trained).

    1. parse argv; `given` = the flags written on the command line;
    2. when from_run (a bool, or a function of the parsed args) and --pretrained names a run folder with a
       config.json (or `run_config` is given: an export's record of its database), its model and data keys, plus
       run_keys, fill the flags not given (utils/config/run_folder.py); `trained` is that config, else None;
    3. the dataset preset fills what is still unset (all its keys, or preset_keys);
    4. data paths made absolute, path prefixes and every whole-number flag checked, --num-workers derived from the
       CPUs when unset (derive_workers), --crop-size <= --resize-size;
    5. with checkpoint, --pretrained resolved to its checkpoint file (a run folder means its best checkpoint).
    A wrong value ends in a UsageError (one `error:` line, utils/runtime/failure.py) naming the flag.
    """
    args = parser.parse_args(argv)
    given, spelled = given_flags(parser, argv), flag_spellings(parser, argv)
    use_run = from_run(args) if callable(from_run) else from_run
    trained = apply_run_config(args, given, run_keys, config=run_config, spelled=spelled) if use_run else None
    apply_preset(args, preset_keys)
    parse_path_prefix(getattr(args, "path_prefix", None))  # a malformed mapping fails here, before any data is read
    absolute_data_paths(args)
    one_recipe = {key for keys in RECIPE_ONLY.values() for key in keys}  # unset under the other recipe
    check_positive(args, [name for name in POSITIVE if name in args
                          and not (name in one_recipe and getattr(args, name) is None)], spelled)
    if "num_workers" in args:
        if args.num_workers is None and derive_workers:
            from utils.runtime.dist import default_num_workers
            args.num_workers = default_num_workers()
        if args.num_workers is not None and args.num_workers < 0:
            raise UsageError(f"{spelled['num_workers']} must be >= 0, got {args.num_workers}")
    if getattr(args, "crop_size", None) and getattr(args, "resize_size", None) and args.crop_size > args.resize_size:
        crop, resize = spelled["crop_size"], spelled["resize_size"]
        raise UsageError(f"{crop} {args.crop_size} is larger than {resize} {args.resize_size}: the crop is taken "
                         f"from the image resized to that short side (docs/protocol.md#seed-recipe: 256 and 224)")
    if checkpoint:
        args.pretrained = resolve_checkpoint(args.pretrained, args.bit)
    return args, given, trained


def parse_args(argv=None, description=None):
    """The training / evaluation configuration of main_*.py: resolve_flags, then the run's own derivations (seed,
    log file, run folder) and the checks that only training needs."""
    parser = get_parser(description or "HashNet (ICCV 2017) in PaddlePaddle")
    args, given, _ = resolve_flags(parser, argv, from_run=lambda a: a.eval and a.pretrained, run_keys=EVAL_KEYS,
                                   derive_workers=False)  # the engine derives it, knowing the processes per machine
    if args.eval and not args.pretrained:
        raise UsageError("--eval needs --pretrained PATH (a model_best_{bit}.pdparams or last_{bit}.pdckpt)")
    if args.eval:
        args.pretrained = str(resolve_checkpoint(args.pretrained, args.bit))
        if "backbone_weights" not in given:
            args.backbone_weights = "none"  # the checkpoint holds every weight: no ImageNet file to look for
    args.metric = metric_name(args.topK)
    resolve_recipe(args, given, flag_spellings(parser, argv))
    if args.seed is None:
        args.seed = BIT_SEEDS.get(args.bit, 0)
    if args.log_path is None:
        args.log_path = f"log_{'eval' if args.eval else 'train'}_{args.bit}.txt"
    if args.run_name is None:
        if args.resume == "auto":
            args.run_name = f"{args.dataset}_{args.bit}bits_train"
        elif args.resume:
            resume = Path(args.resume)
            args.run_name = (resume if resume.is_dir() else resume.parent).name
            args.output_dir = str((resume if resume.is_dir() else resume.parent).parent)
        else:
            kind = "eval" if args.eval else "train"
            args.run_name = f"{args.dataset}_{args.bit}bits_{kind}_{time.strftime('%Y%m%d-%H%M%S')}"
    args.run_name = args.run_name.replace("{dataset}", args.dataset).replace("{bit}", str(args.bit))
    args.run_dir = str(Path(args.output_dir) / args.run_name)
    if args.train_scope == "all" and args.standardize_features and not args.eval:
        raise UsageError(STANDARDIZED_WHOLE_NETWORK)
    if args.frozen_views < 0:
        raise UsageError(f"{flag_spellings(parser, argv)['frozen_views']} must be >= 0 (0 = no augmentation), got "
                         f"{args.frozen_views}")
    return args
