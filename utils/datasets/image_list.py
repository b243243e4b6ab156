"""List files, the image-list dataset and its transforms (docs/protocol.md#seed-recipe, #ms-coco-protocol).

A dataset named NAME is three list files in `data/NAME/` (train.txt, test.txt = queries, database.txt), each line
`<path relative to the data root> <C space-separated 0/1 labels>`. The number of classes is read from the lists.
Lists written on another machine (HashNet's own, docs/protocol.md#nus-wide-and-imagenet) are used as they are:
`--path-prefix OLD=NEW` rewrites the start of each listed path (map_list_path) before it is joined to the data root.
"""
import os
import posixpath
import random
import shutil
from pathlib import Path

import numpy as np
import paddle
from paddle.vision import transforms as T
from PIL import Image

from utils import PROJECT_ROOT
from utils.config.flags import parse_path_prefix
from utils.datasets.splits import LIST_FILES, LIST_NAMES
from utils.runtime.errors import BadImageError, MissingFileError, UsageError

# Batches in flight per loader worker. uint8 batches are small (COCO: 128 x 147 KB = 19 MB), so a deeper queue than
# Paddle's default 2 costs little and absorbs the spread of JPEG decode times.
PREFETCH_FACTOR = 4
SHM_PATH = "/dev/shm"
CHECK_HINT = "python data/check_data.py --dataset {name} --data-path {root}"


def map_list_path(path, prefixes):
    """A listed path with its prefix rewritten by the first (longest) matching (OLD, NEW) of `prefixes`.

    OLD matches whole path components only ('/a/b' matches '/a/b/c', not '/a/bc'); with NEW empty the rest of the
    path is relative (to the data root).
    """
    for old, new in prefixes:
        old = old.rstrip("/") or "/"
        if path == old or path.startswith(old + "/") or old == "/" and path.startswith("/"):
            rest = path[len(old):].lstrip("/")
            return posixpath.join(new, rest) if new else rest
    return path


def _split_components(path):
    return path.split("/")


def missing_path_hint(listed, resolved, first_missing, data_root, path_prefix=None):
    """What to tell a user whose images are not found: the first unmatched path and the prefix it would need.

    listed/resolved: the paths as written in the list and after --path-prefix; first_missing: index of the first
    image not found. Looks for the tail of that path under the data root (then the exact mapping is known); else
    suggests mapping the prefix all listed paths share.
    """
    data_root = Path(data_root)
    raw, looked_for = listed[first_missing], data_root / resolved[first_missing]
    lines = [f"first unmatched path: {raw}"
             + (f" (after --path-prefix: {resolved[first_missing]})" if resolved[first_missing] != raw else "")
             + (f", looked for {looked_for}" if str(looked_for) != raw else " (absolute: not under the data root)")]
    prefixes = parse_path_prefix(path_prefix)
    unused = [old for old, _ in prefixes if all(map_list_path(p, [(old, "")]) == p for p in listed[:1000])]
    if unused:
        lines.append("--path-prefix " + ", ".join(repr(u + "=...") for u in unused)
                     + " matches none of the listed paths (checked the first 1000)")
    parts = _split_components(raw)
    for k in range(1, len(parts) - 1):
        rest = "/".join(parts[k:])
        if (data_root / rest).is_file():
            old = "/".join(parts[:k]) + "/"
            lines.append(f"found it as {data_root / rest}: pass --path-prefix '{old}=' (with --data-path "
                         f"{data_root})")
            return "\n".join(lines)
    # the directory components every listed path starts with; keep the last one when the remainders would be bare
    # file names (HashNet's lists: .../imagenet/image/x.JPEG -> map .../imagenet/, the data root holds image/)
    common = os.path.commonprefix([_split_components(p)[:-1] for p in listed])
    if common and all(len(_split_components(p)) == len(common) + 1 for p in listed):
        common = common[:-1]
    prefix = "/".join(common)
    if prefix not in ("", ".", "/"):
        rest = raw[len(prefix):].lstrip("/")
        lines.append(f"every listed path starts with '{prefix}/': to use these lists unchanged pass --path-prefix "
                     f"'{prefix}/=' and a --data-path holding {rest} (docs/datasets.md#upstream-paths)")
    return "\n".join(lines)


def read_list_file(list_path, data_root=None, num_classes=None, check_exists=False, path_prefix=None,
                   with_line_numbers=False):
    """Parse and validate one list file; returns (image paths, float32 multi-hot labels of shape (n, C)), and
    with_line_numbers also each entry's line number in the file (for errors met later, when an image is loaded).

    The paths are relative to the data root after the --path-prefix mappings `path_prefix` (['OLD=NEW', ...]).
    Every malformed line is an error naming the file and line. With check_exists, every listed image must exist
    under data_root (checking all of them up front is cheap and beats failing hours into training).
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise MissingFileError(f"list file not found: {list_path}")
    paths, rows, line_nos = [], [], []
    with open(list_path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            where = f"{list_path}:{line_no}"
            if num_classes is None:
                num_classes = len(fields) - 1
                if num_classes < 1:
                    raise UsageError(f"{where}: expected '<image path> <0/1 labels...>', got {line.strip()!r}")
            if len(fields) - 1 != num_classes:
                raise UsageError(f"{where}: expected {num_classes} labels after the path, got {len(fields) - 1}")
            bad = [v for v in fields[1:] if v not in ("0", "1")]
            if bad:
                raise UsageError(f"{where}: labels must be 0 or 1, got {bad[0]!r}")
            paths.append(fields[0])
            line_nos.append(line_no)
            rows.append([v == "1" for v in fields[1:]])
    if not paths:
        raise UsageError(f"list file is empty: {list_path}")
    listed = paths
    prefixes = parse_path_prefix(path_prefix)
    if prefixes:
        paths = [map_list_path(p, prefixes) for p in listed]
    if check_exists:
        if data_root is None:
            raise ValueError("check_exists=True needs data_root")
        missing = [i for i, p in enumerate(paths) if not (Path(data_root) / p).is_file()]
        if missing:
            shown = "\n  ".join(f"line {line_nos[i]}: {paths[i]}" for i in missing[:10])
            more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
            hint = missing_path_hint(listed, paths, missing[0], data_root, path_prefix)
            raise MissingFileError(
                f"{len(missing)} of {len(paths)} images listed in {list_path} are missing under data root "
                f"{data_root}:\n  {shown}{more}\n{hint}\nCheck --data-path and --path-prefix; "
                f"`python data/check_data.py` lists every missing or undecodable image.")
    labels = np.asarray(rows, dtype=np.float32)
    return (paths, labels, line_nos) if with_line_numbers else (paths, labels)


def load_rgb(path):
    """Open any PIL-readable image as RGB (grayscale, CMYK, palette and RGBA included)."""
    try:
        with Image.open(path) as img:
            if img.mode == "RGB":  # most JPEGs: convert() would copy the decoded pixels for nothing (~10% of a load)
                img.load()
                return img
            if img.mode == "P":
                img = img.convert("RGBA")  # palette transparency is only honoured via RGBA
            return img.convert("RGB")
    except FileNotFoundError:
        raise
    except Exception as err:  # PIL raises many types for corrupt files
        raise RuntimeError(f"cannot decode image {path}: {err}") from err


def to_chw_uint8(image):
    """PIL RGB image -> uint8 (3, H, W) array: what the loaders hand to the network (which normalises it on the
    device, utils/datasets/normalization.py)."""
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


RESIZE_MODES = ("short", "warp")


def resize(resize_size, resize_mode="short"):
    """The first step of every transform: 'short' = the short side to resize_size, aspect ratio kept (the seed's,
    docs/protocol.md#seed-recipe); 'warp' = resize_size x resize_size, aspect ratio not kept (the authors' Caffe
    ImageData new_height/new_width, docs/protocol.md#paper-recipe)."""
    if resize_mode not in RESIZE_MODES:
        raise UsageError(f"--resize-mode must be one of {', '.join(RESIZE_MODES)}, got {resize_mode!r}")
    return T.Resize(resize_size if resize_mode == "short" else (resize_size, resize_size))


def build_transform(train, resize_size=256, crop_size=224, resized=False, resize_mode="short"):
    """docs/protocol.md#seed-recipe: train Resize RandomCrop RandomHorizontalFlip, eval Resize CenterCrop; uint8 CHW out
    (the normalisation is the network's first step). resized=True leaves out the Resize, for images stored already
    resized (utils/datasets/cache.py); resize_mode: see resize()."""
    crop = [T.RandomCrop(crop_size), T.RandomHorizontalFlip()] if train else [T.CenterCrop(crop_size)]
    return T.Compose([*([] if resized else [resize(resize_size, resize_mode)]), *crop, to_chw_uint8])


class EpochBatchSampler:
    """Wraps a batch sampler so every index travels as (epoch, index), the epoch read from the dataset in the main
    process when an epoch's iteration starts.

    Loader workers hold a copy of the dataset made when they started; with persistent workers that copy keeps the
    epoch of its first epoch, so an epoch set on the main process's dataset would never reach them.
    """

    def __init__(self, batch_sampler, dataset):
        self.batch_sampler, self.dataset = batch_sampler, dataset

    @property
    def batch_size(self):
        return self.batch_sampler.batch_size

    def set_epoch(self, epoch):
        self.batch_sampler.set_epoch(epoch)

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        epoch = self.dataset.epoch
        for batch in self.batch_sampler:
            yield [(epoch, int(index)) for index in batch]


class ImageList(paddle.io.Dataset):
    """Yields (image CHW uint8, multi-hot label float32, dataset index int64).

    Random augmentation is seeded per (seed, epoch, index), so the crops do not depend on the number of loader
    workers or processes, and a resumed run sees exactly the crops an uninterrupted one would have. An item is
    addressed by its index (epoch: the dataset's, set_epoch) or by (epoch, index) (EpochBatchSampler).
    """

    def __init__(self, data_root, list_path, transform, num_classes=None, seed=0, path_prefix=None):
        self.data_root = Path(data_root)
        self.list_path = Path(list_path)
        self.path_prefix = path_prefix
        self.paths, self.labels, self.line_numbers = read_list_file(
            list_path, data_root, num_classes, check_exists=True, path_prefix=path_prefix, with_line_numbers=True)
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.paths)

    def load_image(self, index):
        """The PIL image the transform starts from (utils/datasets/cache.py serves it from a cache instead)."""
        path = self.data_root / self.paths[index]
        try:
            return load_rgb(path)
        except (OSError, RuntimeError) as err:  # deleted since the start, truncated, corrupt
            reason = "missing" if isinstance(err, FileNotFoundError) else f"undecodable: {err.__cause__ or err}"
            mapping = "".join(f" --path-prefix {item}" for item in self.path_prefix or ())
            raise BadImageError(
                f"bad image {path} ({self.list_path}:{self.line_numbers[index]}): {reason}. Check every image with "
                f"`python data/check_data.py --data-path {self.data_root} --lists {self.list_path}{mapping}`") from err

    def __getitem__(self, item):
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        image = self.load_image(index)
        random.seed(f"{self.seed}-{epoch}-{index}")  # paddle's random transforms draw from `random`
        return self.transform(image), self.labels[index], np.int64(index)


def shared_memory_fits(bytes_in_flight, shm_path=SHM_PATH):
    """Whether the loader's batches in flight fit twice into shared memory. Workers hand batches over through
    /dev/shm (no pickling through a pipe), but containers often give it only 64 MB, where that fails mid-run with a
    bus error; then the loader uses pipes instead."""
    try:
        return shutil.disk_usage(shm_path).free >= 2 * bytes_in_flight
    except OSError:
        return False


def build_loader(dataset, num_workers, batch_size=1, batch_sampler=None, persistent=False, image_bytes=3 * 224 ** 2):
    """A paddle.io.DataLoader with this project's deliberate settings: PREFETCH_FACTOR batches per worker, shared
    memory when it is large enough (shared_memory_fits), and workers kept alive across iterations when
    `persistent` (give it an EpochBatchSampler so that each epoch's index carries its epoch). A dataset whose
    items are already decoded (`decoded = True`: the evaluation cache) is read by this process's loader thread, with
    no worker: its read is a memory copy, cheaper than a worker's hand-over of the batch (bench_data.py)."""
    if getattr(dataset, "decoded", False):
        num_workers = 0
    per_batch = (batch_sampler.batch_size if batch_sampler is not None and hasattr(batch_sampler, "batch_size")
                 else batch_size) * image_bytes
    sampling = {"batch_sampler": batch_sampler} if batch_sampler is not None else {"batch_size": batch_size}
    return paddle.io.DataLoader(
        dataset, **sampling, num_workers=num_workers, prefetch_factor=PREFETCH_FACTOR,
        use_shared_memory=shared_memory_fits(per_batch * num_workers * PREFETCH_FACTOR),
        persistent_workers=persistent and num_workers > 0)


def dataset_lists(name, list_dir=None):
    """The three list files of dataset NAME (default folder data/NAME); a clear error when any is missing."""
    list_dir = Path(list_dir) if list_dir else PROJECT_ROOT / "data" / name
    lists = {split: list_dir / LIST_FILES[split] for split in LIST_NAMES}
    missing = [str(p) for p in lists.values() if not p.is_file()]
    if missing:
        raise MissingFileError(
            f"dataset '{name}' needs train.txt, test.txt and database.txt in {list_dir}; "
            f"missing: {', '.join(missing)}. "
            f"For COCO see docs/datasets.md#ms-coco: `python data/make_coco_lists.py` or the official lists; for "
            f"imagenet and nuswide_81, HashNet's lists (docs/datasets.md#upstream-paths).")
    return lists


def build_datasets(name, data_root, resize_size, crop_size, seed=0, list_dir=None, path_prefix=None,
                   resize_mode="short"):
    """{'train', 'test', 'database'} ImageList datasets; the number of classes comes from the train list."""
    lists = dataset_lists(name, list_dir)
    train = ImageList(data_root, lists["train"], build_transform(True, resize_size, crop_size, resize_mode=resize_mode),
                      seed=seed, path_prefix=path_prefix)
    num_classes = train.labels.shape[1]
    eval_tf = build_transform(False, resize_size, crop_size, resize_mode=resize_mode)
    return {
        "train": train,
        "test": ImageList(data_root, lists["test"], eval_tf, num_classes, seed, path_prefix),
        "database": ImageList(data_root, lists["database"], eval_tf, num_classes, seed, path_prefix),
    }
