"""Checksums of the files a run writes and later reads (docs/training.md#checksums-and-damaged-files).

One mechanism for checkpoints, best models and the frozen backbone: a sidecar `<file>.sha256` (JSON: format, file,
sha256, size, and `holds`: what the file is, e.g. "the best model of run toy_16bits, epoch 12"), written atomically
after the file by `write_checked`, and one check, `verified(path, what)`, that every loader calls before parsing.
The caches (utils/datasets/cache.py, utils/retrieval/search.py) and exports (export_model.py: export_meta.json) keep
the digests in the JSON files they already had.

`write_checked` digests the new version before it takes the file's name, removes the old sidecar first (so no
window pairs a file with another version's digest: at worst a file is "not verified", never wrongly refused) and,
with keep_previous, moves an intact old version to `<stem>.prev<suffix>` with its sidecar: one extra generation,
so that one damaged file never loses a run. A file without a sidecar (written by an older run) loads with one note.
No Paddle import here.
"""
import os
from pathlib import Path

from utils.runtime.console import log_to_stderr
from utils.runtime.errors import MissingFileError, UsageError
from utils.runtime.fileio import atomic_write, read_json_object, save_json, sha256_of

SUFFIX = ".sha256"
FORMAT = 1
NO_CHECKSUM_NOTE = "no checksum: written before checksums were recorded (or its write was interrupted); not verified"


def checksum_path(path):
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def previous_path(path):
    """last_64.pdckpt -> last_64.prev.pdckpt: the generation kept until a new one is written and verified."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def read_record(path):
    """The sidecar's record of `path`, None when there is none, or {"unreadable": why}."""
    sidecar = checksum_path(path)
    record, why = read_json_object(sidecar)
    if record is None and why is None:
        return None
    if record is None and not why.startswith("a JSON"):
        return {"unreadable": f"its checksum file {sidecar} is unreadable ({why})"}
    if record is None or not {"sha256", "size"} <= set(record):
        return {"unreadable": f"its checksum file {sidecar} is not a checksum record"}
    return record


def damage(path):
    """(the sidecar's record or None, why `path` is not the file its sidecar describes, or None when it is or has
    no sidecar). Empty and truncated files are told as such, whether or not a sidecar is there."""
    path = Path(path)
    size = path.stat().st_size
    record = read_record(path)
    if size == 0:
        return record, "is empty (0 bytes)" + (f", {record['size']} were written" if record and "size" in record
                                               else "")
    if record is None:
        return None, None
    if "unreadable" in record:
        return None, record["unreadable"]
    if size != record["size"]:
        return record, f"is truncated or grown: {size} bytes, {record['size']} were written"
    if sha256_of(path) != record["sha256"]:
        return record, f"is damaged: its sha256 differs from the one recorded in {checksum_path(path).name}"
    return record, None


def is_intact(path):
    path = Path(path)
    return path.is_file() and damage(path)[1] is None


def holds(path, record=None, what=None):
    record = record if record is not None else read_record(path)
    return (record or {}).get("holds") or what or "a file"


def verified(path, what, instead=(), note=log_to_stderr, advice=None):
    """`path` after checking it against its sidecar; raises UsageError (one line) naming the file, what it holds
    and the first intact file of `instead` (the newest first) when it is empty, truncated or damaged. A file without
    a sidecar passes with one note."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path}")
    record, reason = damage(path)
    if reason:
        raise UsageError(refusal(path, reason, holds(path, record, what), instead, advice))
    if record is None:
        note(f"note: {path} ({what}): {NO_CHECKSUM_NOTE}")
    return path


def refusal(path, reason, held, instead=(), advice=None):
    """The one line refusing a damaged file: which, why, what it held and what to use instead: the first intact file
    of `instead`, else `advice`."""
    usable = next((Path(p) for p in instead if Path(p) != Path(path) and is_intact(p)), None)
    advice = (f"use {usable} instead ({holds(usable)})" if usable else
              advice or "no intact checkpoint of this run is left beside it: restore the file from a copy, or retrain")
    return f"{path} ({held}) {reason}; {advice}"


def write_checked(path, write_fn, held, check_fn=None, keep_previous=False):
    """Write `path` atomically through write_fn(tmp), check_fn(tmp) (e.g. read it back), digest it, then put it in
    place and write its sidecar. With keep_previous, the version it replaces is kept as previous_path(path) when
    intact (a damaged one is dropped, the kept previous stays)."""
    path, sidecar = Path(path), checksum_path(path)
    digest, previous = {}, previous_path(path)
    rotate = keep_previous and path.is_file() and is_intact(path)
    if rotate:  # the intact current version becomes the previous one: at most two versions on disk while writing
        previous.unlink(missing_ok=True)
        checksum_path(previous).unlink(missing_ok=True)

    def write_and_digest(tmp):
        write_fn(tmp)
        if check_fn is not None:
            check_fn(tmp)
        digest.update(sha256=sha256_of(tmp), size=os.path.getsize(tmp))
        if rotate:
            if sidecar.is_file():
                os.replace(sidecar, checksum_path(previous))
            os.replace(path, previous)
        sidecar.unlink(missing_ok=True)  # until the new sidecar is written, the file is "not verified", never refused

    atomic_write(path, write_and_digest)
    save_json({"format": FORMAT, "holds": held, **digest}, sidecar)
    return path
