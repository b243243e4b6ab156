"""Decoded-image caches, opt-in with --cache_dir (imported only then; docs/data.md#data-caches).

- Evaluation cache: the evaluation view (Resize + CenterCrop, uint8 CHW) of a list, one (n, 3, crop, crop) .npy
  read through a memory map. Every evaluation decodes the same JPEGs with the same deterministic transform (COCO's
  sizes and counts: docs/data.md#data-caches); from the cache an item is one read of its pixels. The items equal the
  JPEG path's bit for bit, so codes and mAP are identical.
- Training cache: the Resize(resize_size) images of a list (uint8 HWC, sizes differ), one flat file of raw pixels
  (.u8) plus an (n, 3) .npy table of offset, height, width. RandomCrop and RandomHorizontalFlip run on them as before,
  seeded the same way (utils/datasets/image_list.ImageList), so the crops are bit-identical to the JPEG path's.

Each cache is `<cache_dir>/<list folder>-<list name>-<hash of the list's path>-<view>.*` with a sidecar `.json`
holding the fingerprint it was built for: the list's sha256, the size and mtime of every listed image (a replaced
or re-encoded image changes its size or mtime; hashing the images' content would read the whole dataset, as long
as building the cache), the data files' sizes and their sha256 (checked by rank 0 before every use: a damaged cache
is rebuilt, saying so; docs/training.md#checksums-and-damaged-files). A cache whose fingerprint differs is deleted
and rebuilt, never used.
The data file is written to a temporary file and renamed, the sidecar after it: a cache without its sidecar is an
interrupted build. Under several processes rank 0 builds and the others wait, then every rank reads its shard.
"""
import copy
import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
from paddle.vision import transforms as T
from PIL import Image
from tqdm import tqdm

from utils.datasets.image_list import ImageList, build_loader, build_transform, resize
from utils.runtime import dist
from utils.runtime.console import log_to_stderr
from utils.runtime.errors import SetupError
from utils.runtime.fileio import atomic_write, save_json, sha256_of, sidecar_mismatch
from utils.runtime.integrity import NO_CHECKSUM_NOTE

FORMAT = 1
EVAL_BUILD_BATCH = 32


def human_size(num_bytes):
    return f"{num_bytes / 1e9:.2f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:.1f} MB"


def fingerprint(dataset, view):
    """What a cache of `dataset` in `view` depends on: the list's content and every listed image's size and mtime."""
    files = hashlib.sha256()
    for rel in dataset.paths:
        stat = (dataset.data_root / rel).stat()
        files.update(f"{stat.st_size} {stat.st_mtime_ns}\n".encode())
    return {"format": FORMAT, "view": view, "num_items": len(dataset),
            "list_sha256": hashlib.sha256(Path(dataset.list_path).read_bytes()).hexdigest(),
            "images_sha256": files.hexdigest()}


def cache_files(cache_dir, dataset, view, data_suffix=".npy", extra=()):
    """(data file, sidecar .json, *extra files) of a list's cache in `view` (e.g. eval256-224, train256)."""
    list_path = Path(dataset.list_path).resolve()
    stem = f"{list_path.parent.name}-{list_path.stem}-{hashlib.sha256(str(list_path).encode()).hexdigest()[:8]}-{view}"
    cache_dir = Path(cache_dir)
    return (cache_dir / f"{stem}{data_suffix}", cache_dir / f"{stem}.json", *(cache_dir / f"{stem}{e}" for e in extra))


CHANGES = {"list_sha256": "the list changed", "images_sha256": "listed images changed (size or mtime)"}


def stale_reason(sidecar, wanted, check_digests=False, log=log_to_stderr):
    """None when the sidecar records `wanted` and its data files have the sizes it wrote (and with check_digests
    the sha256 it recorded: rank 0, before using a cache), else why not. A sidecar without digests (a cache built
    before they were recorded) passes with one note."""
    saved, reason = sidecar_mismatch(sidecar, wanted, lambda key, old, new: CHANGES.get(key, f"{key} differs"))
    if reason:
        return reason if saved is None else "stale: " + reason
    for name, size in saved.get("file_sizes", {}).items():
        path = sidecar.parent / name
        if not path.is_file() or path.stat().st_size != size:
            return f"{path} is missing or has another size than it was written with"
    if check_digests:
        digests = saved.get("file_sha256")
        if digests is None:
            log(f"note: data cache {sidecar.with_suffix('')}.*: {NO_CHECKSUM_NOTE}")
        for name, digest in (digests or {}).items():
            if sha256_of(sidecar.parent / name) != digest:
                return f"damaged: the sha256 of {name} differs from the one recorded in {sidecar.name}"
    return None


def ensure_cache(files, wanted, needed_bytes, build, log):
    """Build the cache when it is missing or stale (rank 0; the others wait), then check it on every rank."""
    data, sidecar = files[0], files[1]
    if dist.is_main_process():
        reason = stale_reason(sidecar, wanted, check_digests=True, log=log)
        if reason:
            for path in files:
                path.unlink(missing_ok=True)  # a stale cache is never used; free its disk before building
            data.parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(data.parent).free
            log(f"data cache {data.name} ({reason}): building {human_size(needed_bytes)} in {data.parent} "
                f"({human_size(free)} free)")
            if needed_bytes > free:
                raise SetupError(f"--cache_dir {data.parent}: the cache {data.name} needs {human_size(needed_bytes)} "
                                   f"and only {human_size(free)} are free; free space, pick another --cache_dir, or "
                                   f"run without --cache_dir")
            start = time.time()
            written = build()
            sizes = {path.name: path.stat().st_size for path in written}
            digests = {path.name: sha256_of(path) for path in written}  # checked on every use (integrity.py)
            save_json(dict(wanted, file_sizes=sizes, file_sha256=digests,
                           built_in_seconds=round(time.time() - start, 1)), sidecar)
    dist.barrier()
    reason = stale_reason(sidecar, wanted)
    if reason:
        raise RuntimeError(f"data cache {sidecar} is not usable after building ({reason})")


def _decoding_loader(dataset, transform, batch_size):
    """Rank 0 alone decodes, in parallel on all CPUs available (the other ranks are waiting)."""
    source = copy.copy(dataset)
    source.transform = transform
    return build_loader(source, dist.available_cpus(), batch_size)


# ------------------------------------------------------------------------------------------------------ evaluation
class CachedEvalList(ImageList):
    """An ImageList whose evaluation-view images come from the cache's memory map (labels, paths as before)."""

    decoded = True  # build_loader reads it without workers

    def __init__(self, source, array_path):
        self.__dict__.update(source.__dict__)
        self.array_path = array_path
        self._images = None

    @property
    def images(self):
        if self._images is None:  # opened in the process that reads (loader workers included)
            self._images = np.load(self.array_path, mmap_mode="r")
        return self._images

    def __getstate__(self):
        return dict(self.__dict__, _images=None)

    def __getitem__(self, item):
        index = item[1] if isinstance(item, tuple) else item
        return np.array(self.images[index]), self.labels[index], np.int64(index)


def view_name(kind, resize_size, resize_mode, crop_size=None):
    """A cached view's name, part of its files' names and fingerprint: eval256-224, train256, evalwarp256-227."""
    mode = "" if resize_mode == "short" else resize_mode
    return f"{kind}{mode}{resize_size}" + ("" if crop_size is None else f"-{crop_size}")


def cached_eval_dataset(dataset, cache_dir, resize_size, crop_size, log=log_to_stderr, resize_mode="short"):
    """`dataset` (an ImageList in the evaluation view) served from its evaluation cache, built when needed; `log`
    gets the one line saying what is built, its size and where."""
    view = view_name("eval", resize_size, resize_mode, crop_size)
    files = cache_files(cache_dir, dataset, view)
    shape = (len(dataset), 3, crop_size, crop_size)

    def build():
        loader = _decoding_loader(dataset, build_transform(False, resize_size, crop_size, resize_mode=resize_mode),
                                  EVAL_BUILD_BATCH)

        def write(tmp):
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            for images, _, index in tqdm(loader, desc=f"cache {files[0].name}", unit="batch"):
                out[index.numpy()] = images.numpy()
            out.flush()
            del out

        atomic_write(files[0], write)
        return [files[0]]

    ensure_cache(files[:2], fingerprint(dataset, view), int(np.prod(shape)), build, log)
    return CachedEvalList(dataset, files[0])


# -------------------------------------------------------------------------------------------------------- training
class CachedTrainList(ImageList):
    """An ImageList whose images come resized from the training cache; the random crop and flip (and their seeding)
    are ImageList's, on the same pixels, so the crops equal the JPEG path's."""

    def __init__(self, source, array_path, offsets_path, resize_size, crop_size):
        self.__dict__.update(source.__dict__)
        self.array_path, self.offsets_path = array_path, offsets_path
        self.transform = build_transform(True, resize_size, crop_size, resized=True)
        self.offsets = np.load(offsets_path)
        self._pixels = None

    def __getstate__(self):
        return dict(self.__dict__, _pixels=None)

    def load_image(self, index):
        if self._pixels is None:
            self._pixels = np.memmap(self.array_path, dtype=np.uint8, mode="r")
        start, height, width = (int(v) for v in self.offsets[index])
        return Image.fromarray(np.asarray(self._pixels[start:start + height * width * 3]).reshape(height, width, 3))


def resized_bytes_estimate(dataset, resize_size, resize_mode="short"):
    """Bytes of the resized images, from the image headers (no decoding): for the disk-space message."""
    if resize_mode == "warp":
        return 3 * resize_size ** 2 * len(dataset)
    total = 0
    for rel in dataset.paths:
        with Image.open(dataset.data_root / rel) as img:
            width, height = img.size
        scale = resize_size / min(width, height)
        total += 3 * round(width * scale) * round(height * scale)
    return total


def cached_train_dataset(dataset, cache_dir, resize_size, crop_size, log=log_to_stderr, resize_mode="short"):
    """`dataset` (the training ImageList) served from its training cache of resized images (--resize-mode)."""
    view = view_name("train", resize_size, resize_mode)
    files = cache_files(cache_dir, dataset, view, data_suffix=".u8", extra=(".offsets.npy",))

    def build():
        loader = _decoding_loader(dataset, T.Compose([resize(resize_size, resize_mode), np.asarray]), 1)
        offsets = np.zeros((len(dataset), 3), dtype=np.int64)

        def write_pixels(tmp):
            with open(tmp, "wb") as f:
                position = 0
                for image, _, index in tqdm(loader, desc=f"cache {files[0].name}", unit="image"):
                    pixels = np.ascontiguousarray(image.numpy()[0])
                    offsets[int(index.numpy()[0])] = (position, pixels.shape[0], pixels.shape[1])
                    f.write(pixels.tobytes())
                    position += pixels.size

        def write_offsets(tmp):
            with open(tmp, "wb") as f:
                np.save(f, offsets)

        atomic_write(files[0], write_pixels)
        atomic_write(files[2], write_offsets)
        return [files[0], files[2]]

    needed = resized_bytes_estimate(dataset, resize_size, resize_mode) if dist.is_main_process() else 0
    ensure_cache(files, fingerprint(dataset, view), needed, build, log)
    return CachedTrainList(dataset, files[0], files[2], resize_size, crop_size)
