"""Every command-line flag and every default in one place.

Flags keep the seed's spellings (`--data-path`, `--batch-size`, `--eval_epoch`, ...); each also answers to the other
separator (`--data_path`). Flags left unset take the value of the dataset's preset: COCO's is docs/protocol.md#seed-recipe (the seed's
recipe); the toy set's is a from-scratch recipe, since no ImageNet weights are used there (see README, "Toy demo").
The resolved configuration is written to the run folder as config.json, with the data paths made absolute; the
entry points that load a trained model read it back (run_config_for / apply_run_config), so a run folder is all
they need.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIT_SEEDS = {16: 0, 32: 2000, 48: 200, 64: 2000}  # the seed's per-bit seeds (docs/protocol.md#seed-recipe)
BACKBONE_CANDIDATES = ("pretrained/alexnet_imagenet.pdparams", "pretrained/alexnet-owt-7be5be79.pth",
                       "pretrained/alexnet-owt-4df8aa71.pth", "pretrained/alexnet.pdparams")

# docs/protocol.md#seed-recipe: the seed's COCO recipe. The paper's three datasets use it alike and differ in K of mAP@K, the data root
# and how their upstream lists spell image paths (docs/protocol.md#nus-wide-and-imagenet).
_SEED_RECIPE = dict(
    data_path="./datasets/COCO2014/", batch_size=128, epoch=150, eval_epoch=10, learning_rate=1e-3,
    optimizer="sgd", weight_decay=5e-4, momentum=0.9, alpha=0.1, step_continuation=20, de_step=50,
    topK=5000, crop_size=224, resize_size=256, backbone_weights="auto", init="torchvision",
    standardize_features=False, train_scope="all", path_prefix=[], sampling="replicated")

PRESETS = {
    # MS-COCO, and any other list-file dataset without a preset of its own.
    "default": _SEED_RECIPE,
    # HashNet's ImageNet-100 lists hold the authors' absolute paths; mapped, they are relative to a data root
    # holding image/ (training images) and val_image/ (ILSVRC 2012 val images). mAP@1000 (docs/protocol.md#nus-wide-and-imagenet).
    "imagenet": dict(_SEED_RECIPE, data_path="./datasets/imagenet/", topK=1000,
                     path_prefix=["/home/caozhangjie/run-czj/dataset/imagenet/="]),
    # HashNet's NUS-WIDE-81 lists say ./data/nuswide_81/images/...: relative to a data root holding images/.
    "nuswide_81": dict(_SEED_RECIPE, data_path="./datasets/nuswide_81/", topK=5000,
                       path_prefix=["./data/nuswide_81/="]),
    # From scratch on 64 px toy images: a random Kaiming AlexNet, fc7 standardised on the training set and only
    # the hash layer trained (docs/protocol.md#training-from-scratch). The loss and network are HashNet's; the continuation runs faster
    # because the run is short.
    "toy": dict(
        data_path=str(PROJECT_ROOT / "data" / "toy"), batch_size=64, epoch=12, eval_epoch=6, learning_rate=2e-3,
        optimizer="sgd", weight_decay=5e-4, momentum=0.9, alpha=0.1, step_continuation=4, de_step=50,
        topK=-1, crop_size=64, resize_size=72, backbone_weights="none", init="kaiming",
        standardize_features=True, train_scope="hash", path_prefix=[], sampling="sharded"),
}
SEED_MAX = 2 ** 32 - 1
PRESET_LABELS = {"default": "COCO", "imagenet": "ImageNet", "nuswide_81": "NUS-WIDE", "toy": "toy"}


def preset_for(dataset):
    """The preset of a dataset name: its own, else the seed's COCO recipe."""
    return PRESETS.get(dataset, PRESETS["default"])


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
            raise ValueError(f"{flag} {item!r}: expected OLD=NEW (a path prefix as the lists spell it, '=', and "
                             f"what replaces it; NEW may be empty to make the rest relative to --data-path), e.g. "
                             f"{flag} /home/caozhangjie/run-czj/dataset/imagenet/=")
        pairs.append((old, new))
    return sorted(pairs, key=lambda pair: -len(pair[0]))

# Measured (README, "Toy demo"): fc7 standardised once for the initial backbone, then the backbone trained under it
# (dropout on, fc7 gradients scaled by 1/std ~ 50x), the hash outputs saturate and mAP stays at random codes' level.
STANDARDIZED_WHOLE_NETWORK = (
    "--train_scope all cannot train with --standardize_features true (the toy preset's from-scratch recipe): the fc7 "
    "standardisation is fitted once for the initial backbone and does not follow a backbone that trains, so nothing "
    "learns; use --train_scope hash, or --standardize_features false with ImageNet weights (--backbone_weights)")


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
            by_value = {}
            for name, preset in PRESETS.items():
                by_value.setdefault(repr(preset[action.dest]), []).append(PRESET_LABELS[name])
            shown = "; ".join(f"{'/'.join(names)} {value}" for value, names in by_value.items())
            return text + f" (default: dataset preset; {shown})".replace("%", "%%")
        if action.default not in (None, argparse.SUPPRESS) and action.option_strings:
            return text + " (default: %(default)s)"
        return text


def get_parser(description="HashNet (ICCV 2017) in PaddlePaddle"):
    p = argparse.ArgumentParser(description=description, formatter_class=_HelpFormatter)
    g = p.add_argument_group("run")
    _add(g, "--bit", type=int, default=64, help="hash code length")
    _add(g, "--seed", type=seed_value, default=None,
         help=f"random seed, 0 to {SEED_MAX} (default: the seed's per-bit seed, docs/protocol.md#seed-recipe)")
    _add(g, "--eval", action="store_true", help="only evaluate --pretrained")
    _add(g, "--pretrained", default=None, help="HashNet checkpoint to evaluate or start from")
    _add(g, "--resume", default=None,
         help="last_{bit}.pdckpt (or its run folder) to continue training from; 'auto' = the run folder's "
              "last_{bit}.pdckpt when there is one, else start fresh (rerun the identical command after preemption)")
    _add(g, "--device", default="auto", help="auto | cpu | gpu | gpu:N")
    _add(g, "--output-dir", default="output", help="parent folder of the run folders")
    _add(g, "--run-name", default=None,
         help="run folder name; {dataset} and {bit} are filled in (default {dataset}_{bit}bits_train_{time}, "
              "or {dataset}_{bit}bits_train with --resume auto, so a rerun finds its folder)")
    _add(g, "--log_path", default=None,
         help="log file name inside the run folder (default log_train_{bit}.txt / log_eval_{bit}.txt)")
    _add(g, "--log_freq", type=int, default=50, help="log a training line every N steps")
    g = p.add_argument_group("data")
    _add(g, "--dataset", default="coco",
         help="lists in data/<dataset>/; presets: coco, imagenet, nuswide_81; 'toy' is generated on first use")
    _add(g, "--data-path", default=None, help="data root the list paths are relative to")
    _add(g, "--path-prefix", action="append", default=None, metavar="OLD=NEW",
         help="rewrite list paths starting with OLD to start with NEW (repeatable; NEW empty = relative to "
              "--data-path), so lists with another machine's paths work unchanged")
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
    _add(g, "--sampling", default=None, choices=["replicated", "sharded"],
         help="several processes: 'replicated' = every process reads the whole training set each epoch with its own "
              "shuffle (the seed's schedule, docs/protocol.md#seed-recipe); 'sharded' = one pass over the data split among the processes "
              "(half the steps on 2 processes). Identical with one process")
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
    preset = preset_for(args.dataset)
    for key in preset if keys is None else keys:
        if getattr(args, key, None) is None:
            value = preset[key]
            setattr(args, key, list(value) if isinstance(value, list) else value)  # never share the preset's list
    return args


def check_positive(args, names):
    """Every named flag is a whole number >= 1, else a ValueError naming the flag and the value."""
    for name in names:
        value = getattr(args, name)
        if value is None or value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")


def resolve(args, given=None):
    """Fill unset flags from the run folder of --pretrained (with --eval) and the dataset preset; derive the seed and
    the run folder. given: the flags set on the command line (given_flags), which the run folder never overrides."""
    if args.eval and args.pretrained:
        apply_run_config(args, given if given is not None else set(), EVAL_KEYS)
        args.pretrained = str(resolve_checkpoint(args.pretrained, args.bit))
        if args.backbone_weights is None:
            args.backbone_weights = "none"  # the checkpoint holds every weight: no ImageNet file to look for
    apply_preset(args)
    parse_path_prefix(args.path_prefix)  # a malformed mapping fails here, before any data is read
    args.metric = metric_name(args.topK)
    absolute_data_paths(args)
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
    check_positive(args, ("bit", "batch_size", "epoch", "eval_epoch", "step_continuation", "de_step", "resize_size",
                          "crop_size"))
    if args.crop_size > args.resize_size:
        raise ValueError(f"--crop_size {args.crop_size} is larger than --resize_size {args.resize_size}: the crop is "
                         f"taken from the image resized to that short side (docs/protocol.md#seed-recipe: 256 and 224)")
    if args.train_scope == "all" and args.standardize_features and not args.eval:
        raise ValueError(STANDARDIZED_WHOLE_NETWORK)
    if args.num_workers is not None and args.num_workers < 0:
        raise ValueError(f"--num_workers must be >= 0, got {args.num_workers}")
    if args.eval and not args.pretrained:
        raise ValueError("--eval needs --pretrained PATH (a model_best_{bit}.pdparams or last_{bit}.pdckpt)")
    return args


def parse_args(argv=None, description=None):
    parser = get_parser(description or "HashNet (ICCV 2017) in PaddlePaddle")
    return resolve(parser.parse_args(argv), given_flags(parser, argv))


# ------------------------------------------------------------------------------------------- a run folder's config
# What a trained model needs to be used as it was trained. Overriding a MODEL key contradicts training (warned);
# overriding a data key searches or evaluates another database (said in a note).
MODEL_KEYS = ("bit", "resize_size", "crop_size")
EVAL_KEYS = ("topK",)  # --eval also reports the run's mAP@K
PATH_KEYS = ("data_path", "list_dir")  # stored absolute; old relative ones are resolved by _training_cwd


def is_data_key(key):
    """dataset, data_path, list_dir and any other data_* / list_* / *prefix* key (e.g. a path mapping of the lists),
    so entry points copy whatever data flags the run was trained with."""
    return key == "dataset" or key.startswith(("data_", "list_")) or "prefix" in key


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


def run_folder_of(path):
    """The run folder a --pretrained path names: the folder itself, or the folder holding the checkpoint."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def _training_cwd(config, run_dir):
    """Where an old run (relative paths in config.json) was started: its recorded run_dir is relative to that folder,
    so strip it from the run folder's absolute path; None when the folder was moved or renamed since."""
    recorded = config.get("run_dir")
    if not recorded or Path(recorded).is_absolute():
        return None
    here, parts = Path(os.path.abspath(run_dir)), Path(recorded).parts
    if here.parts[-len(parts):] != parts:
        return None
    return Path(*here.parts[:-len(parts)])


def _absolute(value, bases):
    """value as an absolute path: unchanged when absolute, else under the first base where it exists (else the
    first base, so the later error names a concrete path)."""
    if value is None or os.path.isabs(value):
        return value
    for base in bases:
        if (base / value).exists():
            return os.path.normpath(base / value)
    return os.path.normpath(bases[0] / value)


def run_config_for(path):
    """The training settings of the run folder --pretrained names, or None when it has no config.json.

    Returns {"path": config.json, "values": {key: value}} with the model keys (bit, sizes), the data keys
    (is_data_key), topK, and data paths made absolute. Runs written before paths were stored absolute are read
    relative to the folder the run was started in (deduced from the recorded run_dir), else to the project root.
    """
    if path is None:
        return None
    run_dir = run_folder_of(path)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{config_path} is not valid JSON ({err}); fix it or pass the data flags explicitly") from err
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object of training flags, got {type(config).__name__}")
    values = {k: v for k, v in config.items() if k in MODEL_KEYS + EVAL_KEYS or is_data_key(k)}
    bases = [b for b in (_training_cwd(config, run_dir), PROJECT_ROOT) if b is not None]
    for key in PATH_KEYS:
        if key in values:
            values[key] = _absolute(values[key], bases)
    return {"path": config_path, "values": values}


def _same(key, a, b):
    if key in PATH_KEYS and a is not None and b is not None:
        return os.path.abspath(a) == os.path.abspath(b)
    return a == b


def apply_run_config(args, given, extra_keys=(), config=None, log=None):
    """Take the model and data keys the entry point has (plus extra_keys) from the run folder of args.pretrained.

    A flag in `given` (set on the command line) wins; when it differs from the run, one line says so: a warning
    for the model keys (the codes then differ from training), a note for the data keys (another database).
    Returns the run config (run_config_for) or None.
    """
    config = config if config is not None else run_config_for(getattr(args, "pretrained", None))
    if config is None:
        return None
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    for key, trained in config["values"].items():
        if not hasattr(args, key) or (key not in MODEL_KEYS and not is_data_key(key) and key not in extra_keys):
            continue
        if key not in given:
            setattr(args, key, trained)
        elif not _same(key, getattr(args, key), trained):
            flag = "--" + key.replace("_", "-") if key in ("data_path", "list_dir") else "--" + key
            if key in MODEL_KEYS:
                log(f"warning: {flag} {getattr(args, key)} contradicts how the model was trained ({key} = {trained} "
                    f"in {config['path']}); its codes will not match training. Drop {flag} to use the run's value.")
            else:
                log(f"note: {flag} {getattr(args, key)} instead of the run's {trained} ({config['path']})")
    return config


def absolute_data_paths(args):
    """Data paths as absolute paths, so config.json and exports work from any folder."""
    for key in PATH_KEYS:
        if getattr(args, key, None) is not None:
            setattr(args, key, os.path.abspath(getattr(args, key)))
    return args


def resolve_checkpoint(path, bit):
    """The checkpoint file; a run folder means its model_best_{bit}.pdparams (else last_{bit}.pdckpt)."""
    if path is None:
        raise ValueError(f"--pretrained is required: a model_best_{bit}.pdparams or last_{bit}.pdckpt written by "
                         f"main_single_gpu.py (or its run folder)")
    path = Path(path)
    if path.is_dir():
        for name in (f"model_best_{bit}.pdparams", f"last_{bit}.pdckpt"):
            if (path / name).is_file():
                return path / name
        found = ", ".join(sorted(p.name for p in path.glob("*_*.pd*") if p.suffix in (".pdparams", ".pdckpt")))
        raise FileNotFoundError(f"--pretrained {path}: folder has neither model_best_{bit}.pdparams nor "
                                f"last_{bit}.pdckpt (check --bit; the folder has {found or 'no checkpoint'})")
    if not path.is_file():
        raise FileNotFoundError(f"--pretrained {path}: checkpoint not found")
    return path
