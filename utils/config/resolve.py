"""The one way every entry point resolves its flags: the command line, then the trained run's config.json
(predict.py, serve.py, export_model.py, infer.py, `--eval`; utils/config/run_folder.py), then the dataset's preset
(utils/config/presets.py), then the checks every value must pass, each error naming the flag as it was typed.
"""
import os

from utils.config.flags import check_positive, flag_spellings, given_flags, parse_path_prefix
from utils.config.presets import apply_preset, preset_for
from utils.config.run_folder import PATH_KEYS, apply_run_config, resolve_checkpoint
from utils.runtime.errors import UsageError

POSITIVE = ("bit", "batch_size", "epochs", "eval_every", "continuation_step", "lr_step", "resize_size", "crop_size",
            "num_results", "iterations", "snapshot_every")


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
    # a flag the recipe's preset leaves unset is another recipe's (--iterations under the seed recipe): not checked
    preset = preset_for(args.dataset, getattr(args, "recipe", "seed"))
    check_positive(args, [name for name in POSITIVE if name in args
                          and not (getattr(args, name) is None and name not in preset)], spelled)
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
