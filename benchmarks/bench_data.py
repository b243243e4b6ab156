"""Images/s of the data side alone (no model), per worker, with and without the caches; an end-to-end CPU evaluation
with and without the evaluation cache; and an estimate of one COCO evaluation on the seed's 2 GPUs.

    python benchmarks/bench_data.py                 # the coco_lite JPEGs when ../shared/coco_lite is there
    python benchmarks/bench_data.py --source toy     # toy images upscaled to 640x480 JPEGs (COCO-like sizes)

Data side per worker, two measurements of each row:
  loader  images/s the training process receives from a one-worker paddle.io.DataLoader built as training builds
          it (utils.datasets.image_list.build_loader), counted from its first batch to its last so that the worker's
          start is left out. This is the data side a GPU run meets: it includes collating the batch and handing it over
          (float32 batches are four times the bytes of uint8 ones). The goals are judged on this column.
  work    the same items loaded and stacked in this process (no hand-over): the worker's own work alone.
Rows:
  train-JPEG-float  the path before this work: decode, convert("RGB") (a copy), Resize, RandomCrop, flip,
                    ToTensor + Normalize on the CPU, float32 out
  train-JPEG        decode (no copy), Resize, RandomCrop, flip, uint8 out (normalised on the device)
  train-cache       random crop and flip of the training cache's resized images
  eval-JPEG-float   before: decode, convert, Resize, CenterCrop, ToTensor + Normalize
  eval-JPEG         decode, Resize, CenterCrop, uint8 out
  eval-cache        a read of the evaluation cache (memory-mapped; in the page cache after its build); its loader
                    has no worker (build_loader reads decoded datasets in the training process)
Each timed pass of each row runs in turn (rows interleaved, best of --repeats passes), so that a slow spell of a
shared machine does not land on one row only; the same source images are cycled through, and a row's pass lasts
about a second at least. A ratio is the quotient of two rows' images/s.

End to end: utils/train/evaluation.evaluate of a random-init 64-bit HashNet on the source's query/database lists
(repeated --e2e-repeat times), on this CPU with the default loader workers, with and without --cache_dir (build
excluded, timed separately); the mAPs must be equal.

COCO estimate: 117,200 images encoded (5,000 queries + ~112,200 database, docs/protocol.md#ms-coco-protocol). The data
side and the GPUs run in parallel, so an evaluation takes N / min(data rate, GPU rate). Data rate: the seed's 2
processes x 4 workers at this CPU's per-worker JPEG rate, or its 2 processes at the cache's rate (read in the process,
no worker). GPU rate: the seed trained 10,048 images per GPU per 27 s epoch (forward + backward,
docs/protocol.md#reference-numbers); a forward pass costs about a third of forward + backward, so its 2 GPUs encode at
least 2 x 3 x 10,048 / 27 ~ 2,200 images/s. The seed's logged evaluation, ~5.6 min, also included its slow per-query mAP
loop; that part is not in the estimate.
"""
import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import utils.runtime.before_paddle  # noqa: E402,F401  (first: see its docstring)

COCO_LITE = ROOT.parent / "shared" / "coco_lite"
COCO_EVAL_IMAGES = 5_000 + 112_200
SEED_PROCESSES, SEED_WORKERS = 2, 4
SEED_GPU_ENCODE_RATE = 2 * 3 * 10_048 / 27  # images/s, from the seed's training epochs (docstring)
SEED_LOGGED_EVAL_SECONDS = 5.6 * 60
ROWS = ("train-JPEG-float", "train-JPEG", "train-cache", "eval-JPEG-float", "eval-JPEG", "eval-cache")
RATIOS = {  # name: (numerator row, denominator row, goal)
    "eval cache / eval JPEG": ("eval-cache", "eval-JPEG", 20.0),
    "eval cache / eval JPEG-float": ("eval-cache", "eval-JPEG-float", None),
    "train JPEG uint8 / train JPEG-float": ("train-JPEG", "train-JPEG-float", 1.5),
    "train cache / train JPEG-float": ("train-cache", "train-JPEG-float", 5.0),
    "train cache / train JPEG": ("train-cache", "train-JPEG", None),
}


# --------------------------------------------------------------------------------------------------------- sources
def toy_jpegs(folder, count, size=(640, 480)):
    """`count` toy images upscaled to COCO-like JPEGs, with a one-label list (the toy set is generated if absent)."""
    from PIL import Image

    from utils.datasets.toy import ensure_toy_dataset
    toy = ensure_toy_dataset(ROOT / "data" / "toy")
    lines = (toy / "database.txt").read_text().splitlines()[:count]
    (folder / "images").mkdir(parents=True)
    out = []
    for line in lines:
        rel, *labels = line.split()
        name = f"images/{Path(rel).stem}.jpg"
        with Image.open(toy / rel) as img:
            img.convert("RGB").resize(size, Image.BICUBIC).save(folder / name, quality=90)
        out.append(" ".join([name, *labels]))
    return out


def prepare_source(args, work):
    """(data root, query lines, database lines, description)."""
    if args.source in ("auto", "coco_lite") and (COCO_LITE / "lists" / "database.txt").is_file():
        read = lambda name: (COCO_LITE / "lists" / name).read_text().splitlines()  # noqa: E731
        lines = [line for line in read("database.txt") if line.strip()]
        return COCO_LITE, [x for x in read("test.txt") if x.strip()], lines, f"coco_lite JPEGs ({COCO_LITE})"
    if args.source == "coco_lite":
        raise FileNotFoundError(f"--source coco_lite: {COCO_LITE}/lists/database.txt not found")
    lines = toy_jpegs(work / "toy_jpeg", 16)
    return work / "toy_jpeg", lines[:4], lines, "toy images upscaled to 640x480 JPEGs (coco_lite not found)"


def write_list(path, lines, count):
    """A list of `count` lines cycling through `lines` (the same images repeated)."""
    path.write_text("\n".join(lines[i % len(lines)] for i in range(count)) + "\n")
    return path


# ------------------------------------------------------------------------------------------------------- data side
def batches_of(count, batch_size, available):
    """Index batches of `count` items cycling through the `available` items of a dataset."""
    return [[i % available for i in range(start, min(start + batch_size, count))]
            for start in range(0, count, batch_size)]


def work_pass(dataset, batches, epoch=0):
    """Seconds one worker's work takes for `batches` in this process: items and np.stack per batch."""
    start = time.perf_counter()
    for batch in batches:
        items = [dataset[(epoch, i)] for i in batch]
        np.stack([np.asarray(item[0]) for item in items])
    return time.perf_counter() - start


def loader_pass(dataset, batches):
    """(images, seconds) the training process receives through a one-worker loader, first batch excluded."""
    from utils.datasets.image_list import build_loader
    loader = iter(build_loader(dataset, 1, batch_size=len(batches[0]), batch_sampler=batches))
    next(loader)  # the worker has started and produced its first batch
    start, images = time.perf_counter(), 0
    for batch in loader:
        images += batch[0].shape[0]
    return images, time.perf_counter() - start


def rate(images, seconds):
    return {"images_per_s": images / seconds, "seconds": seconds, "images": images}


def path_before(image_list_class):
    """An ImageList as loading was before the fast path: every image through convert("RGB"), a copy of the decoded
    pixels even when they are RGB already (utils/datasets/image_list.load_rgb now returns those as they are)."""
    from PIL import Image

    class Before(image_list_class):
        def load_image(self, index):
            with Image.open(self.data_root / self.paths[index]) as img:
                return img.convert("RGB")
    return Before


def float_transform(train, resize_size, crop_size):
    """The transform before this change: ToTensor + Normalize on the CPU."""
    from paddle.vision import transforms as T

    from utils.datasets.normalization import IMAGENET_MEAN, IMAGENET_STD
    crop = [T.RandomCrop(crop_size), T.RandomHorizontalFlip()] if train else [T.CenterCrop(crop_size)]
    return T.Compose([T.Resize(resize_size), *crop, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def measure_data_side(root, list_path, cache_dir, args):
    from utils.datasets import cache as datacache
    from utils.datasets.image_list import ImageList, build_transform
    sizes = (args.resize_size, args.crop_size)
    train = ImageList(root, list_path, build_transform(True, *sizes), seed=0)
    evaluation = ImageList(root, list_path, build_transform(False, *sizes))
    datasets = {
        "train-JPEG-float": path_before(ImageList)(root, list_path, float_transform(True, *sizes), seed=0),
        "train-JPEG": train,
        "train-cache": datacache.cached_train_dataset(train, cache_dir, *sizes),
        "eval-JPEG-float": path_before(ImageList)(root, list_path, float_transform(False, *sizes)),
        "eval-JPEG": evaluation,
        "eval-cache": datacache.cached_eval_dataset(evaluation, cache_dir, *sizes),
    }
    available = len(datasets["train-JPEG"])
    plan = {name: batches_of(pass_length(datasets[name], available, args), args.batch_size, available)
            for name in ROWS}
    loader, work = {}, {}
    for _ in range(args.repeats):
        for name, batches in plan.items():
            keep_faster(work, name, rate(sum(map(len, batches)), work_pass(datasets[name], batches)))
            keep_faster(loader, name, rate(*loader_pass(datasets[name], batches)))
    return loader, work


def pass_length(dataset, available, args):
    """Items in a timed pass: at least --images, and enough for about --min-seconds (from one untimed batch, which
    also leaves imports and first-call setup out of the timings)."""
    probe = batches_of(args.batch_size, args.batch_size, available)
    per_image = work_pass(dataset, probe) / args.batch_size
    return max(args.images, min(64 * args.images, int(args.min_seconds / per_image)))


def keep_faster(rows, name, row):
    if name not in rows or row["images_per_s"] > rows[name]["images_per_s"]:
        rows[name] = row


# ---------------------------------------------------------------------------------------------------- end to end
def end_to_end(root, list_dir, cache_dir, args):
    """evaluation.evaluate without and with the evaluation cache: {'jpeg': metrics, 'cache': metrics, 'build_s'}."""
    import paddle

    from models import HashNet
    from utils.train import build, evaluation
    from utils.train.options import parse_args

    def run(extra):
        cfg = parse_args(["--dataset", "bench", "--list-dir", str(list_dir), "--data-path", str(root), "--device",
                          "cpu", "--bit", "64", "--batch-size", str(args.batch_size), "--resize_size",
                          str(args.resize_size), "--crop_size", str(args.crop_size), "--topK", "-1",
                          "--output-dir", str(list_dir), *extra])
        cfg.num_workers = args.num_workers
        paddle.set_device("cpu")
        paddle.seed(0)
        with paddle.utils.unique_name.guard():
            model = HashNet(64, init="kaiming")
        start = time.perf_counter()
        _, loaders = build.build_data(cfg)
        built = time.perf_counter() - start
        return evaluation.evaluate(model, loaders, cfg), built

    jpeg, _ = run([])
    cache, build_s = run(["--cache_dir", str(cache_dir), "--cache", "eval"])
    return {"jpeg": jpeg, "cache": cache, "build_s": build_s, "num_workers": args.num_workers}


# ------------------------------------------------------------------------------------------------------------ main
def coco_estimate(rows):
    """Seconds of one COCO evaluation without and with the cache (model in the docstring)."""
    out = {}
    # the JPEG loaders run the seed's 4 workers per process; the cache's loader reads in the process itself
    for name, row, readers in (("jpeg", "eval-JPEG", SEED_PROCESSES * SEED_WORKERS),
                               ("cache", "eval-cache", SEED_PROCESSES)):
        data_rate = readers * rows[row]["images_per_s"]
        out[name] = {"data_rate": data_rate, "seconds": COCO_EVAL_IMAGES / min(data_rate, SEED_GPU_ENCODE_RATE),
                     "bound": "data side" if data_rate < SEED_GPU_ENCODE_RATE else "GPU"}
    out["ratio"] = out["jpeg"]["seconds"] / out["cache"]["seconds"]
    return out


def ratios_of(rows):
    return {name: rows[a]["images_per_s"] / rows[b]["images_per_s"] for name, (a, b, _) in RATIOS.items()}


def bench(args):
    from utils.runtime.dist import default_num_workers
    random.seed(0)
    if args.num_workers is None:
        args.num_workers = default_num_workers()
    work = Path(tempfile.mkdtemp(prefix="bench_data."))
    try:
        root, queries, database, source = prepare_source(args, work)
        lists = work / "lists"
        lists.mkdir()
        list_path = write_list(work / "timed.txt", database, args.images)
        write_list(lists / "train.txt", database, len(database))
        write_list(lists / "test.txt", queries, len(queries) * args.e2e_repeat)
        write_list(lists / "database.txt", database, len(database) * args.e2e_repeat)
        rows, work_rows = measure_data_side(root, list_path, work / "cache", args)
        e2e = end_to_end(root, lists, work / "cache", args)
        return {"source": source, "rows": rows, "ratios": ratios_of(rows), "work_rows": work_rows,
                "work_ratios": ratios_of(work_rows), "end_to_end": e2e, "coco": coco_estimate(rows),
                "images": args.images, "batch_size": args.batch_size, "cpus": os.cpu_count()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(result):
    print(f"source: {result['source']}; passes of at least {result['images']} items, batch "
          f"{result['batch_size']}, {result['cpus']} CPUs")
    print(f"{'data side, one worker':<22} {'loader images/s':>16} {'ms/image':>9} {'work images/s':>14} "
          f"{'ms/image':>9}")
    for name in ROWS:
        row, work = result["rows"][name], result["work_rows"][name]
        print(f"{name:<22} {row['images_per_s']:16.1f} {1000 / row['images_per_s']:9.3f} "
              f"{work['images_per_s']:14.1f} {1000 / work['images_per_s']:9.3f}")
    for name, (_, _, goal) in RATIOS.items():
        ratio = result["ratios"][name]
        target = f"  (goal >= {goal:g}x: {'met' if ratio >= goal else 'NOT met'})" if goal else ""
        print(f"ratio {name:<36} {ratio:7.1f}x through the loader, {result['work_ratios'][name]:7.1f}x work "
              f"alone{target}")
    e2e = result["end_to_end"]
    for name in ("jpeg", "cache"):
        m = e2e[name]
        print(f"end-to-end CPU evaluation, {'JPEG ' if name == 'jpeg' else 'cache'}: {m['eval_time']:.2f} s for "
              f"{m['num_query']} + {m['num_database']} images ({e2e['num_workers']} workers), mAP {m['map']:.6f}")
    same = e2e["jpeg"]["map"] == e2e["cache"]["map"]
    print(f"end-to-end ratio JPEG / cache: {e2e['jpeg']['eval_time'] / e2e['cache']['eval_time']:.2f}x; cache built "
          f"in {e2e['build_s']:.2f} s; mAP {'identical' if same else 'DIFFERENT'} with and without the cache")
    coco = result["coco"]
    print(f"COCO model: {COCO_EVAL_IMAGES:,} images; {SEED_PROCESSES} x {SEED_WORKERS} JPEG workers or "
          f"{SEED_PROCESSES} cache readers at these rates (JPEG {coco['jpeg']['data_rate']:,.0f} images/s, cache "
          f"{coco['cache']['data_rate']:,.0f}), GPUs "
          f">= {SEED_GPU_ENCODE_RATE:,.0f} images/s (seed's training rate x 3); seed's logged evaluation "
          f"{SEED_LOGGED_EVAL_SECONDS / 60:.1f} min incl. its mAP loop")
    print(f"estimated COCO evaluation: {coco['jpeg']['seconds'] / 60:.1f} min without the cache "
          f"({coco['jpeg']['bound']}-bound), {coco['cache']['seconds'] / 60:.1f} min with it "
          f"({coco['cache']['bound']}-bound), {coco['ratio']:.1f}x; ratios per worker: eval cache/JPEG "
          f"{result['ratios']['eval cache / eval JPEG']:.0f}x, train uint8/float "
          f"{result['ratios']['train JPEG uint8 / train JPEG-float']:.1f}x, train cache/float "
          f"{result['ratios']['train cache / train JPEG-float']:.1f}x")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="auto", choices=["auto", "coco_lite", "toy"],
                        help="auto: coco_lite when ../shared/coco_lite is there, else toy JPEGs")
    parser.add_argument("--images", type=int, default=256,
                        help="items in the timed list (the source images repeated); a pass has at least as many")
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="a timed pass lasts about this long at least (up to 64 x --images items)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per row; the best counts")
    parser.add_argument("--e2e-repeat", type=int, default=4, help="end to end: the query/database lists repeated")
    parser.add_argument("--num_workers", type=int, default=None, help="end to end loader workers (default: auto)")
    parser.add_argument("--resize_size", type=int, default=256)
    parser.add_argument("--crop_size", type=int, default=224)
    parser.add_argument("--tiny", action="store_true", help="a few items, one pass (tests: structure only)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.images, args.batch_size, args.repeats, args.e2e_repeat, args.min_seconds = 8, 4, 1, 1, 0.0
        args.resize_size, args.crop_size = 72, 64
        args.num_workers = 0 if args.num_workers is None else args.num_workers
    result = bench(args)
    report(result)
    return result


if __name__ == "__main__":
    main()
