"""Checkpoints written atomically (temp file + rename): a crash mid-write never leaves a broken file.

A run with a frozen backbone (--train-scope hash, the toy preset) writes the backbone's weights once, into
frozen_backbone_{bit}.pdparams in its run folder, and its checkpoints hold only what the run changes (the hash layer,
the fc7 standardisation) with a `frozen_backbone` entry naming that file and its sha256: about 1 MB each instead of
230 MB (AlexNet), twice per epoch. Every reader goes through `load_model_state`, which puts the two back together
from the checkpoint's folder, so a run folder stays complete on its own (copy or move it whole).
"""
import re
from pathlib import Path

import paddle

from utils.runtime import fileio, integrity
from utils.runtime.dist import is_main_process
from utils.runtime.errors import MissingFileError, UsageError
from utils.runtime.fileio import sha256_of

FROZEN_BACKBONE = "frozen_backbone"  # the entry of a checkpoint whose backbone is in a file of its own


def save(obj, path, holds=None, keep_previous=False):
    """paddle.save, atomically, on rank 0 only, with its checksum sidecar saying what it `holds`
    (utils/runtime/integrity.py). keep_previous (the last checkpoint): the new version is read back before it takes
    the name, and the version it replaces is kept as <stem>.prev<suffix>."""
    if is_main_process():
        check = (lambda tmp: paddle.load(tmp)) if keep_previous else None
        integrity.write_checked(path, lambda tmp: paddle.save(obj, tmp), holds or Path(path).name, check,
                                keep_previous)
    return Path(path)


def save_json(obj, path):
    """fileio.save_json, on rank 0 only."""
    if is_main_process():
        fileio.save_json(obj, path)
    return Path(path)


def alternatives(path):
    """The run's other checkpoints of the same bit width beside `path`, what a refusal offers: the last checkpoint,
    the previous one, the best model (a checkpoint is replaced first by one that can also resume the run)."""
    path = Path(path)
    found = re.fullmatch(r"(last|model_best)_(\d+)(\.prev)?\.pd\w+", path.name)
    if not found:
        return []
    bit = found.group(2)
    names = (f"last_{bit}.pdckpt", f"last_{bit}.prev.pdckpt", f"model_best_{bit}.pdparams")
    return [path.parent / name for name in names if name != path.name and (path.parent / name).is_file()]


def load(path, what="checkpoint", advice=None):
    """paddle.load after integrity.verified: a damaged, empty, truncated or unparsable file is one line naming it,
    what it holds and the newest intact checkpoint beside it (or `advice`)."""
    path = integrity.verified(path, what, alternatives(path), advice=advice)
    try:
        return paddle.load(str(path))
    except Exception as err:  # noqa: BLE001 - pickle, EOF and Paddle's own parse errors: the file, not the program
        raise UsageError(integrity.refusal(path, f"cannot be read ({type(err).__name__}: {str(err)[:120]})",
                                           integrity.holds(path, what=what), alternatives(path), advice)) from err


def hash_bits_of(model_state, path):
    """Bit width of a HashNet state dict, read from its hash layer: the columns of the linear layer's weight
    ([fc7, bits]); DNNH's divide-and-encode layer has one weight per fc7 unit, so its bias (one per bit) tells."""
    weight = model_state.get("hash_layer.weight")
    if weight is None:
        raise UsageError(f"{path} is not a HashNet checkpoint: it has no 'hash_layer.weight' "
                         f"(keys start with {sorted(model_state)[:3]}...)")
    if len(weight.shape) == 2:
        return int(weight.shape[1])
    if "hash_layer.bias" not in model_state:
        raise UsageError(f"{path} has a divide-and-encode hash layer (hash_layer.weight {list(weight.shape)}) "
                         f"but no 'hash_layer.bias', which gives its bit width")
    return int(model_state["hash_layer.bias"].shape[0])


def _some(names, shown=8):
    """A list of names for a message: the first `shown`, then how many more."""
    return str(names) if len(names) <= shown else f"{names[:shown]} and {len(names) - shown} more"


def _backbone_and_rest(model):
    """(the backbone's entries, the others) of the model's state dict (HashNet.backbone_state_names)."""
    names, state = set(model.backbone_state_names()), model.state_dict()
    return ({name: value for name, value in state.items() if name in names},
            {name: value for name, value in state.items() if name not in names})


def save_frozen_backbone(model, path, reuse=None, holds=None):
    """Write the backbone's entries of `model` to `path` on rank 0 and return the reference a checkpoint carries to
    it ({"file": its name, "sha256"}). `reuse`, the reference of the checkpoint a run resumes from, keeps the file
    when it is that one, unchanged (the earlier checkpoints name it)."""
    path = Path(path)
    if reuse and reuse["file"] == path.name and path.is_file() and sha256_of(path) == reuse["sha256"]:
        return reuse
    backbone = _backbone_and_rest(model)[0]
    if is_main_process():  # 230 MB for AlexNet: refused before writing when it cannot fit
        fileio.ensure_free_space(path, sum(t.numel().item() * t.element_size() for t in backbone.values()))
    save(backbone, path, holds)
    # the digest save() recorded in the file's sidecar, not a second pass over 230 MB
    return {"file": path.name, "sha256": integrity.read_record(path)["sha256"] if is_main_process() else None}


def model_entries(model, frozen=None):
    """A checkpoint's model part: {"model": the state dict}; with `frozen` (save_frozen_backbone's reference), the
    state dict without the backbone's entries, and the reference."""
    if frozen is None:
        return {"model": model.state_dict()}
    return {"model": _backbone_and_rest(model)[1], FROZEN_BACKBONE: frozen}


def save_weights(model, path, frozen=None, holds=None):
    """A model_best_*.pdparams: the plain state dict (what --pretrained and the seed's files hold), or with a frozen
    backbone model_entries (what the run changes and the backbone's reference)."""
    entries = model_entries(model, frozen)
    return save(entries if frozen else entries["model"], path, holds)


def load_model_state(path, what="checkpoint (--pretrained)"):
    """The whole model state dict of a checkpoint file (a plain state dict, or a dict with "model": a last_*.pdckpt,
    a frozen-backbone run's model_best), the frozen backbone's entries read from the file the checkpoint names (in its
    folder) and checked against its sha256."""
    path = Path(path)
    state = load(path, what)
    entries = state if isinstance(state.get("model"), dict) else {"model": state}
    reference = entries.get(FROZEN_BACKBONE)
    if not reference:
        return entries["model"]
    backbone = path.parent / reference["file"]
    if not backbone.is_file():
        raise MissingFileError(f"{path} holds the weights a frozen-backbone run trained, not its backbone, which is in "
                               f"{backbone} (written once per run): not found. Copy the run folder whole, or that "
                               f"file next to the checkpoint")
    backbone_state = load(backbone, f"the frozen backbone {path} was trained with",
                          advice="every checkpoint of its run needs it: restore it from a copy of the run folder, or "
                                 "retrain")
    # load() checked the file against its sidecar: the recorded digest is the file's (an older file: hashed here)
    found = (integrity.read_record(backbone) or {}).get("sha256") or sha256_of(backbone)
    if found != reference["sha256"]:
        raise UsageError(f"{backbone} is not the backbone {path} was trained with (sha256 {reference['sha256'][:12]} "
                         f"recorded, {found[:12]} found): a later run in the same folder wrote another one; use that "
                         f"run's checkpoints, or retrain")
    return {**backbone_state, **entries["model"]}


def load_model_weights(model, path, what="checkpoint (--pretrained)"):
    """Load HashNet weights (a model_best_*.pdparams or a last_*.pdckpt) after checking the bit width."""
    state = load_model_state(path, what)
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
