"""scripts/index_images.py and the index it keeps (utils/retrieval/index_store.py, utils/retrieval/indexing.py).

Pinned here:
- build over a folder (recursive; a non-image file skipped), a glob and a list file: one item per image, the list's
  labels kept, `info --json`'s counts and model; every stored code is pack_rows(binarize(outputs)) of the
  checkpoint's network, computed here without the encoder under test; `predict.py --index` finds an indexed image
  first at distance 0, the rest ranked as a brute force over the stored codes, with the item's labels and id;
- add encodes only what is new or whose content changed: a rerun or a touched file (mtime only) encodes nothing and
  adds no code row, an edited file is encoded once (its old row dead, its code the new content's), a new file once;
- remove by glob and by folder (a sibling folder sharing the name's prefix kept); compact drops exactly the dead rows
  and keeps every item's id, order and code; verify, re-encoding every item, passes after;
- verify names a missing file, a changed file, a corrupted stored code and a truncated codes file, exit 2 each;
- an unreadable image is named, the others indexed, exit 2; the rerun without it exits 0 and encodes nothing;
- another model's index (another checkpoint, another width) is refused by build, add, IndexStore and
  predict.py --index, naming both checkpoints;
- SIGKILL (tests/index_kill_worker.py) while the index is created, after a chunk's codes are fsynced but before its
  commit, as its COMMIT runs, after a commit, half-way through writing a code row, and twice at moments taken by the
  clock: a reader sees only committed items; the same build run again exits 0 with one item per image, no code bytes
  past the committed rows, no dead row, verify passing and every code equal to an uninterrupted build's. A compaction
  killed before or after its commit is finished by the next compaction;
- user errors exit 2 naming the folder or path (a non-index folder, a missing index, a missing input, a glob matching
  nothing, no --pretrained, --index a file, a remove matching nothing);
- build takes a run folder's own width and backbone; remove finds paths spelled with `..` or through a symlink as
  build stored them; add and verify refuse another --pretrained even when they have nothing to encode.

The toy images and checkpoint are tests/test_predict.py's (40 images of 64 px, a random standardised 32-bit HashNet).
"""
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing, redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import paddle
import pytest

import predict
from test_predict import random_hashnet, toy_checkpoint
from utils.datasets.image_list import build_transform, load_rgb
from utils.hashing.codes import binarize, pack_rows
from utils.retrieval.collection import index_collection
from utils.retrieval.index_store import IndexStore
from utils.runtime.errors import UsageError
from utils.train import checkpoint

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "index_images.py"
WORKER = Path(__file__).resolve().parent / "index_kill_worker.py"
BITS, ROW_BYTES, CHUNK = 32, 4, 8
# the dynamic graph encodes: making a Paddle Inference predictor costs about a second per command, and what the index
# stores does not depend on the encoder (predict.py below encodes its queries through the default predictor)
MODEL_FLAGS = ["--bit", str(BITS), "--crop-size", "64", "--resize-size", "72", "--num-workers", "0", "--device", "cpu",
               "--encoder", "dygraph"]
# where the layout puts the 40 toy images, in order: a folder tree (photos/ab shares photos/a's prefix), a glob, a list
GROUPS = (("photos", 8), ("photos/a", 6), ("photos/a/b", 3), ("photos/ab", 3), ("shots", 10), ("listed", 10))
NUM_IMAGES = sum(n for _, n in GROUPS)


def load_tool():
    spec = importlib.util.spec_from_file_location("index_images", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = load_tool()


# ------------------------------------------------------------------------------------------------------- helpers
def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_main(main, *argv):
    """(exit status, stdout, stderr) of an entry point's main() run in this process."""
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def run_tool(*argv):
    return run_main(tool.main, *argv)


def build_argv(index, inputs, ckpt):
    return ["build", "--index", index, "--pretrained", ckpt, *MODEL_FLAGS, "--chunk", CHUNK, *inputs]


def indexed_count(out):
    return int(re.search(r": (\d+) images indexed", out).group(1))


def stored(index):
    """({path: {id, slot, labels, code (row bytes)}} of the live items, info()) as a reader sees them."""
    store = IndexStore(index)
    try:
        ids, paths, labels, slots = store.items()
        assert len(set(paths)) == len(paths), "a path is in the table twice"
        rows = store.code_rows(slots)
        items = {path: {"id": int(i), "slot": int(s), "labels": lab, "code": bytes(row)}
                 for i, path, lab, s, row in zip(ids, paths, labels, slots, rows)}
        return items, store.info()
    finally:
        store.close()


def codes_of(items):
    return {path: item["code"] for path, item in items.items()}


def code_files(index):
    return sorted(p.name for p in Path(index).glob("codes-*.u8"))


def hamming(a, b):
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def make_layout(dest, model):
    """The 40 toy images copied under dest as GROUPS says, a non-image file in the folder tree, and
    listed/labels.txt giving listed/'s images their toy labels. Returns the build inputs, the image paths (resolved,
    as the index stores them) and {path: labels or None}."""
    dest = Path(dest)
    images, paths, labels = iter(model["images"]), [], {}
    listing = []
    for folder, count in GROUPS:
        (dest / folder).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            source = next(images)
            target = dest / folder / source.name
            shutil.copy(source, target)
            paths.append(str(target.resolve()))
            labels[paths[-1]] = model["labels"][source.name] if folder == "listed" else None
            if folder == "listed":
                listing.append(" ".join([source.name, *map(str, model["labels"][source.name])]))
    (dest / "photos" / "notes.txt").write_text("not an image\n")
    (dest / "listed" / "labels.txt").write_text("\n".join(listing) + "\n")
    inputs = [str(dest / "photos"), str(dest / "shots" / "*.png"), str(dest / "listed" / "labels.txt")]
    return {"root": dest, "inputs": inputs, "paths": paths, "labels": labels}


def under(layout, folder):
    return [p for p in layout["paths"] if p.startswith(str((layout["root"] / folder).resolve()) + "/")]


def verify_quick(index):
    """verify without re-encoding (the stored state and every file): the kill tests compare codes themselves."""
    status, out, err = run_tool("verify", "--index", index, "--reencode", "0", "--json")
    assert status == 0, err[-3000:]
    return json.loads(out)


def assert_whole(index, clean):
    """The index holds every image once with the uninterrupted build's code, and nothing else."""
    items, info = stored(index)
    assert sorted(items) == sorted(clean["codes"])
    assert (info["items"], info["code_rows"], info["dead_rows"]) == (NUM_IMAGES, NUM_IMAGES, 0)
    assert sorted(item["slot"] for item in items.values()) == list(range(NUM_IMAGES))
    assert code_files(index) == ["codes-0.u8"]
    assert (Path(index) / "codes-0.u8").stat().st_size == NUM_IMAGES * ROW_BYTES
    assert codes_of(items) == clean["codes"]
    report = verify_quick(index)
    assert (report["items"], report["problems"]) == (NUM_IMAGES, [])


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The toy images, a 32-bit checkpoint, its codes computed here from the network ({content sha256: row bytes}),
    the toy labels by file name, and a checkpoint of another network of the same width."""
    base = tmp_path_factory.mktemp("index_model")
    root, network, ckpt = toy_checkpoint(base, BITS, seed=5)
    images = sorted((root / "images").glob("*.png"))
    assert len(images) == NUM_IMAGES
    transform = build_transform(False, 72, 64)
    with paddle.no_grad():
        outputs = network(paddle.to_tensor(np.stack([transform(load_rgb(p)) for p in images]))).numpy()
    rows = pack_rows(binarize(outputs))
    assert len({bytes(row) for row in rows}) >= NUM_IMAGES - 2  # codes that tell images apart, or comparing says little
    labels = {}
    for name in ("database.txt", "test.txt"):
        for line in (root / name).read_text().splitlines():
            if line.strip():
                path, *values = line.split()
                labels[Path(path).name] = [int(v) for v in values]
    other_base = tmp_path_factory.mktemp("index_other_model")
    other = checkpoint.save(random_hashnet(BITS, "kaiming", seed=6).state_dict(),
                            other_base / f"model_best_{BITS}.pdparams")
    return {"ckpt": ckpt, "other": other, "images": images, "labels": labels,
            "codes": {digest(p): bytes(row) for p, row in zip(images, rows)}}


@pytest.fixture(scope="module")
def layout(model, tmp_path_factory):
    """The layout the clean and the killed builds index (read only: their paths are the same files)."""
    return make_layout(tmp_path_factory.mktemp("index_layout"), model)


@pytest.fixture(scope="module")
def clean(model, layout, tmp_path_factory):
    """An uninterrupted build of `layout`: its command's result and its codes by path."""
    index = tmp_path_factory.mktemp("clean") / "index"
    result = run_tool(*build_argv(index, layout["inputs"], model["ckpt"]))
    assert result[0] == 0, result[2][-3000:]
    return {"index": index, "result": result, "codes": codes_of(stored(index)[0])}


# ------------------------------------------------------------------------------------------------------- build
def test_build_indexes_folders_globs_and_lists_with_the_models_codes(model, layout, clean, tmp_path):
    status, out, err = clean["result"]
    assert re.search(rf": {NUM_IMAGES} images indexed .*, 0 unchanged, 0 unreadable; {NUM_IMAGES} items in the index",
                     out), out
    index = clean["index"]
    items, _ = stored(index)
    assert sorted(items) == sorted(layout["paths"])  # photos/notes.txt is not an image
    assert {path: item["labels"] for path, item in items.items()} == layout["labels"]
    assert sorted(item["slot"] for item in items.values()) == list(range(NUM_IMAGES))
    for path, item in items.items():
        assert item["code"] == model["codes"][digest(path)], path

    status, out, err = run_tool("info", "--index", index, "--json")
    assert status == 0, err
    info = json.loads(out)
    assert {key: info[key] for key in ("items", "code_rows", "dead_rows", "labelled_items", "bits", "codes_bytes")} \
        == {"items": NUM_IMAGES, "code_rows": NUM_IMAGES, "dead_rows": 0, "labelled_items": 10, "bits": BITS,
            "codes_bytes": NUM_IMAGES * ROW_BYTES}
    assert info["model"]["checkpoint_path"] == str(Path(model["ckpt"]).resolve())
    assert info["model"]["checkpoint_sha256"] == digest(model["ckpt"])
    assert info["model"]["preprocess"]["resize_size"] == 72 and info["model"]["preprocess"]["crop_size"] == 64

    # a listed image whose code no other image has: it alone is at distance 0 from itself
    codes = clean["codes"]
    query = next(p for p in under(layout, "listed") if list(codes.values()).count(codes[p]) == 1)
    status, out, err = run_main(predict.main, "--index", index, "--img", query, "--json", "--topk", "6",
                                "--save_path", tmp_path / "found", "--num_workers", "0", "--device", "cpu")
    assert status == 0, err[-3000:]
    (entry,) = [json.loads(line) for line in out.splitlines() if line.strip()]
    first = entry["results"][0]
    assert (first["path"], first["distance"], first["index"]) == (query, 0, items[query]["id"])
    by_slot = sorted(items, key=lambda p: items[p]["slot"])  # ties in item order
    expected = sorted(((hamming(codes[query], codes[p]), items[p]["slot"], p) for p in by_slot))[:6]
    assert [(r["distance"], r["path"]) for r in entry["results"]] == [(d, p) for d, _, p in expected]
    own = layout["labels"][query]
    assert entry["query_labels"] == [i for i, v in enumerate(own) if v]


# --------------------------------------------------------------------------------------------------------- add
def test_add_encodes_only_new_or_changed_files(model, tmp_path):
    files = make_layout(tmp_path / "files", model)
    photos, index = files["root"] / "photos", tmp_path / "index"
    assert run_tool(*build_argv(index, [photos], model["ckpt"]))[0] == 0
    before, info = stored(index)
    assert len(before) == info["code_rows"] == 20
    add = ["add", "--index", index, "--num-workers", "0", "--device", "cpu", "--encoder", "dygraph", photos]

    status, out, err = run_tool(*add)
    assert status == 0, err
    assert indexed_count(out) == 0 and ", 20 unchanged, " in out
    assert codes_of(stored(index)[0]) == codes_of(before)

    touched = Path(under(files, "photos/a")[0])
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5 * 10**9))
    status, out, err = run_tool(*add)
    assert status == 0 and indexed_count(out) == 0 and ", 20 unchanged, " in out, out + err
    items, info = stored(index)
    assert (info["items"], info["code_rows"]) == (20, 20)
    store = IndexStore(index)
    assert store.known()[str(touched)][1] == touched.stat().st_mtime_ns  # recorded: the next add does not hash it
    store.close()

    edited, donor = Path(under(files, "photos/a/b")[0]), Path(under(files, "shots")[0])
    edited.write_bytes(donor.read_bytes())
    status, out, err = run_tool(*add)
    assert status == 0 and indexed_count(out) == 1 and ", 19 unchanged, " in out, out + err
    items, info = stored(index)
    assert (info["items"], info["code_rows"], info["dead_rows"]) == (20, 21, 1)
    assert items[str(edited)]["code"] == model["codes"][digest(donor)] != before[str(edited)]["code"]
    assert items[str(edited)]["slot"] == 20
    assert {p: c for p, c in codes_of(items).items() if p != str(edited)} == \
        {p: c for p, c in codes_of(before).items() if p != str(edited)}

    new = photos / "a" / "new.png"
    shutil.copy(under(files, "shots")[1], new)
    status, out, err = run_tool(*add)
    assert status == 0 and indexed_count(out) == 1, out + err
    items, info = stored(index)
    assert (info["items"], info["code_rows"], info["dead_rows"]) == (21, 22, 1)
    assert items[str(new.resolve())]["code"] == model["codes"][digest(new)]

    status, out, err = run_tool(*add)
    assert status == 0 and indexed_count(out) == 0 and ", 21 unchanged, " in out
    assert stored(index)[1]["code_rows"] == 22


# ------------------------------------------------------------------------------------------ remove, compact, verify
def test_remove_by_glob_and_folder_then_compact_keeps_ids_and_codes(model, tmp_path):
    files = make_layout(tmp_path / "files", model)
    index = tmp_path / "index"
    assert run_tool(*build_argv(index, files["inputs"], model["ckpt"]))[0] == 0
    before, _ = stored(index)

    status, out, err = run_tool("remove", "--index", index, files["root"] / "shots" / "*.png")
    assert status == 0 and f"{index}: 10 items removed, 30 left" in out, out + err
    status, out, err = run_tool("remove", "--index", index, files["root"] / "photos" / "a")
    assert status == 0 and "9 items removed, 21 left" in out, out + err
    kept = set(before) - set(under(files, "shots")) - set(under(files, "photos/a"))
    assert len(kept) == 21 and set(under(files, "photos/ab")) <= kept
    items, info = stored(index)
    assert set(items) == kept and (info["items"], info["code_rows"], info["dead_rows"]) == (21, 40, 19)

    status, out, err = run_tool("compact", "--index", index)
    assert status == 0 and "19 dead code rows dropped; 21 rows for 21 items" in out, out + err
    items, info = stored(index)
    assert (info["items"], info["code_rows"], info["dead_rows"], info["codes_bytes"]) == (21, 21, 0, 21 * ROW_BYTES)
    assert code_files(index) == ["codes-1.u8"]
    assert sorted(item["slot"] for item in items.values()) == list(range(21))
    assert {p: (item["id"], item["code"]) for p, item in items.items()} == \
        {p: (before[p]["id"], before[p]["code"]) for p in kept}
    assert sorted(items, key=lambda p: items[p]["slot"]) == sorted(kept, key=lambda p: before[p]["slot"])
    status, out, err = run_tool("compact", "--index", index)
    assert status == 0 and "0 dead code rows dropped" in out and code_files(index) == ["codes-1.u8"]

    status, out, err = run_tool("verify", "--index", index, "--encoder", "dygraph", "--reencode", "100", "--json")
    assert status == 0, err[-3000:]
    assert json.loads(out) == {"items": 21, "missing": 0, "changed": 0, "reencoded": 21, "codes_differing": 0,
                               "problems": []}

    # what predict.py and serve.py search: each item's own code finds it first
    store = IndexStore(index)
    collection = index_collection(store)
    assert sorted(collection.item_ids.tolist()) == sorted(item["id"] for item in items.values())
    positions, distances = collection.knn(np.stack([collection.code(i) for i in range(len(collection))]), 1)
    assert distances[:, 0].tolist() == [0] * 21
    store.close()


def test_verify_names_missing_changed_and_corrupted(model, tmp_path):
    files = make_layout(tmp_path / "files", model)
    index = tmp_path / "index"
    assert run_tool(*build_argv(index, [files["root"] / "photos"], model["ckpt"]))[0] == 0
    assert verify_quick(index)["problems"] == []
    items, _ = stored(index)
    codes = index / "codes-0.u8"

    victim = under(files, "photos/a")[2]
    original = codes.read_bytes()
    with open(codes, "r+b") as f:
        f.seek(items[victim]["slot"] * ROW_BYTES + 1)
        f.write(bytes([original[items[victim]["slot"] * ROW_BYTES + 1] ^ 0xFF]))
    status, out, err = run_tool("verify", "--index", index, "--encoder", "dygraph", "--reencode", "100")
    assert status == 2 and "20 re-encoded, 1 codes differing" in out, out + err
    assert f"stored code differs from a fresh encoding: {victim}" in err
    codes.write_bytes(original)

    gone = Path(under(files, "photos")[0])
    gone.rename(tmp_path / "aside.png")
    status, out, err = run_tool("verify", "--index", index)
    assert status == 2 and f"missing: {gone}" in err and "1 missing, 0 changed" in out, out + err
    (tmp_path / "aside.png").rename(gone)

    changed = Path(under(files, "photos/ab")[0])
    content = changed.read_bytes()
    changed.write_bytes(Path(under(files, "shots")[0]).read_bytes())
    status, out, err = run_tool("verify", "--index", index)
    assert status == 2 and f"changed since indexed: {changed}" in err and "0 missing, 1 changed" in out, out + err
    changed.write_bytes(content)  # the same content again, a new mtime: not a change
    assert verify_quick(index)["problems"] == []

    os.truncate(codes, 20 * ROW_BYTES - 1)
    status, out, err = run_tool("verify", "--index", index)
    assert status == 2 and f"{codes} holds {20 * ROW_BYTES - 1} bytes but 20 committed rows need 80" in err


# ---------------------------------------------------------------------------------------------- unreadable input
def test_an_unreadable_image_is_named_the_others_indexed(model, tmp_path):
    files = make_layout(tmp_path / "files", model)
    photos, index = files["root"] / "photos", tmp_path / "index"
    broken = photos / "a" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a JPEG")
    status, out, err = run_tool(*build_argv(index, [photos], model["ckpt"]))
    assert status == 2
    assert f"error: {broken}: " in err and "1 of 21 images could not be read" in err.splitlines()[-1]
    assert indexed_count(out) == 20 and ", 1 unreadable; 20 items in the index" in out
    items, _ = stored(index)
    assert sorted(items) == sorted(under(files, "photos"))
    assert all(item["code"] == model["codes"][digest(path)] for path, item in items.items())

    broken.unlink()
    status, out, err = run_tool(*build_argv(index, [photos], model["ckpt"]))
    assert status == 0 and indexed_count(out) == 0 and ", 20 unchanged, 0 unreadable" in out, out + err


# ---------------------------------------------------------------------------------------------------- identity
def test_another_models_index_is_refused_naming_both(model, tmp_path):
    files = make_layout(tmp_path / "files", model)
    shots, index = files["root"] / "shots", tmp_path / "index"
    assert run_tool(*build_argv(index, [shots], model["ckpt"]))[0] == 0
    ours, theirs = str(Path(model["ckpt"]).resolve()), str(Path(model["other"]).resolve())

    status, _, err = run_tool(*build_argv(index, [shots], model["other"]))
    assert status == 2 and ours in err and theirs in err and "checkpoint_sha256" in err, err

    new = shots / "new.png"
    shutil.copy(under(files, "listed")[0], new)
    status, _, err = run_tool("add", "--index", index, "--pretrained", model["other"], *MODEL_FLAGS, shots)
    assert status == 2 and ours in err and theirs in err, err
    items, info = stored(index)
    assert (info["items"], info["code_rows"]) == (10, 10) and str(new.resolve()) not in items

    store = IndexStore(index)
    wider = dict(store.identity, bits=64, checkpoint_path=theirs)
    store.close()
    with pytest.raises(UsageError, match=rf"bits: {BITS} != 64") as refused:
        IndexStore(index, expect=wider)
    assert ours in str(refused.value) and theirs in str(refused.value)

    query = under(files, "shots")[3]
    search = ["--index", index, "--img", query, "--json", "--save_path", tmp_path / "found", *MODEL_FLAGS]
    status, _, err = run_main(predict.main, *search, "--pretrained", model["other"])
    assert status == 2 and ours in err and theirs in err, err[-3000:]
    status, out, err = run_main(predict.main, *search, "--pretrained", model["ckpt"])
    assert status == 0 and json.loads(out)["results"][0]["path"] == query, err[-3000:]


# ------------------------------------------------------------------------------------------------ kill and rerun
# name: (tests/index_kill_worker.py's kill point, items committed when it died, bytes of codes-0.u8 then); chunks of 8
KILLS = {
    "creating the index": ("before-commit:1", None, None),
    "codes fsynced, not committed": ("fsync:2", 8, 16 * ROW_BYTES),
    "as the commit runs": ("before-commit:3", 8, 16 * ROW_BYTES),
    "after a commit": ("after-append:2", 16, 16 * ROW_BYTES),
    "half-way through a row": ("torn-append:3", 16, 16 * ROW_BYTES + ROW_BYTES * 3 // 2),
}


def cli_env():
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def killed(model, layout, tmp_path_factory):
    """Each of KILLS's builds of `layout`, killed at its point (run side by side: each point is reached by counting
    the process's own writes, not by time): {name: (index, returncode, stderr)}."""
    base = tmp_path_factory.mktemp("killed")
    started = {}
    for number, (name, (point, _, _)) in enumerate(KILLS.items()):
        index = base / f"index{number}"
        argv = [sys.executable, WORKER, point, *build_argv(index, layout["inputs"], model["ckpt"])]
        started[name] = (index, subprocess.Popen([str(a) for a in argv], cwd=REPO, env=cli_env(),
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = {}
    for name, (index, proc) in started.items():
        _, err = proc.communicate(timeout=600)
        results[name] = (index, proc.returncode, err)
    return results


@pytest.mark.parametrize("name", list(KILLS))
def test_a_killed_build_is_finished_by_running_it_again(name, killed, model, layout, clean):
    index, returncode, err = killed[name]
    _, committed, code_bytes = KILLS[name]
    assert returncode == -signal.SIGKILL, err[-3000:]
    if committed is None:
        with pytest.raises(UsageError, match="creation was interrupted: rerun the build command"):
            IndexStore(index)
        status, _, err = run_tool("add", "--index", index, layout["inputs"][0])
        assert status == 2 and "rerun the build command" in err
    else:
        items, info = stored(index)  # a reader: the committed chunks, whatever lies past them in the codes file
        assert (len(items), info["code_rows"], info["dead_rows"]) == (committed, committed, 0)
        assert (index / "codes-0.u8").stat().st_size == code_bytes
        assert {p: clean["codes"][p] for p in items} == codes_of(items)

    status, out, err = run_tool(*build_argv(index, layout["inputs"], model["ckpt"]))
    assert status == 0, err[-3000:]
    assert indexed_count(out) == NUM_IMAGES - (committed or 0)  # what was committed is not encoded again
    assert_whole(index, clean)


def committed_items(index):
    """The items a reader sees now (0 before the table exists); never creates the database."""
    database = Path(index) / "index.sqlite"
    if not database.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1)) as db:
            return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_build_killed_at_moments_taken_by_the_clock_is_finished(model, layout, clean, tmp_path):
    index = tmp_path / "index"
    argv = [str(a) for a in [sys.executable, SCRIPT, *build_argv(index, layout["inputs"], model["ckpt"])]]
    counts = []
    for _ in range(2):
        before = committed_items(index)
        proc = subprocess.Popen(argv, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while committed_items(index) <= before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.kill()  # SIGKILL, a chunk or two into this run
        _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()[-3000:]
        counts.append(committed_items(index))
    assert 0 < counts[0] < counts[1] < NUM_IMAGES, counts

    status, out, err = run_tool(*build_argv(index, layout["inputs"], model["ckpt"]))
    assert status == 0 and indexed_count(out) == NUM_IMAGES - counts[1], err[-3000:]
    assert_whole(index, clean)


def test_a_killed_compaction_is_finished_by_the_next(model, tmp_path):
    files = make_layout(tmp_path / "files", model)
    index = tmp_path / "index"
    assert run_tool(*build_argv(index, [files["root"] / "photos"], model["ckpt"]))[0] == 0
    assert run_tool("remove", "--index", index, files["root"] / "photos" / "a")[0] == 0
    kept, _ = stored(index)
    assert len(kept) == 11

    def compact_killed_at(point):
        proc = subprocess.run([sys.executable, str(WORKER), point, "compact", "--index", str(index)], cwd=REPO,
                              env=cli_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]

    compact_killed_at("fsync:1")  # the new generation written, the switch not committed
    assert code_files(index) == ["codes-0.u8", "codes-1.u8"]
    items, info = stored(index)
    assert (info["code_rows"], codes_of(items)) == (20, codes_of(kept))

    compact_killed_at("after-commit:1")  # switched, the old generation not yet deleted
    assert code_files(index) == ["codes-0.u8", "codes-1.u8"]
    items, info = stored(index)
    assert (info["code_rows"], codes_of(items)) == (11, codes_of(kept))

    status, out, err = run_tool("compact", "--index", index)
    assert status == 0 and "0 dead code rows dropped; 11 rows for 11 items" in out, out + err
    assert code_files(index) == ["codes-1.u8"] and (index / "codes-1.u8").stat().st_size == 11 * ROW_BYTES
    assert codes_of(stored(index)[0]) == codes_of(kept)
    assert verify_quick(index)["problems"] == []


# ------------------------------------------------------------------------------------------------- user errors
def test_user_errors_exit_2_naming_what_is_wrong(model, tmp_path):
    files = make_layout(tmp_path / "files", model)
    shots, index = files["root"] / "shots", tmp_path / "index"

    status, _, err = run_tool(*build_argv(files["root"] / "photos", [shots], model["ckpt"]))
    assert status == 2 and f"{files['root'] / 'photos'} exists and is not an index" in err, err
    status, _, err = run_tool("add", "--index", tmp_path / "nothing", shots)
    assert status == 2 and f"{tmp_path / 'nothing'} is not an index" in err and "build --index" in err, err
    status, _, err = run_tool("info", "--index", tmp_path / "nothing")
    assert status == 2 and "is not an index" in err, err

    missing = tmp_path / "no_such_folder"
    status, _, err = run_tool(*build_argv(index, [shots, missing], model["ckpt"]))
    assert status == 2 and f"{missing}: no such image, folder, list file or matching pattern" in err, err
    status, _, err = run_tool(*build_argv(index, [shots / "*.jpg"], model["ckpt"]))
    assert status == 2 and f"{shots / '*.jpg'}: the pattern matches no image" in err, err
    status, _, err = run_tool("build", "--index", index, shots)
    assert status == 2 and "build needs --pretrained" in err, err
    assert not index.exists()  # each was refused before anything was written
    status, _, err = run_tool("info", "--index", files["root"] / "listed" / "labels.txt")
    assert status == 2 and "is a file; give a folder" in err, err

    assert run_tool(*build_argv(index, [shots], model["ckpt"]))[0] == 0
    status, out, err = run_tool("remove", "--index", index, files["root"] / "photos" / "*.png")
    assert status == 2 and "0 items removed, 10 left" in out and "nothing in" in err, out + err
    assert stored(index)[1]["items"] == 10


# ------------------------------------------------------------------------------------------- fixed defects
def test_build_takes_the_width_of_a_run_folder(model, tmp_path):
    files = make_layout(tmp_path / "files", model)
    run = tmp_path / "run"
    run.mkdir()
    for path in Path(model["ckpt"]).parent.glob(Path(model["ckpt"]).name + "*"):  # the checkpoint and its sidecar
        shutil.copy(path, run / path.name)
    (run / "config.json").write_text(json.dumps({"bit": BITS, "backbone": "alexnet", "resize_size": 72,
                                                 "crop_size": 64, "resize_mode": "short", "dataset": "toy"}))
    index = tmp_path / "index"
    status, _, err = run_tool("build", "--index", index, "--pretrained", run, "--num-workers", "0", "--device", "cpu",
                              files["root"] / "shots")
    assert status == 0, err[-2000:]
    items, info = stored(index)
    assert info["bits"] == BITS and all(item["code"] == model["codes"][digest(p)] for p, item in items.items())


def test_remove_finds_paths_spelled_as_build_took_them(model, tmp_path, monkeypatch):
    files = make_layout(tmp_path / "files", model)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(files["root"])
    monkeypatch.chdir(tmp_path / "elsewhere")
    index = tmp_path / "index"
    assert run_tool(*build_argv(index, ["../files/shots", tmp_path / "link" / "photos" / "ab"], model["ckpt"]))[0] == 0
    assert stored(index)[1]["items"] == 13
    status, out, err = run_tool("remove", "--index", index, "../files/shots")
    assert status == 0 and "10 items removed, 3 left" in out, out + err
    status, out, err = run_tool("remove", "--index", index, tmp_path / "link" / "photos" / "ab" / "*.png")
    assert status == 0 and "3 items removed, 0 left" in out, out + err


def test_add_and_verify_refuse_another_model_with_nothing_to_encode(model, layout, clean):
    other = ["--pretrained", model["other"], *MODEL_FLAGS]
    status, _, err = run_tool("add", "--index", clean["index"], *other, *layout["inputs"])
    assert status == 2 and str(Path(model["other"]).resolve()) in err, err
    status, _, err = run_tool("verify", "--index", clean["index"], *other, "--reencode", "0")
    assert status == 2 and str(Path(model["other"]).resolve()) in err, err
