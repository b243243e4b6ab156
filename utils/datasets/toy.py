"""A small generated multi-label image set for demos and tests ("toy").

Each 64x64 RGB image shows 1 to 3 simple shapes of distinct classes (TOY_CLASSES) on a random grey-ish solid or
gradient background with light noise. Every class has its own hue (jittered, with varied saturation and
brightness): the toy recipe trains only the hash layer on a frozen, randomly initialised AlexNet
(docs/protocol.md#training-from-scratch), and such features tell shapes apart barely better than chance while they do
see colour (measured: docs/training.md#the-from-scratch-recipe). The lists follow the COCO protocol of
docs/protocol.md#ms-coco-protocol (same line format, same split structure), so everything that reads COCO lists reads
these too:
  test.txt      queries (DEFAULT_NUM_TEST random images)
  database.txt  every image that is not a query
  train.txt     DEFAULT_NUM_TRAIN random database images
plus classes.txt (one class name per line, in label order) and images/NNNNNN.png.

Generation is deterministic for (seed, sizes): image i is drawn only from
SeedSequence(seed, spawn_key=(0, i)), so it does not depend on how many images are generated nor on the
number of worker threads; the split uses SeedSequence(seed, spawn_key=(1,)). No global RNG is touched.

The folder is written into a temporary sibling and renamed into place, and its marker file (.complete,
holding a hash of the parameters) is written last, so an interrupted run never leaves a folder that looks
complete. ensure_toy_dataset() regenerates when the marker is missing or its parameters differ.

CLI:  python -m utils.datasets.toy --root data/toy [--seed 0] [--force]
"""

import argparse
import colorsys
import hashlib
import json
import math
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from utils.datasets.splits import LIST_FILES
from utils.runtime.errors import SetupError, UsageError
from utils.runtime.failure import run_cli

TOY_CLASSES = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "horizontal_bar",
    "vertical_bar",
    "diamond",
    "hexagon",
)
DEFAULT_NUM_IMAGES = 2400
DEFAULT_NUM_TEST = 400
DEFAULT_NUM_TRAIN = 1000
IMAGE_SIZE = 64
MAX_OBJECTS = 3

# Bump when the drawing or the split procedure changes, so existing folders are rebuilt.
GENERATOR_VERSION = 2
MARKER_NAME = ".complete"
# Everything ensure_toy_dataset writes at the top level; anything else in root means the folder is not
# ours, and we refuse to delete it.
_OWN_ENTRIES = frozenset({"images", "classes.txt", MARKER_NAME, *LIST_FILES.values()})

_SUPERSAMPLE = 2  # shapes are drawn at 2x and box-filtered down, which antialiases their edges
_MIN_OBJECT_PX = 14  # object extent in output pixels; below ~12 px star/hexagon/circle blur together
_MAX_OBJECT_PX = 26
_NOISE_STD = 4.0

try:
    _BOX = Image.Resampling.BOX
except AttributeError:  # Pillow < 9.1
    _BOX = Image.BOX


def _params(seed, num_images, num_test, num_train):
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "num_images": int(num_images),
        "num_test": int(num_test),
        "num_train": int(num_train),
        "image_size": IMAGE_SIZE,
        "classes": list(TOY_CLASSES),
    }


def _params_hash(params):
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode("utf-8")).hexdigest()


def is_complete(root, params):
    """True when root holds a finished dataset generated with exactly these parameters."""
    marker = Path(root) / MARKER_NAME
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if recorded.get("params_hash") != _params_hash(params):
        return False
    return all((Path(root) / name).is_file() for name in LIST_FILES.values())


# ---------------------------------------------------------------- drawing


def _regular_polygon(cx, cy, radius, sides, start_angle):
    return [
        (cx + radius * math.cos(start_angle + 2 * math.pi * k / sides),
         cy + radius * math.sin(start_angle + 2 * math.pi * k / sides))
        for k in range(sides)
    ]


def _star_points(cx, cy, radius):
    points = []
    for k in range(10):
        r = radius if k % 2 == 0 else radius * 0.45
        angle = -math.pi / 2 + math.pi * k / 5
        points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    return points


def _draw_shape(draw, name, cx, cy, half, color):
    """Draw one shape filling the square [cx-half, cx+half]^2 (canvas pixels)."""
    box = (cx - half, cy - half, cx + half, cy + half)
    if name == "circle":
        draw.ellipse(box, fill=color)
    elif name == "square":
        s = half * 0.85  # a full-box square looks much heavier than the other shapes
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=color)
    elif name == "triangle":
        draw.polygon([(cx, cy - half), (cx + half, cy + half * 0.8), (cx - half, cy + half * 0.8)], fill=color)
    elif name == "star":
        draw.polygon(_star_points(cx, cy, half), fill=color)
    elif name == "cross":
        t = half * 0.33
        draw.rectangle((cx - half, cy - t, cx + half, cy + t), fill=color)
        draw.rectangle((cx - t, cy - half, cx + t, cy + half), fill=color)
    elif name == "ring":
        draw.ellipse(box, outline=color, width=max(2, int(round(half * 0.35))))
    elif name == "horizontal_bar":
        t = half * 0.3
        draw.rectangle((cx - half, cy - t, cx + half, cy + t), fill=color)
    elif name == "vertical_bar":
        t = half * 0.3
        draw.rectangle((cx - t, cy - half, cx + t, cy + half), fill=color)
    elif name == "diamond":
        draw.polygon([(cx, cy - half), (cx + half, cy), (cx, cy + half), (cx - half, cy)], fill=color)
    elif name == "hexagon":
        draw.polygon(_regular_polygon(cx, cy, half, 6, 0.0), fill=color)
    else:
        raise ValueError(f"unknown toy shape {name!r}; expected one of {TOY_CLASSES}")


def _background(rng, size):
    """Random low-saturation solid or linear-gradient background, float array (size, size, 3)."""
    c1 = np.clip(rng.uniform(20, 235) + rng.uniform(-15, 15, size=3), 0, 255)
    if rng.random() < 0.5:
        return np.broadcast_to(c1.astype(np.float32), (size, size, 3)), c1, c1
    # A gentle gradient: the far end stays near c1 so one object colour contrasts with the whole image.
    c2 = np.clip(c1 + rng.uniform(-70, 70, size=3), 0, 255)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    t = ramp[None, :] * np.float32(math.cos(angle)) + ramp[:, None] * np.float32(math.sin(angle))
    t = (t - t.min()) / (t.max() - t.min())
    return c1.astype(np.float32) + t[..., None] * (c2 - c1).astype(np.float32), c1, c2


def _class_color(rng, class_id):
    """The class's own hue, jittered, with random saturation and brightness (RGB 0..255)."""
    hue = (class_id / len(TOY_CLASSES) + rng.uniform(-0.02, 0.02)) % 1.0
    return np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))) * 255.0


def _place_boxes(rng, count, size):
    """Non-overlapping square boxes (x0, y0, side) in output pixels; shrink when the image gets crowded."""
    boxes = []
    for _ in range(count):
        side = int(rng.integers(_MIN_OBJECT_PX, _MAX_OBJECT_PX + 1))
        for attempt in range(200):
            if attempt and attempt % 40 == 0:
                side = max(_MIN_OBJECT_PX - 4, side - 3)
            x0 = int(rng.integers(1, size - side))
            y0 = int(rng.integers(1, size - side))
            if all(x0 + side + 1 <= bx or bx + bs + 1 <= x0 or y0 + side + 1 <= by or by + bs + 1 <= y0
                   for bx, by, bs in boxes):
                boxes.append((x0, y0, side))
                break
        else:
            # Unreachable for 3 boxes of <= 26 px in 64 px; failing loudly beats a hidden, mislabelled object.
            raise RuntimeError(f"could not place {count} non-overlapping objects in a {size}px image")
    return boxes


def render_toy_image(rng, class_ids, size=IMAGE_SIZE):
    """Render one image (uint8 array size x size x 3) with one object per class id, using only rng."""
    canvas_size = size * _SUPERSAMPLE
    background, c1, c2 = _background(rng, canvas_size)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for class_id, (x0, y0, side) in zip(class_ids, _place_boxes(rng, len(class_ids), size)):
        color = _class_color(rng, class_id)
        half = side * _SUPERSAMPLE / 2.0
        cx = x0 * _SUPERSAMPLE + half
        cy = y0 * _SUPERSAMPLE + half
        _draw_shape(draw, TOY_CLASSES[class_id], cx, cy, half, tuple(int(v) for v in color))
    small = np.asarray(image.resize((size, size), _BOX), dtype=np.float64)
    noisy = small + rng.normal(0.0, _NOISE_STD, size=small.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _sample_class_ids(rng, index):
    # The first object cycles through the classes so every class appears in any run of >= 10 images.
    num_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    first = index % len(TOY_CLASSES)
    others = [c for c in range(len(TOY_CLASSES)) if c != first]
    extra = rng.choice(others, size=num_objects - 1, replace=False).tolist()
    return [first] + [int(c) for c in extra]


# ---------------------------------------------------------------- writing


def _label_line(rel_path, class_ids):
    labels = ["0"] * len(TOY_CLASSES)
    for c in class_ids:
        labels[c] = "1"
    return rel_path + " " + " ".join(labels) + "\n"


def _validate_sizes(num_images, num_test, num_train):
    if num_images < 1 or num_test < 1 or num_train < 1:
        raise UsageError(f"toy dataset sizes must be >= 1, got num_images={num_images}, "
                         f"num_test={num_test}, num_train={num_train}")
    if num_test + num_train > num_images:
        raise UsageError(f"toy dataset: num_test ({num_test}) + num_train ({num_train}) exceeds "
                         f"num_images ({num_images}); train is drawn from the images that are not queries")


def _write_image(folder, seed, index):
    """Render and save image `index`; returns its list line. Independent of every other image."""
    # The same as child `index` of the first child of SeedSequence(seed), without building all n children.
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, index)))
    class_ids = _sample_class_ids(rng, index)
    rel_path = f"images/{index:06d}.png"
    # compress_level=1: noisy images barely compress anyway, and the default level doubles the encode time.
    Image.fromarray(render_toy_image(rng, class_ids), "RGB").save(folder / rel_path, compress_level=1)
    return _label_line(rel_path, class_ids)


def _generate_into(folder, params, show_progress, num_workers):
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    n = params["num_images"]
    seed = params["seed"]
    (folder / "images").mkdir(parents=True)
    # Threads, not processes: PNG encoding and the numpy work release the GIL (~1.9x on 2 cores), and
    # forking inside a process that already runs Paddle is asking for trouble.
    pool = ThreadPoolExecutor(max_workers=num_workers)
    try:
        lines = list(tqdm(pool.map(lambda i: _write_image(folder, seed, i), range(n)), total=n,
                          desc="toy images", disable=not show_progress, leave=False))
    finally:
        # On an error or Ctrl-C, drop the queued images instead of rendering them all before raising.
        pool.shutdown(wait=True, cancel_futures=True)

    # COCO protocol: queries are a random subset, the database is the rest, train is drawn from the database.
    split_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    order = split_rng.permutation(n)
    test_ids = order[: params["num_test"]]
    database_ids = order[params["num_test"]:]
    train_ids = database_ids[split_rng.permutation(len(database_ids))[: params["num_train"]]]
    for split, ids in (("test", test_ids), ("database", database_ids), ("train", train_ids)):
        (folder / LIST_FILES[split]).write_text("".join(lines[i] for i in ids), encoding="utf-8")
    (folder / "classes.txt").write_text("".join(c + "\n" for c in TOY_CLASSES), encoding="utf-8")
    marker = {"params": params, "params_hash": _params_hash(params)}
    (folder / MARKER_NAME).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _refuse_foreign_folder(root):
    foreign = sorted(p.name for p in root.iterdir() if p.name not in _OWN_ENTRIES)
    if foreign:
        raise SetupError(
            f"{root} exists without a valid {MARKER_NAME} marker and holds files the toy generator did not "
            f"write ({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); refusing to replace it. "
            f"Pass another --root or remove the folder.")


def ensure_toy_dataset(root="data/toy", seed=0, num_images=DEFAULT_NUM_IMAGES, num_test=DEFAULT_NUM_TEST,
                       num_train=DEFAULT_NUM_TRAIN, force=False, show_progress=False, num_workers=None):
    """Generate the toy dataset under root unless a complete one with the same parameters is there.

    Returns root as a Path. Safe against interruption (temp folder + rename, marker last) and against
    several processes calling it at once (each builds its own temp folder; the first rename wins and the
    others, finding a complete folder, discard theirs).
    """
    root = Path(root)
    _validate_sizes(num_images, num_test, num_train)
    params = _params(seed, num_images, num_test, num_train)
    if not force and is_complete(root, params):
        return root
    if root.exists():
        if not root.is_dir():
            raise UsageError(f"toy dataset root {root} exists and is not a folder")
        if _read_recorded_params(root) is None:
            _refuse_foreign_folder(root)

    root.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = root.parent / f".{root.name}.tmp-{tag}"
    old = root.parent / f".{root.name}.old-{tag}"
    try:
        if num_workers is None:
            num_workers = min(4, os.cpu_count() or 1)
        _generate_into(tmp, params, show_progress, num_workers)
        if root.exists():
            try:
                os.replace(root, old)  # a folder cannot be renamed onto a non-empty one: move it aside
            except FileNotFoundError:  # another process moved it first
                pass
        try:
            os.replace(tmp, root)
        except OSError:
            # Lost a race: another process installed a folder between our move and our rename.
            if not is_complete(root, params):
                raise
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return root


def _read_recorded_params(root):
    try:
        return json.loads((root / MARKER_NAME).read_text(encoding="utf-8"))["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description="Generate the toy multi-label hashing dataset.")
    parser.add_argument("--root", default="data/toy", help="output folder (default: data/toy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-images", type=int, default=DEFAULT_NUM_IMAGES)
    parser.add_argument("--num-test", type=int, default=DEFAULT_NUM_TEST)
    parser.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN)
    parser.add_argument("--force", action="store_true", help="regenerate even when a complete copy exists")
    args = parser.parse_args(argv)

    def generate(_argv):
        start = time.perf_counter()
        root = ensure_toy_dataset(args.root, seed=args.seed, num_images=args.num_images,
                                  num_test=args.num_test, num_train=args.num_train, force=args.force,
                                  show_progress=True)
        seconds = time.perf_counter() - start
        counts = {name: sum(1 for _ in open(root / name, encoding="utf-8")) for name in LIST_FILES.values()}
        print(f"toy dataset at {root}: {args.num_images} images, "
              + ", ".join(f"{name} {count}" for name, count in counts.items())
              + f" ({seconds:.1f} s)")

    return run_cli(generate)


if __name__ == "__main__":
    sys.exit(main())
