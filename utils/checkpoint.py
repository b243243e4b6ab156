"""Checkpoints written atomically (temp file + rename): a crash mid-write never leaves a broken file."""
import json
from pathlib import Path

import paddle

from utils.dist import is_main_process
from utils.errors import MissingFileError, UsageError
from utils.fileio import atomic_write


def save(obj, path):
    """paddle.save, atomically, on rank 0 only."""
    if is_main_process():
        atomic_write(path, lambda tmp: paddle.save(obj, tmp))
    return Path(path)


def save_json(obj, path):
    if is_main_process():
        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(obj, f, indent=2, sort_keys=True, default=str)
                f.write("\n")
        atomic_write(path, write)
    return Path(path)


def load(path, what="checkpoint"):
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path}")
    return paddle.load(str(path))


def hash_bits_of(model_state, path):
    """Bit width of a HashNet state dict, read from its hash layer."""
    if "hash_layer.weight" not in model_state:
        raise UsageError(f"{path} is not a HashNet checkpoint: it has no 'hash_layer.weight' "
                         f"(keys start with {sorted(model_state)[:3]}...)")
    return int(model_state["hash_layer.weight"].shape[1])


def _some(names, shown=8):
    """A list of names for a message: the first `shown`, then how many more."""
    return str(names) if len(names) <= shown else f"{names[:shown]} and {len(names) - shown} more"


def load_model_weights(model, path):
    """Load HashNet weights (a model_best_*.pdparams or a last_*.pdckpt) after checking the bit width."""
    state = load(path, "checkpoint (--pretrained)")
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    bits = hash_bits_of(state, path)
    if bits != model.hash_bit:
        shape = list(state["hash_layer.weight"].shape)
        raise UsageError(f"{path} holds a {bits}-bit model (hash_layer.weight {shape}) "
                         f"but --bit is {model.hash_bit}; pass --bit {bits} or the {model.hash_bit}-bit checkpoint")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        backbone = getattr(model, "backbone", None)
        hint = (f" (this model's backbone is {backbone}: was the checkpoint trained with another --backbone? its run "
                f"folder's config.json says which)" if backbone else "")
        raise UsageError(f"{path} does not fit HashNet: missing keys {_some(missing)}, unexpected keys "
                         f"{_some(unexpected)}{hint}")
    model.set_state_dict(state)
    return model
