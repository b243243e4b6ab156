"""Image retrieval shared by predict.py (dynamic graph) and deploy/inference_python/infer.py (Paddle Inference).

The flow both use (`run_retrieval`): collect the query images, encode them, get the database codes (from the
cache in the save folder or computed once), search the bit-packed codes (utils.tools.topk_search: Hamming
distance, ties in database order), then print a table or JSON lines and save the best match and a contact sheet.

Database-code cache: `<save_path>/database_code_{bit}.npy` (±1 float32, one row per database.txt line, as the seed
wrote it) plus the sidecar `database_code_{bit}.json` saying what made it: the checkpoint (path, size, mtime,
sha256), the database list (path, sha256), the preprocessing (resize/crop/mean/std) and the sha256 of the .npy
itself. A cache is used only when checkpoint sha256, list sha256, preprocessing, bit width and item count all
match; otherwise it is recomputed, saying why in one line. Both files are written atomically, the sidecar last
and after the old sidecar is removed, so an interrupted write never leaves a cache that looks valid.

The encoders are duck-typed so both engines plug in: `encode_batch(images NCHW uint8 numpy) -> raw outputs`
for queries and `encode_database(ImageList) -> ±1 codes` for the database (the models normalise on the device).
With --cache_dir the database images are read from the decoded evaluation cache (utils/datacache.py).
Messages go to stderr so that `--json` output on stdout stays machine-readable.
"""
import hashlib
import json
import os
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils import checkpoint
from utils.codes import binarize, pack_codes, topk_search
from utils.config import _add, check_positive
from utils.fileio import atomic_write
from utils.datasets import (IMAGENET_MEAN, IMAGENET_STD, LIST_NAMES, ImageList, build_loader, dataset_lists,
                            load_rgb, read_list_file)

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")
CACHE_FORMAT = 1
THUMB_SIZE = 160
CAPTION_HEIGHT = 28
SHEET_COLUMNS = 6
LEGEND_HEIGHT = 26
BORDER_WIDTH = 4
# contact sheet and search page: the query, results sharing a label with it, results sharing none
COLOURS = {"query": (40, 90, 220), "right": (30, 160, 60), "wrong": (220, 40, 40)}


def log(message):
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------- flags
def add_retrieval_flags(parser, dataset_default="coco"):
    """The flags predict.py and infer.py share; unset ones are filled from the dataset preset (apply_preset)."""
    g = parser.add_argument_group("retrieval")
    _add(g, "--img", action="extend", nargs="+", default=None, metavar="PATH",
         help="query images and/or folders of images (--img a.jpg b.jpg, or --img repeated)")
    _add(g, "--dataset", default=dataset_default, help="database lists in data/<dataset>/; 'toy' is generated")
    _add(g, "--data-path", default=None, help="data root the list paths are relative to (default: preset)")
    _add(g, "--list-dir", default=None, help="folder of train/test/database.txt (default data/<dataset>)")
    _add(g, "--path-prefix", action="append", default=None, metavar="OLD=NEW",
         help="rewrite list paths starting with OLD to start with NEW, as in training (default: preset)")
    _add(g, "--topk", type=int, default=10, help="results per query")
    _add(g, "--save_path", default=None, help="database-code cache, best-match copies and contact sheets (default: "
                                              "<run folder>/retrieval for a trained run, else output)")
    _add(g, "--show", action="store_true", help="open each contact sheet (PIL show(); skipped without a display)")
    _add(g, "--json", action="store_true", help="print one JSON object per query instead of the table")
    _add(g, "--batch-size", type=int, default=None, help="images per forward pass (default: preset)")
    _add(g, "--num_workers", type=int, default=None,
         help="DataLoader workers for encoding the database (default: from the CPUs available, utils/dist.py)")
    _add(g, "--cache_dir", default=None,
         help="keep the database's decoded, resized and cropped images here (uint8 .npy, built once; README, "
              "'Data caches')")
    return g


def resolve_loader_flags(args):
    """--num_workers: >= 0, or the default derived from the CPUs available when unset."""
    from utils.dist import default_num_workers
    if args.num_workers is None:
        args.num_workers = default_num_workers()
    if args.num_workers < 0:
        raise ValueError(f"--num_workers must be >= 0, got {args.num_workers}")
    return args


# --------------------------------------------------------------------------------------------------------- queries
def collect_images(items, flag="--img"):
    """Query image paths from files and folders (a folder's images, sorted by name, not recursive)."""
    if not items:
        raise ValueError(f"no query given: pass {flag} PATH (an image or a folder of images), repeatable")
    paths = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"{flag} {path}: the folder has no images (looked for {' '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"{flag} {path}: query image not found")
    return paths


def load_batch(paths, transform):
    """Decode and preprocess images exactly as ImageList does for the database; (n, 3, crop, crop) uint8."""
    arrays = []
    for path in paths:
        try:
            image = load_rgb(path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"query image not found: {path}") from err
        except RuntimeError as err:
            raise RuntimeError(f"query image {path} is unreadable: {err.__cause__ or err}") from err
        arrays.append(transform(image))
    return np.stack(arrays)


def encode_images(encode_batch, paths, transform, batch_size, desc="encode queries"):
    """Raw outputs (n, bits) of encode_batch over the images, in order, batch by batch."""
    starts = range(0, len(paths), batch_size)
    outputs = [np.asarray(encode_batch(load_batch(paths[s:s + batch_size], transform)), dtype=np.float32)
               for s in tqdm(starts, desc=desc, leave=False, disable=len(starts) < 2, file=sys.stderr)]
    return np.concatenate(outputs)


def encode_dataset(encode_batch, dataset, batch_size, num_workers, desc="encode database"):
    """±1 codes of every dataset item, in dataset order, through a numpy encode_batch (the inference engine)."""
    loader = build_loader(dataset, num_workers, batch_size)
    outputs = []
    for images, _, _ in tqdm(loader, desc=desc, leave=False, file=sys.stderr):
        outputs.append(np.asarray(encode_batch(images.numpy()), dtype=np.float32))
    return binarize(np.concatenate(outputs))


# -------------------------------------------------------------------------------------------------------- database
# COCO's label j is the j-th category in alphabetical order (data/make_coco_lists.py, docs/protocol.md#ms-coco-protocol): 73 = train.
COCO_CLASSES = (
    "airplane", "apple", "backpack", "banana", "baseball bat", "baseball glove", "bear", "bed", "bench", "bicycle",
    "bird", "boat", "book", "bottle", "bowl", "broccoli", "bus", "cake", "car", "carrot", "cat", "cell phone", "chair",
    "clock", "couch", "cow", "cup", "dining table", "dog", "donut", "elephant", "fire hydrant", "fork", "frisbee",
    "giraffe", "hair drier", "handbag", "horse", "hot dog", "keyboard", "kite", "knife", "laptop", "microwave",
    "motorcycle", "mouse", "orange", "oven", "parking meter", "person", "pizza", "potted plant", "refrigerator",
    "remote", "sandwich", "scissors", "sheep", "sink", "skateboard", "skis", "snowboard", "spoon", "sports ball",
    "stop sign", "suitcase", "surfboard", "teddy bear", "tennis racket", "tie", "toaster", "toilet", "toothbrush",
    "traffic light", "train", "truck", "tv", "umbrella", "vase", "wine glass", "zebra")


class Database:
    """The database list (paths, labels), the class names when known, and the labels of every listed image.

    Class names: classes.txt (one name a line) next to the lists or in the data root; else COCO's 80 names for a
    COCO dataset (its name starts with 'coco') with 80 labels; else None (labels shown as numbers)."""

    def __init__(self, dataset, data_path, list_dir=None, path_prefix=None):
        if dataset == "toy" and list_dir is None:
            from utils.toy_dataset import ensure_toy_dataset
            ensure_toy_dataset(Path(data_path))
        self.root = Path(data_path)
        self.lists = lists = dataset_lists(dataset, list_dir)
        self.list_path = lists["database"]
        self.path_prefix = path_prefix
        self.paths, self.labels = read_list_file(self.list_path, path_prefix=path_prefix)
        self.num_classes = self.labels.shape[1]
        self.class_names = self._class_names([Path(self.list_path).parent, self.root])
        if self.class_names is None and str(dataset).startswith("coco") and self.num_classes == len(COCO_CLASSES):
            self.class_names = list(COCO_CLASSES)
        # labels of every image any list names, so a query from the dataset shows which labels it shares
        self._labels_of = {}
        for split in LIST_NAMES:
            paths, labels = (self.paths, self.labels) if split == "database" else read_list_file(
                lists[split], num_classes=self.num_classes, path_prefix=path_prefix)
            for rel, row in zip(paths, labels):
                self._labels_of.setdefault(self._key(self.root / rel), row)

    def __len__(self):
        return len(self.paths)

    @staticmethod
    def _key(path):
        return os.path.normcase(os.path.abspath(path))

    def _class_names(self, folders):
        for folder in folders:
            path = folder / "classes.txt"
            if path.is_file():
                names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
                if len(names) != self.num_classes:
                    raise ValueError(f"{path} has {len(names)} class names but {self.list_path} has "
                                     f"{self.num_classes} labels per line; fix or remove {path}")
                return names
        return None

    def image_path(self, index):
        return self.root / self.paths[index]

    def listed_paths(self):
        """Absolute paths of every image any of the lists names."""
        return list(self._labels_of)

    def labels_of(self, path):
        """0/1 label row of an image named in the dataset's lists, else None."""
        return self._labels_of.get(self._key(path))

    def dataset(self, transform, cache_dir=None, resize_size=None, crop_size=None):
        """The database images through `transform`, or from the decoded evaluation cache in cache_dir (built on
        first use; its images equal the transform's, so the codes are the same)."""
        dataset = ImageList(self.root, self.list_path, transform, self.num_classes, path_prefix=self.path_prefix)
        if cache_dir is None:
            return dataset
        from utils import datacache
        return datacache.cached_eval_dataset(dataset, cache_dir, resize_size, crop_size)


# ----------------------------------------------------------------------------------------------------------- cache
def sha256_of(path, chunk=1 << 22):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path):
    """{path, size, mtime, sha256} of a file: what the cache sidecar records about a checkpoint."""
    path = Path(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime, "sha256": sha256_of(path)}


def cache_paths(save_path, bit):
    save_path = Path(save_path)
    return save_path / f"database_code_{bit}.npy", save_path / f"database_code_{bit}.json"


def cache_identity(bit, checkpoint_fingerprint, database, resize_size, crop_size):
    return {
        "format": CACHE_FORMAT, "bit": int(bit), "num_items": len(database),
        "checkpoint": checkpoint_fingerprint,
        "database_list": {"path": str(Path(database.list_path).resolve()), "sha256": sha256_of(database.list_path)},
        "data_root": str(Path(database.root).resolve()),  # informative: moving the images keeps the cache valid
        "preprocess": {"resize_size": int(resize_size), "crop_size": int(crop_size),
                       "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
    }


def cache_mismatch(saved, wanted):
    """Why a cache recorded as `saved` cannot stand for `wanted` (one short phrase), or None when it can."""
    if saved.get("format") != wanted["format"]:
        return f"has sidecar format {saved.get('format')}, expected {wanted['format']}"
    if saved.get("bit") != wanted["bit"]:
        return f"holds {saved.get('bit')}-bit codes, not {wanted['bit']}-bit"
    old, new = saved.get("checkpoint") or {}, wanted["checkpoint"]
    if old.get("sha256") != new["sha256"]:
        return (f"was made by other weights ({old.get('path')}, sha256 {str(old.get('sha256'))[:12]}) than "
                f"{new['path']} (sha256 {new['sha256'][:12]})")
    old, new = saved.get("database_list") or {}, wanted["database_list"]
    if old.get("sha256") != new["sha256"]:
        return f"was made for another database list ({old.get('path')}, sha256 {str(old.get('sha256'))[:12]}) " \
               f"than {new['path']} (sha256 {new['sha256'][:12]})"
    if saved.get("preprocess") != wanted["preprocess"]:
        return f"was made with preprocessing {saved.get('preprocess')}, not {wanted['preprocess']}"
    if saved.get("num_items") != wanted["num_items"]:
        return f"holds {saved.get('num_items')} codes, the list has {wanted['num_items']}"
    return None


def load_cached_codes(save_path, identity):
    """(codes, None) when a valid cache is there, else (None, reason); reason is None when there is no cache."""
    npy, sidecar = cache_paths(save_path, identity["bit"])
    if not npy.is_file():
        return None, None
    if not sidecar.is_file():
        return None, f"has no sidecar {sidecar.name} saying which weights made it"
    try:
        saved = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return None, f"has an unreadable sidecar {sidecar} ({err})"
    reason = cache_mismatch(saved, identity)
    if reason:
        return None, reason
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
    checkpoint.save_json(dict(identity, codes_sha256=sha256_of(npy)), sidecar)
    return npy


def database_codes(save_path, identity, compute):
    """The database codes: from the cache when it matches `identity`, else compute() and cache them."""
    npy, _ = cache_paths(save_path, identity["bit"])
    codes, reason = load_cached_codes(save_path, identity)
    if codes is not None:
        log(f"database codes: {npy} ({codes.shape[0]} x {codes.shape[1]} bits, cached)")
        return codes
    if reason:
        log(f"database code cache {npy} {reason}; recomputing")
    else:
        log(f"database codes: encoding {identity['num_items']} images once; cached in {npy}")
    codes = np.asarray(compute(), dtype=np.float32)
    if codes.shape != (identity["num_items"], identity["bit"]):
        raise RuntimeError(f"database encoding returned shape {codes.shape}, expected "
                           f"{(identity['num_items'], identity['bit'])}")
    save_codes(save_path, codes, identity)
    return codes


# ---------------------------------------------------------------------------------------------------------- search
def search(query_codes, db_codes, k):
    """Top-k database indices and Hamming distances per query (stable: ties in database order)."""
    return topk_search(pack_codes(query_codes), pack_codes(db_codes), k)


def _label_info(indices, names):
    return {"labels": [int(i) for i in indices],
            "label_names": [names[i] for i in indices] if names else None}


def build_results(query_paths, indices, distances, database, bit, query_rows=None):
    """One dict per query (the JSON schema of --json). query_rows: the queries' 0/1 label rows when known otherwise
    (an uploaded copy of a listed image); by default looked up by path in the dataset lists."""
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
            item = {"rank": rank, "distance": int(dist), "index": int(index), "path": str(database.image_path(index))}
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
def _thumbnail(path, caption, border=None):
    from PIL import Image, ImageDraw
    cell = Image.new("RGB", (THUMB_SIZE, THUMB_SIZE + CAPTION_HEIGHT), "white")
    image = load_rgb(path)
    scale = (THUMB_SIZE - 12) / max(image.size)  # small images (the 64 px toy set) are enlarged too
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
    cell.paste(image, ((THUMB_SIZE - image.width) // 2, (THUMB_SIZE - image.height) // 2))
    draw = ImageDraw.Draw(cell)
    if border is not None:
        draw.rectangle([1, 1, THUMB_SIZE - 2, THUMB_SIZE - 2], outline=border, width=BORDER_WIDTH)
    draw.text((6, THUMB_SIZE + 6), caption, fill="black")
    return cell


def match_colour(entry, item):
    """Border of a result: shares a label with the query (right), shares none (wrong), or None when the query's
    labels are unknown (an image outside the dataset lists)."""
    if entry.get("query_labels") is None or item.get("shared_labels") is None:
        return None
    return COLOURS["right"] if item["shared_labels"] else COLOURS["wrong"]


def _legend(entry, min_width):
    """The legend line, at least min_width wide (wider when its text needs it)."""
    from PIL import Image, ImageDraw
    keys = _legend_keys(entry)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max(min_width, 6 + sum(20 + int(measure.textlength(text)) + 18 for _, text in keys))
    strip = Image.new("RGB", (width, LEGEND_HEIGHT), "white")
    draw = ImageDraw.Draw(strip)
    x = 6
    for colour, text in keys:
        draw.rectangle([x, 6, x + 14, LEGEND_HEIGHT - 8], outline=COLOURS[colour], width=BORDER_WIDTH)
        draw.text((x + 20, 7), text, fill="black")
        x += 20 + int(draw.textlength(text)) + 18
    return strip


def _legend_keys(entry):
    if entry.get("query_labels") is None:
        keys = [("query", "query (labels unknown: not in the dataset lists, so results are not marked)")]
    else:
        keys = [("query", "query"), ("right", "shares a label with the query"),
                ("wrong", "shares no label with the query")]
    return keys


def contact_sheet(entry):
    """A legend line, then the query (blue frame) and its matches, each framed green when it shares a label with
    the query and red when it shares none (unframed when the query's labels are unknown), captioned with rank and
    Hamming distance."""
    from PIL import Image
    cells = [_thumbnail(entry["query"], "query", border=COLOURS["query"])]
    cells += [_thumbnail(item["path"], f"#{item['rank']}  distance {item['distance']}", match_colour(entry, item))
              for item in entry["results"]]
    columns = min(SHEET_COLUMNS, len(cells))
    rows = -(-len(cells) // columns)
    legend = _legend(entry, columns * THUMB_SIZE)
    sheet = Image.new("RGB", (legend.width, LEGEND_HEIGHT + rows * (THUMB_SIZE + CAPTION_HEIGHT)), (235, 235, 235))
    sheet.paste(legend, (0, 0))
    for i, cell in enumerate(cells):
        sheet.paste(cell, ((i % columns) * THUMB_SIZE, LEGEND_HEIGHT + (i // columns) * (THUMB_SIZE + CAPTION_HEIGHT)))
    return sheet


def save_outputs(entry, save_path):
    """Copy the best match into save_path (as the seed did) and write the contact sheet PNG; records both."""
    save_path = Path(save_path)
    save_path.mkdir(parents=True, exist_ok=True)
    best = Path(entry["results"][0]["path"])
    copy = save_path / best.name
    if not (copy.exists() and copy.resolve() == best.resolve()):
        shutil.copyfile(best, copy)
    sheet_path = save_path / f"{Path(entry['query']).stem}_top{entry['topk']}.png"
    atomic_write(sheet_path, lambda tmp: contact_sheet(entry).save(tmp, format="PNG"))
    entry["best_match_copy"], entry["contact_sheet"] = str(copy), str(sheet_path)
    return entry


def show(path):
    """Open an image with PIL's viewer; skipped (with a note) where no display is available."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        log(f"--show: no display (DISPLAY unset); contact sheet saved at {path}")
        return False
    from PIL import Image
    try:
        with Image.open(path) as image:
            image.show()
    except Exception as err:  # viewers fail in many ways; the sheet is saved anyway
        log(f"--show: could not open a viewer ({err}); contact sheet saved at {path}")
        return False
    return True


# ------------------------------------------------------------------------------------------------------------ flow
def load_database(args, bit, transform, encode_database, checkpoint_fingerprint, resize_size, crop_size):
    """(Database of args.dataset / data_path / list_dir, its ±1 codes from the cache in args.save_path or encoded
    once): what predict.py, infer.py and the search page (serve.py) search."""
    database = Database(args.dataset, args.data_path, args.list_dir, getattr(args, "path_prefix", None))
    identity = cache_identity(bit, checkpoint_fingerprint, database, resize_size, crop_size)
    cache_dir = getattr(args, "cache_dir", None)  # the decoded evaluation cache (utils/datacache.py), when enabled
    codes = database_codes(args.save_path, identity, lambda: encode_database(
        database.dataset(transform, cache_dir, resize_size, crop_size)))
    return database, codes


def run_retrieval(args, queries, bit, transform, encode_batch, encode_database, checkpoint_fingerprint,
                  resize_size, crop_size, out=None):
    """The whole predict/infer flow for the query paths (collect_images); returns the list of result dicts, also
    printed to `out` (default stdout).

    Queries are decoded and encoded before the database so a bad query fails before minutes of encoding.
    """
    out = out or sys.stdout
    check_positive(args, ["topk", "batch_size"])
    query_codes = binarize(encode_images(encode_batch, queries, transform, args.batch_size))
    database, db_codes = load_database(args, bit, transform, encode_database, checkpoint_fingerprint, resize_size,
                                       crop_size)
    indices, distances = search(query_codes, db_codes, args.topk)
    results = build_results(queries, indices, distances, database, bit)
    for entry in results:
        save_outputs(entry, args.save_path)
        print(json.dumps(entry, ensure_ascii=False) if args.json else format_table(entry) + "\n", file=out,
              flush=True)
        if args.show:
            show(entry["contact_sheet"])
    return results


def main_guard(run, argv=None):
    """Run a CLI body; a user error becomes `error: <message>` on stderr and exit status 1, no traceback.

    A failure in another thread (a bad database image met by the DataLoader's loading thread) ends the process at
    once the same way: left alone, that thread dies and the main thread waits on the loader forever.
    """
    from utils.failure import cause_of

    def thread_failed(args):
        if args.exc_type is not SystemExit:
            log(f"error: {cause_of(args.exc_value)}")
            os._exit(1)

    previous, threading.excepthook = threading.excepthook, thread_failed
    try:
        run(argv)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        log(f"error: {err}")
        return 1
    finally:
        threading.excepthook = previous
    return 0
