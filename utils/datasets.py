"""List files, the image-list dataset and its transforms (SPEC §3, §4).

A dataset named NAME is three list files in `data/NAME/` (train.txt, test.txt = queries, database.txt), each line
`<path relative to the data root> <C space-separated 0/1 labels>`. The number of classes is read from the lists.
"""
import random
import shutil
from pathlib import Path

import numpy as np
import paddle
from PIL import Image
from paddle.vision import transforms as T

from models.hashnet import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401 (the normalisation runs in the network)
from utils.config import PROJECT_ROOT

LIST_NAMES = ("train", "test", "database")
# Batches in flight per loader worker. uint8 batches are small (COCO: 128 x 147 KB = 19 MB), so a deeper queue than
# Paddle's default 2 costs little and absorbs the spread of JPEG decode times.
PREFETCH_FACTOR = 4
SHM_PATH = "/dev/shm"
CHECK_HINT = "python data/check_data.py --dataset {name} --data-path {root}"


def read_list_file(list_path, data_root=None, num_classes=None, check_exists=False):
    """Parse and validate one list file; returns (relative paths, float32 multi-hot labels of shape (n, C)).

    Every malformed line is an error naming the file and line. With check_exists, every listed image must exist
    under data_root (checking all of them up front is cheap and beats failing hours into training).
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise FileNotFoundError(f"list file not found: {list_path}")
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
                    raise ValueError(f"{where}: expected '<image path> <0/1 labels...>', got {line.strip()!r}")
            if len(fields) - 1 != num_classes:
                raise ValueError(f"{where}: expected {num_classes} labels after the path, got {len(fields) - 1}")
            bad = [v for v in fields[1:] if v not in ("0", "1")]
            if bad:
                raise ValueError(f"{where}: labels must be 0 or 1, got {bad[0]!r}")
            paths.append(fields[0])
            line_nos.append(line_no)
            rows.append([v == "1" for v in fields[1:]])
    if not paths:
        raise ValueError(f"list file is empty: {list_path}")
    if check_exists:
        if data_root is None:
            raise ValueError("check_exists=True needs data_root")
        missing = [f"line {n}: {p}" for n, p in zip(line_nos, paths) if not (Path(data_root) / p).is_file()]
        if missing:
            shown = "\n  ".join(missing[:10])
            more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise FileNotFoundError(
                f"{len(missing)} of {len(paths)} images listed in {list_path} are missing under data root "
                f"{data_root}:\n  {shown}{more}\nCheck --data-path; `python data/check_data.py` lists every missing "
                f"or undecodable image.")
    return paths, np.asarray(rows, dtype=np.float32)


def load_rgb(path):
    """Open any PIL-readable image as RGB (grayscale, CMYK, palette and RGBA included)."""
    try:
        with Image.open(path) as img:
            if img.mode == "P":
                img = img.convert("RGBA")  # palette transparency is only honoured via RGBA
            return img.convert("RGB")
    except FileNotFoundError:
        raise
    except Exception as err:  # PIL raises many types for corrupt files
        raise RuntimeError(f"cannot decode image {path}: {err}") from err


def to_chw_uint8(image):
    """PIL RGB image -> uint8 (3, H, W) array: what the loaders hand to the network (models/hashnet.py
    normalises on the device)."""
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


def build_transform(train, resize_size=256, crop_size=224, resized=False):
    """SPEC §3: train Resize RandomCrop RandomHorizontalFlip, eval Resize CenterCrop; uint8 CHW out (the ImageNet
    mean/std normalisation is the network's first step). resized=True leaves out the Resize, for images stored
    already resized (utils/datacache.py)."""
    crop = [T.RandomCrop(crop_size), T.RandomHorizontalFlip()] if train else [T.CenterCrop(crop_size)]
    return T.Compose([*([] if resized else [T.Resize(resize_size)]), *crop, to_chw_uint8])


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

    def __init__(self, data_root, list_path, transform, num_classes=None, seed=0):
        self.data_root = Path(data_root)
        self.list_path = Path(list_path)
        self.paths, self.labels = read_list_file(list_path, data_root, num_classes, check_exists=True)
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.paths)

    def load_image(self, index):
        """The PIL image the transform starts from (utils/datacache.py serves it from a cache instead)."""
        return load_rgb(self.data_root / self.paths[index])

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
    `persistent` (give it an EpochBatchSampler so that each epoch's index carries its epoch)."""
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
    lists = {split: list_dir / f"{split}.txt" for split in LIST_NAMES}
    missing = [str(p) for p in lists.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"dataset '{name}' needs train.txt, test.txt and database.txt in {list_dir}; "
            f"missing: {', '.join(missing)}. "
            f"For COCO see README (Data): `python data/make_coco_lists.py` or the official lists.")
    return lists


def build_datasets(name, data_root, resize_size, crop_size, seed=0, list_dir=None):
    """{'train', 'test', 'database'} ImageList datasets; the number of classes comes from the train list."""
    lists = dataset_lists(name, list_dir)
    train = ImageList(data_root, lists["train"], build_transform(True, resize_size, crop_size), seed=seed)
    num_classes = train.labels.shape[1]
    eval_tf = build_transform(False, resize_size, crop_size)
    return {
        "train": train,
        "test": ImageList(data_root, lists["test"], eval_tf, num_classes, seed),
        "database": ImageList(data_root, lists["database"], eval_tf, num_classes, seed),
    }
