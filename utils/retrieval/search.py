"""Image retrieval shared by predict.py (dynamic graph), deploy/inference_python/infer.py (Paddle Inference) and
the search page (serve.py): query encoding, the database-code cache, search and the result table.

The flow both use (`run_retrieval`): collect the query images, encode them, open what is searched (an index of one's
images with --index, else the database with its codes from the cache in the save folder or computed once: a
utils/retrieval/collection.py Collection), search it (Hamming distance, ties in item order, by the engine of
--engine: utils/retrieval/engines.py), then print a table or JSON lines and save the best match and a contact sheet.

Database-code cache: `<save_path>/database_code_{bit}.npy` (±1 float32, one row per database.txt line, as the seed
wrote it) plus the sidecar `database_code_{bit}.json` saying what made it: the checkpoint (path, size, mtime,
sha256), the database list (path, sha256), the preprocessing (resize/crop/mean/std) and the sha256 of the .npy
itself. A cache is used only when checkpoint sha256, list sha256, preprocessing, bit width and item count all
match; otherwise it is recomputed, saying why in one line. Both files are written atomically, the sidecar last
and after the old sidecar is removed, so an interrupted write never leaves a cache that looks valid.

The encoders are duck-typed so both engines plug in: `encode_batch(images NCHW uint8 numpy) -> raw outputs`
for queries and `encode_database(ImageList) -> ±1 codes` for the database (the models normalise on the device).
The database itself is utils/retrieval/database.py; the contact sheets utils/retrieval/contact_sheet.py. With
--cache-dir the database
images are read from the decoded evaluation cache (utils/datasets/cache.py). Messages go to stderr so that `--json`
output on stdout stays machine-readable.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.datasets.image_list import build_loader, load_rgb
from utils.datasets.normalization import IMAGENET_MEAN, IMAGENET_STD
from utils.hashing.codes import binarize
from utils.retrieval.contact_sheet import contact_sheet, show
from utils.retrieval.database import Database
from utils.retrieval.limits import cap_results, check_pixels, sheet_results
from utils.runtime.console import log_to_stderr
from utils.runtime.errors import MissingFileError, UsageError, UserError
from utils.runtime.fileio import atomic_write, save_json, sha256_of, sidecar_mismatch

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")
CACHE_FORMAT = 1
# the identity's entries a cache must match, in the order a difference is told; data_root is informative only
CHECKED_KEYS = ("format", "bit", "checkpoint", "database_list", "preprocess", "num_items")


# --------------------------------------------------------------------------------------------------------- queries
def collect_images(items, flag="--img"):
    """Query image paths from files and folders (a folder's images, sorted by name, not recursive)."""
    if not items:
        raise UsageError(f"no query given: pass {flag} PATH (an image or a folder of images), repeatable")
    paths = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UsageError(f"{flag} {path}: the folder has no images (looked for {' '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise MissingFileError(f"{flag} {path}: query image not found")
    return paths


def load_batch(paths, transform):
    """Decode and preprocess images exactly as ImageList does for the database; (n, 3, crop, crop) uint8."""
    arrays = []
    for path in paths:
        if Path(path).is_file():
            check_pixels(path)  # from the header, before a decompression bomb is decoded
        try:
            image = load_rgb(path)
        except FileNotFoundError as err:
            raise MissingFileError(f"query image not found: {path}") from err
        except RuntimeError as err:
            raise UsageError(f"query image {path} is unreadable: {err.__cause__ or err}") from err
        arrays.append(transform(image))
    return np.stack(arrays)


def encode_images(encode_batch, paths, transform, batch_size, desc="encode queries"):
    """Raw outputs (n, bits) of encode_batch over the images, in order, batch by batch; an unreadable image raises."""
    return encode_queries(encode_batch, paths, transform, batch_size, desc, skip_unreadable=False)[1]


def encode_queries(encode_batch, paths, transform, batch_size, desc="encode queries", skip_unreadable=True):
    """(readable paths, their raw outputs, {path: reason} of the others), batch by batch. An unreadable, vanished or
    over-limit query is reported in one line and the rest go on, so one bad file does not cost the batch (unless
    skip_unreadable is False: then its UserError is raised)."""
    readable, outputs, failures = [], [], {}
    starts = range(0, len(paths), batch_size)
    for start in tqdm(starts, desc=desc, leave=False, disable=len(starts) < 2, file=sys.stderr):
        arrays = []
        for path in paths[start:start + batch_size]:
            try:
                arrays.append(load_batch([path], transform)[0])
            except UserError as err:
                if not skip_unreadable:
                    raise
                failures[path] = str(err)
                log_to_stderr(f"error: {err} (skipped; the other queries are answered)")
                continue
            readable.append(path)
        if arrays:
            outputs.append(np.asarray(encode_batch(np.stack(arrays)), dtype=np.float32))
    return readable, (np.concatenate(outputs) if outputs else None), failures


class QueriesFailed(UsageError):
    """Some queries of a batch could not be read; the others were answered. Ends the command with exit 2."""


def failed_queries_error(failures, total):
    names = ", ".join(str(path) for path in list(failures)[:3]) + (", ..." if len(failures) > 3 else "")
    return QueriesFailed(f"{len(failures)} of {total} queries could not be read ({names}); each is named above, "
                         f"the others were answered")


def encode_dataset(encode_batch, dataset, batch_size, num_workers, desc="encode database"):
    """±1 codes of every dataset item, in dataset order, through a numpy encode_batch (the inference engine)."""
    loader = build_loader(dataset, num_workers, batch_size)
    outputs = []
    for images, _, _ in tqdm(loader, desc=desc, leave=False, file=sys.stderr):
        outputs.append(np.asarray(encode_batch(images.numpy()), dtype=np.float32))
    return binarize(np.concatenate(outputs))


# ----------------------------------------------------------------------------------------------------------- cache
def cache_paths(save_path, bit):
    save_path = Path(save_path)
    return save_path / f"database_code_{bit}.npy", save_path / f"database_code_{bit}.json"


def cache_identity(bit, checkpoint_fingerprint, database, resize_size, crop_size, resize_mode="short"):
    identity = {
        "format": CACHE_FORMAT, "bit": int(bit), "num_items": len(database),
        "checkpoint": checkpoint_fingerprint,
        "database_list": {"path": str(Path(database.list_path).resolve()), "sha256": sha256_of(database.list_path)},
        "data_root": str(Path(database.root).resolve()),  # informative: moving the images keeps the cache valid
        "preprocess": {"resize_size": int(resize_size), "crop_size": int(crop_size),
                       "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
    }
    if resize_mode != "short":  # recorded only when not the default, so the caches of earlier runs stay valid
        identity["preprocess"]["resize_mode"] = resize_mode
    return identity


def explain_mismatch(key, saved, wanted):
    """One short phrase on how a cache's recorded `key` differs from the wanted one, or None when the difference
    does not matter (a checkpoint or list recorded under another path or mtime: only their contents count)."""
    if key in ("checkpoint", "database_list"):
        saved = saved or {}
        if saved.get("sha256") == wanted["sha256"]:
            return None
        made = "by other weights" if key == "checkpoint" else "for another database list"
        return (f"was made {made} ({saved.get('path')}, sha256 {str(saved.get('sha256'))[:12]}) than "
                f"{wanted['path']} (sha256 {wanted['sha256'][:12]})")
    return {"format": f"has sidecar format {saved}, expected {wanted}",
            "bit": f"holds {saved}-bit codes, not {wanted}-bit",
            "preprocess": f"was made with preprocessing {saved}, not {wanted}",
            "num_items": f"holds {saved} codes, the list has {wanted}"}[key]


def load_cached_codes(save_path, identity):
    """(codes, None) when a valid cache is there, else (None, reason); reason is None when there is no cache."""
    npy, sidecar = cache_paths(save_path, identity["bit"])
    if not npy.is_file():
        return None, None
    if not sidecar.is_file():
        return None, f"has no sidecar {sidecar.name} saying which weights made it"
    saved, reason = sidecar_mismatch(sidecar, {key: identity[key] for key in CHECKED_KEYS}, explain_mismatch)
    if reason:
        return None, reason if saved is not None else f"has an {reason}"
    if sha256_of(npy) != saved.get("codes_sha256"):
        return None, "changed after its sidecar was written (sha256 differs)"
    codes = np.load(npy)
    if codes.shape != (identity["num_items"], identity["bit"]):
        return None, f"has shape {codes.shape}, expected {(identity['num_items'], identity['bit'])}"
    return codes, None


def save_codes(save_path, codes, identity):
    npy, sidecar = cache_paths(save_path, identity["bit"])
    if sidecar.exists():
        sidecar.unlink()  # until the new sidecar is written, the .npy must not look valid

    def write_npy(tmp):
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(codes, dtype=np.float32))

    atomic_write(npy, write_npy)
    save_json(dict(identity, codes_sha256=sha256_of(npy)), sidecar)
    return npy


def database_codes(save_path, identity, compute):
    """The database codes: from the cache when it matches `identity`, else compute() and cache them."""
    npy, _ = cache_paths(save_path, identity["bit"])
    codes, reason = load_cached_codes(save_path, identity)
    if codes is not None:
        log_to_stderr(f"database codes: {npy} ({codes.shape[0]} x {codes.shape[1]} bits, cached)")
        return codes
    if reason:
        log_to_stderr(f"database code cache {npy} {reason}; recomputing")
    else:
        log_to_stderr(f"database codes: encoding {identity['num_items']} images once; cached in {npy}")
    codes = np.asarray(compute(), dtype=np.float32)
    if codes.shape != (identity["num_items"], identity["bit"]):
        raise RuntimeError(f"database encoding returned shape {codes.shape}, expected "
                           f"{(identity['num_items'], identity['bit'])}")
    save_codes(save_path, codes, identity)
    return codes


# ---------------------------------------------------------------------------------------------------------- search
def _label_info(indices, names):
    return {"labels": [int(i) for i in indices],
            "label_names": [names[i] for i in indices] if names else None}


def build_results(query_paths, indices, distances, database, bit, query_rows=None, item_ids=None):
    """One dict per query (the JSON schema of --json). query_rows: the queries' 0/1 label rows when known otherwise
    (an uploaded copy of a listed image); by default looked up by path in the dataset lists. item_ids: the id each
    position is reported by ("index"; an index's item ids), by default the position (the database.txt line)."""
    results = []
    for qi, query in enumerate(query_paths):
        q_row = database.labels_of(query) if query_rows is None else query_rows[qi]
        q_labels = None if q_row is None else np.flatnonzero(q_row)
        entry = {"query": str(query), "bit": int(bit), "topk": int(indices.shape[1]),
                 "query_labels": None, "query_label_names": None, "results": []}
        if q_labels is not None:
            info = _label_info(q_labels, database.class_names)
            entry["query_labels"], entry["query_label_names"] = info["labels"], info["label_names"]
        for rank, (index, dist) in enumerate(zip(indices[qi], distances[qi]), 1):
            own = np.flatnonzero(database.labels[index])
            item = {"rank": rank, "distance": int(dist), "index": int(index if item_ids is None else item_ids[index]),
                    "path": str(database.image_path(index))}
            item.update(_label_info(own, database.class_names))
            if q_labels is None:
                item["shared_labels"] = item["shared_label_names"] = None
            else:
                shared = _label_info(np.intersect1d(q_labels, own), database.class_names)
                item["shared_labels"], item["shared_label_names"] = shared["labels"], shared["label_names"]
            entry["results"].append(item)
        results.append(entry)
    return results


def _format_labels(indices, names):
    if not indices:
        return "-"
    if names is None:
        return ", ".join(str(i) for i in indices)
    return ", ".join(f"{i} {name}" for i, name in zip(indices, names))


def format_table(entry):
    """The human-readable block of one query: rank, Hamming distance, shared labels (or labels), path."""
    known = entry["query_labels"] is not None
    head = (f"labels: {_format_labels(entry['query_labels'], entry['query_label_names'])}" if known
            else "labels: unknown (not in the dataset lists), showing each match's own labels")
    lines = [f"query {entry['query']}  ({head})",
             f"{'rank':>4}  {'dist':>4}  {'shared labels' if known else 'labels':<32}  path"]
    for item in entry["results"]:
        key = "shared_labels" if known else "labels"
        labels = _format_labels(item[key], item[key.replace("labels", "label_names")])
        lines.append(f"{item['rank']:>4}  {item['distance']:>4}  {labels:<32}  {item['path']}")
    if entry.get("best_match_copy"):
        lines.append(f"best match copied to {entry['best_match_copy']}; contact sheet {entry['contact_sheet']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------- outputs
def save_outputs(entry, save_path, sheet_limit=None):
    """Copy the best match into save_path (as the seed did) and write the contact sheet PNG (of the first
    sheet_limit results, default all); records both."""
    save_path = Path(save_path)
    save_path.mkdir(parents=True, exist_ok=True)
    best = Path(entry["results"][0]["path"])
    copy = save_path / best.name
    if not (copy.exists() and copy.resolve() == best.resolve()):
        shutil.copyfile(best, copy)
    sheet_path = save_path / f"{Path(entry['query']).stem}_top{entry['topk']}.png"
    drawn = dict(entry, results=entry["results"][:sheet_limit])
    atomic_write(sheet_path, lambda tmp: contact_sheet(drawn).save(tmp, format="PNG"))
    entry["best_match_copy"], entry["contact_sheet"] = str(copy), str(sheet_path)
    return entry


# ------------------------------------------------------------------------------------------------------------ flow
def load_database(args, bit, transform, encode_database, checkpoint_fingerprint, resize_size, crop_size):
    """(Database of args.dataset / data_path / list_dir, its ±1 codes from the cache in args.save_path or encoded
    once): what predict.py, infer.py and the search page (serve.py) search."""
    database = Database(args.dataset, args.data_path, args.list_dir, getattr(args, "path_prefix", None))
    resize_mode = getattr(args, "resize_mode", "short")
    identity = cache_identity(bit, checkpoint_fingerprint, database, resize_size, crop_size, resize_mode)
    cache_dir = getattr(args, "cache_dir", None)  # the decoded evaluation cache (utils/datasets/cache.py), when enabled
    codes = database_codes(args.save_path, identity, lambda: encode_database(
        database.dataset(transform, cache_dir, resize_size, crop_size, resize_mode)))
    return database, codes


def open_collection(args, bit, transform, encode_database, checkpoint_fingerprint, resize_size, crop_size):
    """The collection args ask to search (utils/retrieval/collection.py): the index of --index, whose model must be
    this checkpoint's, or else the dataset's database (load_database)."""
    from utils.retrieval.collection import dataset_collection, index_collection

    engine = getattr(args, "engine", "auto")
    if getattr(args, "index", None):
        from utils.retrieval.index_store import IndexStore, model_identity
        return index_collection(IndexStore(args.index, expect=model_identity(args, checkpoint_fingerprint["sha256"])),
                                engine)
    return dataset_collection(*load_database(args, bit, transform, encode_database, checkpoint_fingerprint,
                                             resize_size, crop_size), engine)


def run_retrieval(args, queries, bit, transform, encode_batch, collection_of, out=None):
    """The whole predict/infer flow for the query paths (collect_images); `collection_of()` opens what is searched
    (open_collection). Returns the list of result dicts, also printed to `out` (default stdout).

    Queries are decoded and encoded before the collection is opened so a bad query is told before minutes of
    encoding. An unreadable query is reported (one line on stderr; with --json an object {"query", "error"} in its
    place) and the others answered; then QueriesFailed ends the command with exit 2.
    """
    out = out or sys.stdout
    readable, raw, failures = encode_queries(encode_batch, queries, transform, args.batch_size)
    answered = {}
    if readable:
        collection = collection_of()
        k = cap_results(args.num_results, len(collection))
        indices, distances = collection.knn(binarize(raw), k)
        answered = dict(zip(readable, build_results(readable, indices, distances, collection.database, bit,
                                                    item_ids=collection.item_ids)))
        sheet_limit = sheet_results(k)
    results = []
    for query in queries:
        entry = answered.get(query)
        if entry is None:
            entry = {"query": str(query), "error": failures[query]}
            if args.json:
                print(json.dumps(entry, ensure_ascii=False), file=out, flush=True)
        else:
            save_outputs(entry, args.save_path, sheet_limit)
            print(json.dumps(entry, ensure_ascii=False) if args.json else format_table(entry) + "\n", file=out,
                  flush=True)
            if args.show:
                show(entry["contact_sheet"])
        results.append(entry)
    if failures:
        raise failed_queries_error(failures, len(queries))
    return results
