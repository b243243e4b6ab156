"""Every flag more than one entry point takes, defined once, and how a flag is spelled, parsed and named in errors.

An entry point picks the flags it takes (add_flags) and resolves them with utils/config/resolve.resolve_flags, so
`--dataset`, `--batch-size` or `--num-workers` mean and default the same everywhere. Help shows the hyphenated
spellings; each flag also answers to the other separator (`--data_path`) and to the seed repository's spellings
(`--epoch`, `--topK`, `--eval_epoch`, ...), while its value is stored under the flag's own name (`--map-at` ->
map_at), the key config.json records.
"""
import argparse

from models.backbones import BACKBONE_NAMES, DEFAULT_BACKBONE
from utils.config.presets import PRESET_LABELS, PRESETS
from utils.runtime.errors import UsageError

SEED_MAX = 2 ** 32 - 1
ENCODERS = ("auto", "dygraph", "inference")  # --encoder (utils/retrieval/fast_encoder.py)
# --engine: auto and the names of utils/retrieval/engines.ENGINES (tests/test_engines.py keeps the two equal)
SEARCH_ENGINES = ("auto", "linear", "mih", "faiss-flat", "faiss-hnsw", "faiss-ivf")


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


def str2bool(value):
    if isinstance(value, bool):
        return value
    if value.lower() in ("1", "true", "yes", "y"):
        return True
    if value.lower() in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


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


# ------------------------------------------------------------------------------------------------------------ flags
def add_flag(parser, name, *aliases, **kwargs):
    """Register a flag under its hyphenated name, its other-separator twin and any older `aliases`; help shows the
    name and the older names. The destination is the flag's name (`--map-at` -> map_at), whatever it was spelled."""
    stem = name[2:]
    twins = [f"--{alt}" for alt in dict.fromkeys((stem.replace("_", "-"), stem.replace("-", "_"))) if alt != stem]
    spellings = [name] + twins + [a for a in aliases if a not in twins]
    for alias in aliases:
        twin = "--" + alias[2:].replace("_", "-")
        if twin not in spellings:
            spellings.append(twin)
    kwargs.setdefault("dest", stem.replace("-", "_"))
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
    "--index": ((), dict(default=None, help="search this index of your own images (scripts/index_images.py) instead "
                                            "of the dataset's database; its model unless --pretrained")),
    "--engine": ((), dict(default="auto", choices=SEARCH_ENGINES,
                          help="search engine (docs/retrieval.md#engines): auto = linear scan under 1M items, "
                               "multi-index hashing from 1M; faiss-* need faiss-cpu")),
}
MODEL_FLAGS = ("--bit", "--backbone", "--pretrained", "--device", "--encoder", "--resize-size", "--resize-mode",
               "--crop-size")
DATA_FLAGS = ("--dataset", "--data-path", "--path-prefix", "--list-dir", "--batch-size", "--num-workers",
              "--cache-dir")
RETRIEVAL_FLAGS = ("--img", "--num-results", "--save-path", "--show", "--json")
COLLECTION_FLAGS = ("--index", "--engine")


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


# ------------------------------------------------------------------------------------------------- what was given
def check_positive(args, names, spelled=None):
    """Every named flag is a whole number >= 1, else a UsageError naming the flag (as spelled: flag_spellings)
    and the value."""
    for name in names:
        value = getattr(args, name)
        if value is None or value < 1:
            raise UsageError(f"{(spelled or {}).get(name, '--' + name)} must be >= 1, got {value}")


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
