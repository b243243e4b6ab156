"""Reading a trained run folder back: what predict.py, serve.py, export_model.py, infer.py and `--eval` take from
the run's config.json so that a run folder is all they need.

A flag given on the command line wins over the run's value; when it contradicts how the model was trained (bit
width, image sizes) one warning line says so, when it names another database a note does. Runs written before
data paths were stored absolute are read relative to the folder they were started in (deduced from the recorded
run_dir), else to the project folder.
"""
import json
import os
from pathlib import Path

from utils import PROJECT_ROOT
from utils.runtime.console import log_to_stderr
from utils.runtime.errors import MissingFileError, UsageError

# What a trained model needs to be used as it was trained. Overriding a MODEL key contradicts training (warned);
# overriding a data key searches or evaluates another database (said in a note).
MODEL_KEYS = ("bit", "backbone", "resize_size", "resize_mode", "crop_size")  # no "backbone": an AlexNet run
EVAL_KEYS = ("map_at",)  # --eval also reports the run's mAP@K
# what the network is, with no flag of its own in predict.py, serve.py and export_model.py: taken from the run always
# (--method dnnh has another hash layer, utils/train/build.hash_head_of)
NETWORK_KEYS = ("method",)
PATH_KEYS = ("data_path", "list_dir")  # stored absolute; old relative ones are resolved by _training_cwd
# Runs written before the configuration keys took their flags' names (7316a2e and earlier) stored the seed
# repository's names; their config.json is read under today's, so a run folder of any age stays enough.
OLD_KEYS = {"topK": "map_at", "epoch": "epochs", "eval_epoch": "eval_every", "de_step": "lr_step",
            "step_continuation": "continuation_step"}


def is_data_key(key):
    """dataset, data_path, list_dir and any other data_* / list_* / *prefix* key (e.g. a path mapping of the lists),
    so entry points copy whatever data flags the run was trained with."""
    return key == "dataset" or key.startswith(("data_", "list_")) or "prefix" in key


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
    (is_data_key), map_at, and data paths made absolute; an old run's keys under today's names (OLD_KEYS). Runs
    written before paths were stored absolute are read relative to the folder the run was started in (deduced from
    the recorded run_dir), else to the project root.
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
        raise UsageError(f"{config_path} is not valid JSON ({err}); fix it or pass the data flags explicitly") from err
    if not isinstance(config, dict):
        raise UsageError(f"{config_path}: expected a JSON object of training flags, got {type(config).__name__}")
    config = {OLD_KEYS.get(key, key): value for key, value in config.items()}
    values = {k: v for k, v in config.items() if k in MODEL_KEYS + EVAL_KEYS + NETWORK_KEYS or is_data_key(k)}
    bases = [b for b in (_training_cwd(config, run_dir), PROJECT_ROOT) if b is not None]
    for key in PATH_KEYS:
        if key in values:
            values[key] = _absolute(values[key], bases)
    return {"path": config_path, "values": values}


def _same(key, a, b):
    if key in PATH_KEYS and a is not None and b is not None:
        return os.path.abspath(a) == os.path.abspath(b)
    return a == b


def apply_run_config(args, given, extra_keys=(), config=None, log=None, spelled=None):
    """Take the model and data keys the entry point has (plus extra_keys) from the run folder of args.pretrained.

    A flag in `given` (set on the command line) wins; when it differs from the run, one line says so: a warning
    for the model keys (the codes then differ from training), a note for the data keys (another database).
    spelled: {key: the flag as typed} for those messages (utils/config/flags.flag_spellings). Returns the run config
    (run_config_for) or None.
    """
    config = config if config is not None else run_config_for(getattr(args, "pretrained", None))
    if config is None:
        return None
    log = log or log_to_stderr
    for key, trained in config["values"].items():
        if key in NETWORK_KEYS and key not in given:
            setattr(args, key, trained)
            continue
        if not hasattr(args, key) or (key not in MODEL_KEYS and not is_data_key(key) and key not in extra_keys):
            continue
        if key not in given:
            setattr(args, key, trained)
        elif not _same(key, getattr(args, key), trained):
            flag = (spelled or {}).get(key) or ("--" + key.replace("_", "-") if key in PATH_KEYS else "--" + key)
            if key in MODEL_KEYS:
                log(f"warning: {flag} {getattr(args, key)} contradicts how the model was trained ({key} = {trained} "
                    f"in {config['path']}); its codes will not match training. Drop {flag} to use the run's value.")
            else:
                log(f"note: {flag} {getattr(args, key)} instead of the run's {trained} ({config['path']})")
    return config


def resolve_checkpoint(path, bit):
    """The checkpoint file; a run folder means its model_best_{bit}.pdparams (else last_{bit}.pdckpt)."""
    if path is None:
        raise UsageError(f"--pretrained is required: a model_best_{bit}.pdparams or last_{bit}.pdckpt written by "
                         f"main_single_gpu.py (or its run folder)")
    path = Path(path)
    if path.is_dir():
        for name in (f"model_best_{bit}.pdparams", f"last_{bit}.pdckpt"):
            if (path / name).is_file():
                return path / name
        found = ", ".join(sorted(p.name for p in path.glob("*_*.pd*") if p.suffix in (".pdparams", ".pdckpt")))
        raise MissingFileError(f"--pretrained {path}: folder has neither model_best_{bit}.pdparams nor "
                                f"last_{bit}.pdckpt (check --bit; the folder has {found or 'no checkpoint'})")
    if not path.is_file():
        raise MissingFileError(f"--pretrained {path}: checkpoint not found; train the model first (main_single_gpu.py "
                               f"or scripts/train_*.sh write <run folder>/model_best_{bit}.pdparams) or name one "
                               f"that exists (scripts/test_*.sh look in WEIGHTS_DIR, default output)")
    return path
