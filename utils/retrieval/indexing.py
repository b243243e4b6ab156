"""Keeping an index of one's images up to date (docs/retrieval.md#an-index-of-your-images): which files are new or
changed, reading them (hash, then decode), encoding them in committed chunks, checking an index against its files.
The command is scripts/index_images.py; the storage utils/retrieval/index_store.py. The model comes in as
`load_encoder()`, called only when something is to be encoded, returning an Encoder.
"""
import glob
import os
import sys
import time
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.hashing.codes import binarize, pack_rows
from utils.retrieval.search import IMAGE_SUFFIXES
from utils.runtime.console import log_to_stderr
from utils.runtime.errors import MissingFileError, UsageError
from utils.runtime.fileio import sha256_of

# what encoding needs of the model: the eval transform, images (n, 3, h, w) uint8 -> raw outputs, batch size, threads
Encoder = namedtuple("Encoder", "transform encode_batch batch_size workers")


class ImagesFailed(UsageError):
    """Some images could not be read; the others were indexed. Ends the command with exit 2."""


# ------------------------------------------------------------------------------------------------------ inputs
def _is_image(path):
    return path.suffix.lower() in IMAGE_SUFFIXES


def _read_list(path, root):
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            labels = [int(v) for v in fields[1:]] or None
        except ValueError:
            raise UsageError(f"{path}, line {number}: expected `path label...` with 0/1 labels, got {line!r}") from None
        found.append((str((root / fields[0]).resolve()), labels))
    return found


def gather(inputs, root=None):
    """[(absolute path, labels or None)] of the images the inputs name, each once, in the order given (a folder's and
    a glob's images sorted)."""
    found = {}
    for item in inputs:
        expanded = os.path.expanduser(item)
        path = Path(expanded)
        if any(ch in expanded for ch in "*?[") and not path.exists():
            matches = sorted(Path(p) for p in glob.glob(expanded, recursive=True))
            images = [(str(p.resolve()), None) for p in matches if p.is_file() and _is_image(p)]
            if not images:
                raise UsageError(f"{item}: the pattern matches no image ({' '.join(IMAGE_SUFFIXES)})")
        elif path.is_dir():
            images = [(str(p.resolve()), None) for p in sorted(path.rglob("*")) if p.is_file() and _is_image(p)]
            if not images:
                raise UsageError(f"{item}: no image in the folder ({' '.join(IMAGE_SUFFIXES)}); searched recursively")
        elif path.is_file() and path.suffix.lower() == ".txt":
            images = _read_list(path, Path(root) if root else path.parent)
        elif path.is_file():
            images = [(str(path.resolve()), None)]
        else:
            raise MissingFileError(f"{item}: no such image, folder, list file or matching pattern")
        for image, labels in images:
            found.setdefault(image, labels)
    return list(found.items())



# ---------------------------------------------------------------------------------------------------- encoding
def _load(path, transform):
    """(sha256, size, mtime_ns, image array or None, error or None) of one file (the decode reads it back from the
    OS cache)."""
    from utils.datasets.image_list import load_rgb
    from utils.retrieval.limits import check_pixels

    try:
        stat = os.stat(path)
        digest = sha256_of(path)
        check_pixels(path, "image")
        image = transform(load_rgb(path))
        return digest, stat.st_size, stat.st_mtime_ns, image, None
    except (OSError, RuntimeError, UsageError) as err:
        return None, None, None, None, str(err.__cause__ or err)


def index_images(store, pending, encoder, chunk):
    """Encode `pending` [(path, labels)] and append them chunk by chunk; returns (indexed, failures, timings)."""
    failures, indexed, encode_seconds = {}, 0, 0.0
    start = time.perf_counter()
    with ThreadPoolExecutor(max(1, encoder.workers)) as pool, tqdm(total=len(pending), desc="index images", unit="img",
                                                           file=sys.stderr, disable=not pending) as bar:
        for lo in range(0, len(pending), chunk):
            part = pending[lo:lo + chunk]
            loaded = list(pool.map(lambda item: _load(item[0], encoder.transform), part))
            records, arrays = [], []
            for (path, labels), (digest, size, mtime, image, error) in zip(part, loaded):
                if error is not None:
                    failures[path] = error
                    log_to_stderr(f"error: {path}: {error} (left out; the other images are indexed)")
                    continue
                records.append({"path": path, "size": size, "mtime_ns": mtime, "sha256": digest, "labels": labels})
                arrays.append(image)
            if records:
                tick = time.perf_counter()
                step = encoder.batch_size
                outputs = [np.asarray(encoder.encode_batch(np.stack(arrays[b:b + step])), dtype=np.float32)
                           for b in range(0, len(arrays), step)]
                encode_seconds += time.perf_counter() - tick
                store.append(records, pack_rows(binarize(np.concatenate(outputs))))
                indexed += len(records)
            bar.update(len(part))
    return indexed, failures, {"seconds": time.perf_counter() - start, "encode_seconds": encode_seconds}


def plan(store, images):
    """(to encode [(path, labels)], unchanged count, touched records): a known file with the same size and mtime is
    unchanged; with another size or mtime its sha256 decides."""
    known = store.known()
    pending, unchanged, touched = [], 0, []
    for path, labels in images:
        before = known.get(path)
        if before is None:
            pending.append((path, labels))
            continue
        try:
            stat = os.stat(path)
        except OSError:
            pending.append((path, labels))  # gone since it was listed: _load names it
            continue
        if (stat.st_size, stat.st_mtime_ns) == before[:2]:
            unchanged += 1
        elif sha256_of(path) == before[2]:
            touched.append({"path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
        else:
            pending.append((path, labels))
    return pending, unchanged, touched


def update(store, images, load_encoder, chunk):
    """Index what is new or changed among `images`; prints the summary line; raises ImagesFailed at the end."""
    pending, unchanged, touched = plan(store, images)
    store.touch(touched)
    indexed, failures, timing = 0, {}, {"seconds": 0.0, "encode_seconds": 0.0}
    if pending:
        indexed, failures, timing = index_images(store, pending, load_encoder(), chunk)
    rate = indexed / timing["seconds"] if timing["seconds"] else 0.0
    encoder_rate = indexed / timing["encode_seconds"] if timing["encode_seconds"] else 0.0
    print(f"{store.folder}: {indexed} images indexed in {timing['seconds']:.1f} s ({rate:.1f} images/s; the encoder "
          f"alone {encoder_rate:.1f} images/s), {unchanged + len(touched)} unchanged, {len(failures)} unreadable; "
          f"{len(store)} items in the index", flush=True)
    if failures:
        names = ", ".join(list(failures)[:3]) + (", ..." if len(failures) > 3 else "")
        raise ImagesFailed(f"{len(failures)} of {len(images)} images could not be read ({names}); each is named "
                           f"above, the others are indexed")
    return {"indexed": indexed, "unchanged": unchanged + len(touched), "failed": len(failures), **timing}


def matching(store, patterns):
    """Indexed paths equal to a pattern, matching it as a glob, or inside it as a folder (patterns resolved as gather
    resolves inputs: `..` and symlinks followed)."""
    from fnmatch import fnmatch

    patterns = [os.path.realpath(os.path.expanduser(p)) for p in patterns]  # as gather stores them
    return [path for path in store.known() if any(path == p or fnmatch(path, p) or path.startswith(p.rstrip("/") + "/")
                                                  for p in patterns)]


def check_index(store, reencode, load_encoder):
    """(report, problems) of verify: the stored state, every file against its record (missing; changed: other size
    or mtime and other sha256), and `reencode` items encoded again and compared with their stored codes."""
    problems = store.check_structure()
    _, paths, _, slots = store.items()
    missing, changed = [], []
    known = store.known()
    for path in tqdm(paths, desc="verify files", file=sys.stderr, disable=len(paths) < 1000):
        try:
            stat = os.stat(path)
        except OSError:
            missing.append(path)
            continue
        size, mtime, digest = known[path]
        if (stat.st_size, stat.st_mtime_ns) != (size, mtime) and sha256_of(path) != digest:
            changed.append(path)
    problems += [f"missing: {p}" for p in missing[:20]] + [f"changed since indexed: {p}" for p in changed[:20]]
    bad = set(missing) | set(changed)
    sample = [i for i, p in enumerate(paths) if p not in bad]
    differing, reencoded = [], 0
    if reencode and sample and not problems:
        chosen = np.random.default_rng(0).choice(len(sample), min(reencode, len(sample)), replace=False)
        chosen = [sample[i] for i in sorted(chosen)]
        reencoded = len(chosen)
        encoder = load_encoder()
        images = np.stack([_load(paths[i], encoder.transform)[3] for i in chosen])
        fresh = pack_rows(binarize(np.asarray(encoder.encode_batch(images), dtype=np.float32)))
        stored = store.code_rows(slots[chosen])
        differing = [paths[i] for i, same in zip(chosen, (fresh == stored).all(axis=1)) if not same]
        problems += [f"stored code differs from a fresh encoding: {p}" for p in differing]
    report = {"items": len(paths), "missing": len(missing), "changed": len(changed), "reencoded": reencoded,
              "codes_differing": len(differing), "problems": problems}
    return report, problems
