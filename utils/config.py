"""Every command-line flag and every default in one place.

Flags keep the seed's spellings (`--data-path`, `--batch-size`, `--eval_epoch`, ...); each also answers to the other
separator (`--data_path`). Flags left unset take the value of the dataset's preset: COCO's is SPEC §3 (the seed's
recipe); the toy set's is a from-scratch recipe, since no ImageNet weights are used there (see README, "Toy demo").
The resolved configuration is written to the run folder as config.json.
"""
import argparse
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIT_SEEDS = {16: 0, 32: 2000, 48: 200, 64: 2000}  # the seed's per-bit seeds (SPEC §3)
BACKBONE_CANDIDATES = ("pretrained/alexnet_imagenet.pdparams", "pretrained/alexnet-owt-7be5be79.pth",
                       "pretrained/alexnet-owt-4df8aa71.pth", "pretrained/alexnet.pdparams")

PRESETS = {
    # SPEC §3: the seed's COCO recipe; also used for any other list-file dataset.
    "default": dict(
        data_path="./datasets/COCO2014/", batch_size=128, epoch=150, eval_epoch=10, learning_rate=1e-3,
        optimizer="sgd", weight_decay=5e-4, momentum=0.9, alpha=0.1, step_continuation=20, de_step=50,
        topK=5000, crop_size=224, resize_size=256, backbone_weights="auto", init="torchvision",
        standardize_features=False, train_scope="all"),
    # From scratch on 64 px toy images: a random Kaiming AlexNet, fc7 standardised on the training set and only
    # the hash layer trained (SPEC §3, end). The loss and network are HashNet's; the continuation runs faster
    # because the run is short.
    "toy": dict(
        data_path=str(PROJECT_ROOT / "data" / "toy"), batch_size=64, epoch=12, eval_epoch=6, learning_rate=2e-3,
        optimizer="sgd", weight_decay=5e-4, momentum=0.9, alpha=0.1, step_continuation=4, de_step=50,
        topK=-1, crop_size=64, resize_size=72, backbone_weights="none", init="kaiming",
        standardize_features=True, train_scope="hash"),
}


def _add(parser, name, **kwargs):
    """Register --a_b and --a-b as one flag."""
    stem = name[2:]
    spellings = [name] + [f"--{alt}" for alt in {stem.replace("_", "-"), stem.replace("-", "_")} if alt != stem]
    parser.add_argument(*spellings, dest=stem.replace("-", "_"), **kwargs)


def str2bool(value):
    if isinstance(value, bool):
        return value
    if value.lower() in ("1", "true", "yes", "y"):
        return True
    if value.lower() in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the entry script's usage examples as written and shows each flag's default (or its preset)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None and action.dest in PRESETS["default"]:
            return text + " (default: dataset preset; COCO %s, toy %s)" % (
                PRESETS["default"][action.dest], PRESETS["toy"][action.dest])
        if action.default not in (None, argparse.SUPPRESS) and action.option_strings:
            return text + " (default: %(default)s)"
        return text


def get_parser(description="HashNet (ICCV 2017) in PaddlePaddle"):
    p = argparse.ArgumentParser(description=description, formatter_class=_HelpFormatter)
    g = p.add_argument_group("run")
    _add(g, "--bit", type=int, default=64, help="hash code length")
    _add(g, "--seed", type=int, default=None, help="random seed (default: the seed's per-bit seed, SPEC §3)")
    _add(g, "--eval", action="store_true", help="only evaluate --pretrained")
    _add(g, "--pretrained", default=None, help="HashNet checkpoint to evaluate or start from")
    _add(g, "--resume", default=None, help="last_{bit}.pdckpt (or its run folder) to continue training from")
    _add(g, "--device", default="auto", help="auto | cpu | gpu | gpu:N")
    _add(g, "--output-dir", default="output", help="parent folder of the run folders")
    _add(g, "--run-name", default=None, help="run folder name (default {dataset}_{bit}bits_{time})")
    _add(g, "--log_path", default=None,
         help="log file name inside the run folder (default log_train_{bit}.txt / log_eval_{bit}.txt)")
    _add(g, "--log_freq", type=int, default=50, help="log a training line every N steps")
    g = p.add_argument_group("data")
    _add(g, "--dataset", default="coco", help="lists in data/<dataset>/; 'toy' is generated on first use")
    _add(g, "--data-path", default=None, help="data root the list paths are relative to")
    _add(g, "--list-dir", default=None, help="folder of train/test/database.txt (default data/<dataset>)")
    _add(g, "--batch-size", type=int, default=None, help="images per step per process")
    _add(g, "--num_workers", type=int, default=None,
         help="DataLoader worker processes per process (default: the CPUs available to each process, at most 8)")
    _add(g, "--cache_dir", default=None,
         help="keep decoded images here (uint8 .npy, built once, rebuilt when the lists or images change): the "
              "evaluation view of the query/database lists and the resized training images (README, 'Data caches')")
    _add(g, "--cache", default="all", choices=["all", "eval", "train"],
         help="which caches --cache_dir holds: evaluation (exact, ~150 KB per image at 224 px), training "
              "(resized images, ~260 KB per COCO image), or both")
    _add(g, "--crop_size", type=int, default=None)
    _add(g, "--resize_size", type=int, default=None)
    g = p.add_argument_group("optimisation")
    _add(g, "--epoch", type=int, default=None)
    _add(g, "--eval_epoch", type=int, default=None, help="evaluate every N epochs and at the end")
    _add(g, "--learning_rate", type=float, default=None,
         help="base lr per 64 images; the run uses lr * batch_size * world_size / 64 (hash layer x10)")
    _add(g, "--optimizer", default=None, choices=["sgd", "adam", "adamw"], help="sgd = momentum SGD (the seed's)")
    _add(g, "--weight_decay", type=float, default=None)
    _add(g, "--momentum", type=float, default=None)
    _add(g, "--de_step", type=int, default=None, help="halve the lr every N epochs")
    _add(g, "--alpha", type=float, default=None, help="HashNetLoss alpha")
    _add(g, "--step_continuation", type=int, default=None, help="epochs per continuation step of tanh(scale*o)")
    _add(g, "--topK", type=int, default=None, help="mAP@K; -1 = the whole database")
    g = p.add_argument_group("backbone")
    _add(g, "--backbone_weights", default=None,
         help="ImageNet AlexNet (.pth or .pdparams); 'auto' looks in pretrained/, 'none' = random init")
    _add(g, "--init", default=None, choices=["torchvision", "kaiming"], help="init of a random backbone")
    _add(g, "--standardize_features", type=str2bool, default=None,
         help="standardise fc7 with training-set statistics before the hash layer (from-scratch recipe)")
    _add(g, "--train_scope", default=None, choices=["all", "hash"], help="train the whole network or the hash layer")
    return p


def apply_preset(args, keys=None):
    """Fill the unset flags (all preset keys, or only `keys`) from the dataset's preset."""
    preset = PRESETS["toy" if args.dataset == "toy" else "default"]
    for key in preset if keys is None else keys:
        if getattr(args, key, None) is None:
            setattr(args, key, preset[key])
    return args


def check_positive(args, names):
    """Every named flag is a whole number >= 1, else a ValueError naming the flag and the value."""
    for name in names:
        value = getattr(args, name)
        if value is None or value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")


def resolve(args):
    """Fill unset flags from the dataset preset; derive the seed and the run folder."""
    apply_preset(args)
    if args.seed is None:
        args.seed = BIT_SEEDS.get(args.bit, 0)
    if args.log_path is None:
        args.log_path = f"log_{'eval' if args.eval else 'train'}_{args.bit}.txt"
    if args.run_name is None:
        if args.resume:
            resume = Path(args.resume)
            args.run_name = (resume if resume.is_dir() else resume.parent).name
            args.output_dir = str((resume if resume.is_dir() else resume.parent).parent)
        else:
            kind = "eval" if args.eval else "train"
            args.run_name = f"{args.dataset}_{args.bit}bits_{kind}_{time.strftime('%Y%m%d-%H%M%S')}"
    args.run_dir = str(Path(args.output_dir) / args.run_name)
    check_positive(args, ("bit", "batch_size", "epoch", "eval_epoch", "step_continuation", "de_step"))
    if args.num_workers is not None and args.num_workers < 0:
        raise ValueError(f"--num_workers must be >= 0, got {args.num_workers}")
    if args.eval and not args.pretrained:
        raise ValueError("--eval needs --pretrained PATH (a model_best_{bit}.pdparams or last_{bit}.pdckpt)")
    return args


def parse_args(argv=None, description=None):
    return resolve(get_parser(description or "HashNet (ICCV 2017) in PaddlePaddle").parse_args(argv))
