"""Images/s of the data side alone (no model), per worker, with and without the caches; an end-to-end CPU evaluation
with and without the evaluation cache; and an estimate of one COCO evaluation on the seed's 2 GPUs.

    python benchmarks/bench_data.py                 # the coco_lite JPEGs when ../shared/coco_lite is there
    python benchmarks/bench_data.py --source toy     # toy images upscaled to 640x480 JPEGs (COCO-like sizes)

Data side per worker: what one loader worker does for a batch (item loading and transform, np.stack of the
batch), timed in this process over --images items (the source images repeated), best of --repeats passes. Rows:
  train-JPEG-float  decode, Resize, RandomCrop, flip, ToTensor + Normalize on the CPU (the path before uint8)
  train-JPEG        the same up to the crop, uint8 out (normalised on the device)
  train-cache       random crop and flip of the training cache's resized images
  eval-JPEG-float   decode, Resize, CenterCrop, ToTensor + Normalize (before uint8)
  eval-JPEG         decode, Resize, CenterCrop, uint8 out
  eval-cache        a read of the evaluation cache (memory-mapped; in the page cache after its build)
Every row is its own measurement; a ratio is the quotient of two rows' images/s.

End to end: utils/engine.evaluate of a random-init 64-bit HashNet on the source's query/database lists (repeated
--e2e-repeat times), on this CPU with the default loader workers, with and without --cache_dir (build excluded,
timed separately); the mAPs must be equal.

COCO estimate: 117,200 images encoded (5,000 queries + ~112,200 database, SPEC §4). The data side and the GPUs run
in parallel, so an evaluation takes N / min(data rate, GPU rate). Data rate: the seed's 2 processes x 4 workers at
this CPU's per-worker rates. GPU rate: the seed trained 10,048 images per GPU per 27 s epoch (forward + backward,
SPEC §6); a forward pass costs about a third of forward + backward, so its 2 GPUs encode at least
2 x 3 x 10,048 / 27 ~ 2,200 images/s. The seed's logged evaluation, ~5.6 min, also included its slow per-query mAP
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
    from utils.toy_dataset import ensure_toy_dataset
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
def data_side_rate(dataset, batch_size, repeats, epoch=0):
    """{'images_per_s', 'seconds', 'images'}: one worker's work (items + np.stack per batch), best of `repeats`."""
    indices = list(range(len(dataset)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for s in range(0, len(indices), batch_size):
            items = [dataset[(epoch, i)] for i in indices[s:s + batch_size]]
            np.stack([np.asarray(item[0]) for item in items])
        best = min(best, time.perf_counter() - start)
    return {"images_per_s": len(indices) / best, "seconds": best, "images": len(indices)}


def float_transform(train, resize_size, crop_size):
    """The transform before this change: ToTensor + Normalize on the CPU."""
    from paddle.vision import transforms as T
    from utils.datasets import IMAGENET_MEAN, IMAGENET_STD
    crop = [T.RandomCrop(crop_size), T.RandomHorizontalFlip()] if train else [T.CenterCrop(crop_size)]
    return T.Compose([T.Resize(resize_size), *crop, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def measure_data_side(root, list_path, cache_dir, args):
    from utils import datacache
    from utils.datasets import ImageList, build_transform
    sizes = (args.resize_size, args.crop_size)
    train = ImageList(root, list_path, build_transform(True, *sizes), seed=0)
    evaluation = ImageList(root, list_path, build_transform(False, *sizes))
    datasets = {
        "train-JPEG-float": ImageList(root, list_path, float_transform(True, *sizes), seed=0),
        "train-JPEG": train,
        "train-cache": datacache.cached_train_dataset(train, cache_dir, *sizes),
        "eval-JPEG-float": ImageList(root, list_path, float_transform(False, *sizes)),
        "eval-JPEG": evaluation,
        "eval-cache": datacache.cached_eval_dataset(evaluation, cache_dir, *sizes),
    }
    for name in ROWS:  # one untimed item each: imports and first-call setup are not the data side's cost
        datasets[name][(0, 0)]
    return {name: data_side_rate(datasets[name], args.batch_size, args.repeats) for name in ROWS}


# ---------------------------------------------------------------------------------------------------- end to end
def end_to_end(root, list_dir, cache_dir, args):
    """engine.evaluate without and with the evaluation cache: {'jpeg': metrics, 'cache': metrics, 'build_s'}."""
    import paddle
    from models import HashNet
    from utils import engine
    from utils.config import parse_args

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
        _, loaders = engine.build_data(cfg)
        built = time.perf_counter() - start
        return engine.evaluate(model, loaders, cfg), built

    jpeg, _ = run([])
    cache, build_s = run(["--cache_dir", str(cache_dir), "--cache", "eval"])
    return {"jpeg": jpeg, "cache": cache, "build_s": build_s, "num_workers": args.num_workers}


# ------------------------------------------------------------------------------------------------------------ main
def coco_estimate(rows):
    """Seconds of one COCO evaluation without and with the cache (model in the docstring)."""
    workers = SEED_PROCESSES * SEED_WORKERS
    out = {}
    for name, row in (("jpeg", "eval-JPEG"), ("cache", "eval-cache")):
        data_rate = workers * rows[row]["images_per_s"]
        out[name] = {"data_rate": data_rate, "seconds": COCO_EVAL_IMAGES / min(data_rate, SEED_GPU_ENCODE_RATE),
                     "bound": "data side" if data_rate < SEED_GPU_ENCODE_RATE else "GPU"}
    out["ratio"] = out["jpeg"]["seconds"] / out["cache"]["seconds"]
    return out


def bench(args):
    from utils.dist import default_num_workers
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
        rows = measure_data_side(root, list_path, work / "cache", args)
        ratios = {name: rows[a]["images_per_s"] / rows[b]["images_per_s"] for name, (a, b, _) in RATIOS.items()}
        e2e = end_to_end(root, lists, work / "cache", args)
        return {"source": source, "rows": rows, "ratios": ratios, "end_to_end": e2e, "coco": coco_estimate(rows),
                "images": args.images, "batch_size": args.batch_size, "cpus": os.cpu_count()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(result):
    print(f"source: {result['source']}; {result['images']} items per pass, batch {result['batch_size']}, "
          f"{result['cpus']} CPUs")
    print(f"{'data side, one worker':<22} {'images/s':>10} {'ms/image':>9}")
    for name in ROWS:
        row = result["rows"][name]
        print(f"{name:<22} {row['images_per_s']:10.1f} {1000 / row['images_per_s']:9.3f}")
    for name, (_, _, goal) in RATIOS.items():
        target = f"  (goal >= {goal:g}x: {'met' if result['ratios'][name] >= goal else 'NOT met'})" if goal else ""
        print(f"ratio {name:<36} {result['ratios'][name]:7.1f}x{target}")
    e2e = result["end_to_end"]
    for name in ("jpeg", "cache"):
        m = e2e[name]
        print(f"end-to-end CPU evaluation, {'JPEG ' if name == 'jpeg' else 'cache'}: {m['eval_time']:.2f} s for "
              f"{m['num_query']} + {m['num_database']} images ({e2e['num_workers']} workers), mAP {m['map']:.6f}")
    same = e2e["jpeg"]["map"] == e2e["cache"]["map"]
    print(f"end-to-end ratio JPEG / cache: {e2e['jpeg']['eval_time'] / e2e['cache']['eval_time']:.2f}x; cache built "
          f"in {e2e['build_s']:.2f} s; mAP {'identical' if same else 'DIFFERENT'} with and without the cache")
    coco = result["coco"]
    print(f"COCO model: {COCO_EVAL_IMAGES:,} images, {SEED_PROCESSES} x {SEED_WORKERS} workers at these per-worker "
          f"rates (JPEG {coco['jpeg']['data_rate']:,.0f} images/s, cache {coco['cache']['data_rate']:,.0f}), GPUs "
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
    parser.add_argument("--images", type=int, default=256, help="items per timed pass (the source images repeated)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per row; the best counts")
    parser.add_argument("--e2e-repeat", type=int, default=4, help="end to end: the query/database lists repeated")
    parser.add_argument("--num_workers", type=int, default=None, help="end to end loader workers (default: auto)")
    parser.add_argument("--resize_size", type=int, default=256)
    parser.add_argument("--crop_size", type=int, default=224)
    parser.add_argument("--tiny", action="store_true", help="a few items, one pass (tests: structure only)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.images, args.batch_size, args.repeats, args.e2e_repeat = 8, 4, 1, 1
        args.resize_size, args.crop_size = 72, 64
        args.num_workers = 0 if args.num_workers is None else args.num_workers
    result = bench(args)
    report(result)
    return result


if __name__ == "__main__":
    main()
