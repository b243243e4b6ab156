"""Check a dataset before training: every list parses, every listed image exists and decodes.

  python data/check_data.py --dataset toy
  python data/check_data.py --dataset coco --data-path /path/to/coco2014
  python data/check_data.py --dataset imagenet --data-path /path/to/imagenet     # HashNet's lists, unchanged
  python data/check_data.py --data-path ROOT --lists lists/train.txt lists/test.txt lists/database.txt \
      --path-prefix /home/someone/dataset/=

--dataset NAME reads the lists from data/NAME/ (or --list-dir; relative --lists names are taken inside that
folder; default train.txt test.txt database.txt). The data root is --data-path; for --dataset toy it defaults to
data/toy, where the generated images live. Without --dataset, --lists are paths as given.

--path-prefix OLD=NEW (repeatable) rewrites listed paths starting with OLD as training does; unset, it is the
dataset preset's (imagenet and nuswide_81 map the prefixes of HashNet's lists, docs/datasets.md#upstream-paths). When
images are missing, the report names the first unmatched path and the prefix it would need.

Each list is parsed with utils.datasets.image_list.read_list_file (the same parser training uses); a format error
stops the check with its file:line message. All lists must have the same number of labels. Every image
is then opened with PIL and fully decoded to RGB, once even when several lists name it.

Exit status: 0 when every image is fine, 1 when any image is missing or undecodable (the check's finding; each is
named: the first 20 per kind and list, then a count), 2 for a usage, list-format or label-count error (a user error,
as every command of the project answers one: utils/runtime/failure.py).
"""

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # run as `python data/check_data.py`, sys.path[0] is data/
    sys.path.insert(0, str(PROJECT_ROOT))

from utils.datasets.splits import LIST_FILES  # noqa: E402
from utils.runtime.failure import USER_ERROR_EXIT  # noqa: E402

DEFAULT_LISTS = tuple(LIST_FILES.values())
SHOW_PER_KIND = 20


def _check_one(path):
    """None when the image decodes, else ('missing' | 'undecodable', message)."""
    if not path.is_file():
        return ("missing", "no such file")
    try:
        with Image.open(path) as image:
            image.convert("RGB")  # convert forces a full decode, which catches truncated files
    except Exception as error:  # PIL raises many types for corrupt data; every one means "unusable"
        return ("undecodable", f"{type(error).__name__}: {error}")
    return None


def check_images(data_root, rel_paths, num_workers=8, show_progress=True, desc="checking images"):
    """Open and decode every data_root/rel_path.

    Returns {"n": int, "ok": int, "missing": [rel_path], "undecodable": [(rel_path, message)]}, the lists in
    input order. Threads suffice: PIL decoding releases the GIL.
    """
    from tqdm import tqdm

    data_root = Path(data_root)
    rel_paths = list(rel_paths)
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        outcomes = list(tqdm(pool.map(lambda p: _check_one(data_root / p), rel_paths), total=len(rel_paths),
                             desc=desc, disable=not show_progress, leave=False))
    missing = [p for p, o in zip(rel_paths, outcomes) if o is not None and o[0] == "missing"]
    undecodable = [(p, o[1]) for p, o in zip(rel_paths, outcomes) if o is not None and o[0] == "undecodable"]
    return {"n": len(rel_paths), "ok": len(rel_paths) - len(missing) - len(undecodable),
            "missing": missing, "undecodable": undecodable}


def _resolve(args, parser):
    """(data_root, [list paths]) from the CLI flags; parser.error on inconsistent flags."""
    if args.dataset is None and args.lists is None:
        parser.error("pass --dataset NAME (lists in data/NAME/) or --lists FILE [FILE ...]")
    list_names = args.lists or list(DEFAULT_LISTS)
    if args.dataset is not None:
        list_dir = Path(args.list_dir) if args.list_dir else PROJECT_ROOT / "data" / args.dataset
        lists = [Path(name) if Path(name).is_absolute() else list_dir / name for name in list_names]
    else:
        lists = [Path(name) for name in list_names]

    if args.data_path is not None:
        data_root = Path(args.data_path)
    elif args.dataset == "toy":
        data_root = PROJECT_ROOT / "data" / "toy"
    else:
        parser.error("--data-path is required (the folder the list paths are relative to, e.g. the one "
                     "holding train2014/ and val2014/ for COCO); only --dataset toy has a default")
    if not data_root.is_dir():
        hint = " (generate it with `python -m utils.datasets.toy`)" if args.dataset == "toy" else ""
        parser.error(f"data root {data_root} is not a folder{hint}")
    return data_root, lists


def _print_bad(kind, items):
    for item in items[:SHOW_PER_KIND]:
        print(f"  {kind}: {item if isinstance(item, str) else item[0] + '  (' + item[1] + ')'}")
    if len(items) > SHOW_PER_KIND:
        print(f"  ... and {len(items) - SHOW_PER_KIND} more {kind}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Check that every listed image exists and decodes.")
    parser.add_argument("--dataset", help="dataset name: lists are read from data/NAME/")
    parser.add_argument("--data-path", help="data root the list paths are relative to")
    parser.add_argument("--list-dir", help="folder of the lists for --dataset (default data/NAME)")
    parser.add_argument("--path-prefix", action="append", metavar="OLD=NEW",
                        help="rewrite listed paths starting with OLD to start with NEW, as training does "
                             "(repeatable; NEW empty = relative to --data-path; default: the dataset preset's)")
    parser.add_argument("--lists", nargs="+", help="list files (default with --dataset: train.txt test.txt "
                                                   "database.txt)")
    parser.add_argument("--num-classes", type=int, help="expected labels per line (default: from the first list)")
    parser.add_argument("--num-workers", type=int, default=8, help="decoding threads (default 8)")
    args = parser.parse_args(argv)
    data_root, list_paths = _resolve(args, parser)

    from utils.config.flags import parse_path_prefix
    from utils.config.presets import preset_for
    from utils.datasets.image_list import map_list_path, missing_path_hint, read_list_file

    path_prefix = args.path_prefix
    if path_prefix is None and args.dataset is not None:
        path_prefix = preset_for(args.dataset)["path_prefix"]
    try:
        prefixes = parse_path_prefix(path_prefix)
    except ValueError as error:
        parser.error(str(error))
    num_classes = args.num_classes
    parsed = []
    for list_path in list_paths:
        try:
            listed, labels = read_list_file(list_path, data_root, num_classes, check_exists=False)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return USER_ERROR_EXIT
        num_classes = labels.shape[1]
        parsed.append((list_path, listed, [map_list_path(p, prefixes) for p in listed]))

    unique = list(dict.fromkeys(p for _, _, rel_paths in parsed for p in rel_paths))
    result = check_images(data_root, unique, num_workers=args.num_workers)
    missing = set(result["missing"])
    undecodable = dict(result["undecodable"])

    mapping = f", --path-prefix {' '.join(path_prefix)}" if path_prefix else ""
    print(f"data root: {data_root}  ({len(unique)} distinct images, {num_classes} labels per line{mapping})")
    any_bad, hint = False, None
    for list_path, listed, rel_paths in parsed:
        list_missing = [p for p in rel_paths if p in missing]
        list_undecodable = [(p, undecodable[p]) for p in rel_paths if p in undecodable]
        n_ok = len(rel_paths) - len(list_missing) - len(list_undecodable)
        print(f"{list_path}: {len(rel_paths)} images, {n_ok} ok, {len(list_missing)} missing, "
              f"{len(list_undecodable)} undecodable")
        _print_bad("missing", list_missing)
        _print_bad("undecodable", list_undecodable)
        any_bad = any_bad or bool(list_missing or list_undecodable)
        if list_missing and hint is None:
            first = next(i for i, p in enumerate(rel_paths) if p in missing)
            hint = f"{list_path}:\n" + missing_path_hint(listed, rel_paths, first, data_root, path_prefix)
    if hint:
        print(hint)
    if any_bad:
        print(f"FAILED: {len(missing)} missing and {len(undecodable)} undecodable images under {data_root}")
        return 1
    print("all images ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
