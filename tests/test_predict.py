"""predict.py: a database image comes back first at distance 0, the code cache, outputs, and user errors.

Checkpoints are random-init HashNets saved in tmp (only encoding consistency matters). The toy one gets its fc7
standardised on the tiny database, as the toy recipe does before training, so its codes differ between images.
"""
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest
from PIL import Image

import predict
from models import HashNet
from utils.datasets.toy import TOY_CLASSES, ensure_toy_dataset
from utils.retrieval import contact_sheet
from utils.retrieval import database as database_module
from utils.retrieval import search as retrieval
from utils.runtime import fileio
from utils.train import checkpoint

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TOY_SIZES = {"num_images": 40, "num_test": 6, "num_train": 16}  # 34 database images


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def list_items(list_path):
    return [line.split() for line in Path(list_path).read_text(encoding="utf-8").splitlines() if line.strip()]


def random_hashnet(bit, init="torchvision", seed=0):
    paddle.seed(seed)
    with paddle.utils.unique_name.guard():
        model = HashNet(bit, init=init)
    model.eval()
    return model


def standardize_on(model, root, list_path, resize, crop):
    """Set fc7 mean/std from the listed images (what the toy recipe does before training)."""
    from paddle.io import DataLoader

    from utils.datasets.image_list import ImageList, build_transform
    loader = DataLoader(ImageList(root, list_path, build_transform(False, resize, crop)), batch_size=64)
    with paddle.no_grad():
        features = np.concatenate([model.fc7(x).numpy() for x, _, _ in loader])
    model.fit_standardization(features)
    return model


def toy_checkpoint(base, bit, seed):
    """A small toy set generated under base/toy and a random standardised `bit`-bit HashNet saved as
    base/model_best_{bit}.pdparams (the same seed for both); returns (root, model, checkpoint path)."""
    root = ensure_toy_dataset(base / "toy", seed=seed, **TOY_SIZES)
    model = standardize_on(random_hashnet(bit, "kaiming", seed=seed), root, root / "database.txt", 72, 64)
    return root, model, checkpoint.save(model.state_dict(), base / f"model_best_{bit}.pdparams")


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """A small generated toy set (lists, classes.txt, images) and a 64-bit checkpoint for it."""
    base = tmp_path_factory.mktemp("predict_toy")
    root, model, ckpt = toy_checkpoint(base, 64, seed=0)
    return {"root": root, "ckpt": ckpt, "base": base, "model": model}


def toy_args(toy, save_path, *extra, ckpt=None):
    return ["--dataset", "toy", "--data-path", str(toy["root"]), "--list-dir", str(toy["root"]),
            "--pretrained", str(ckpt or toy["ckpt"]), "--save_path", str(save_path), "--num_workers", "0",
            "--batch-size", "16", *extra]


def run_predict(argv, capsys):
    """predict.main in-process; returns (exit status, stdout, stderr)."""
    status = predict.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def json_results(out):
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def stable_ranking(db_codes, query_codes, k):
    """Brute-force Hamming ranking with ties in database order (docs/protocol.md#metric)."""
    bits = db_codes.shape[1]
    dist = (bits - query_codes.astype(np.int64) @ db_codes.T.astype(np.int64)) // 2
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


def check_self_retrieval(results, db_paths, db_codes):
    """Every query is a database image: rank 1 has distance 0 and the query is among the distance-0 items; where
    its code is unique in the database, rank 1 is the query itself."""
    unique_hits = 0
    for entry in results:
        own = db_paths.index(str(Path(entry["query"]).resolve()))
        zero = [r["index"] for r in entry["results"] if r["distance"] == 0]
        assert entry["results"][0]["distance"] == 0, entry["query"]
        assert own in zero, entry["query"]
        if (db_codes == db_codes[own]).all(axis=1).sum() == 1:
            assert entry["results"][0]["index"] == own
            assert Path(entry["results"][0]["path"]).resolve() == Path(entry["query"]).resolve()
            unique_hits += 1
    return unique_hits


# ------------------------------------------------------------------------------------------------- self retrieval
def test_toy_database_images_come_back_first_at_distance_zero(toy, tmp_path, capsys):
    root = toy["root"]
    db = list_items(root / "database.txt")
    queries = [str(root / rel) for rel, *_ in db[:16]]
    argv = toy_args(toy, tmp_path, "--json", "--topk", "5")
    for q in queries:
        argv += ["--img", q]
    status, out, err = run_predict(argv, capsys)
    assert status == 0, err
    results = json_results(out)
    assert [e["query"] for e in results] == queries

    db_codes = np.load(tmp_path / "database_code_64.npy")
    assert db_codes.shape == (len(db), 64) and set(np.unique(db_codes)) == {-1.0, 1.0}
    db_paths = [str((root / rel).resolve()) for rel, *_ in db]
    assert check_self_retrieval(results, db_paths, db_codes) >= len(queries) - 2  # codes are near-unique here

    # the ranking is the stable Hamming ranking of the cached codes (each query's code is its database code)
    order, dist = stable_ranking(db_codes, db_codes[:len(queries)], 5)
    for i, entry in enumerate(results):
        assert [r["index"] for r in entry["results"]] == order[i].tolist()
        assert [r["distance"] for r in entry["results"]] == dist[i].tolist()
        assert [r["rank"] for r in entry["results"]] == [1, 2, 3, 4, 5]

    # labels: the query's own (it is listed), shared labels = intersection, names from classes.txt
    first = results[0]
    labels = [j for j, v in enumerate(db[0][1:]) if v == "1"]
    assert first["query_labels"] == labels
    assert first["query_label_names"] == [TOY_CLASSES[j] for j in labels]
    for r in first["results"]:
        own = [j for j, v in enumerate(db[r["index"]][1:]) if v == "1"]
        assert r["labels"] == own
        assert r["shared_labels"] == sorted(set(own) & set(labels))
        assert r["shared_label_names"] == [TOY_CLASSES[j] for j in r["shared_labels"]]


def test_coco_lite_database_images_come_back_first_at_distance_zero(tmp_path, capsys):
    coco = SHARED / "coco_lite"
    if not (coco / "lists" / "database.txt").is_file():
        pytest.skip(f"real COCO images not found: {coco} (lists/database.txt)")
    ckpt = checkpoint.save(random_hashnet(64).state_dict(), tmp_path / "random_64.pdparams")
    db = list_items(coco / "lists" / "database.txt")
    argv = ["--dataset", "coco", "--data-path", str(coco), "--list-dir", str(coco / "lists"), "--pretrained",
            str(ckpt), "--save_path", str(tmp_path / "out"), "--num_workers", "0", "--json", "--topk", "3"]
    for rel, *_ in db:
        argv += ["--img", str(coco / rel)]
    status, out, err = run_predict(argv, capsys)
    assert status == 0, err
    results = json_results(out)
    db_codes = np.load(tmp_path / "out" / "database_code_64.npy")
    db_paths = [str((coco / rel).resolve()) for rel, *_ in db]
    assert check_self_retrieval(results, db_paths, db_codes) == len(db)  # 13 distinct codes: each finds itself

    # the seed's example query: a train, label 73 only (docs/protocol.md#ms-coco-protocol); COCO's names in alphabetical
    # order
    seed_query = next(e for e in results if e["query"].endswith("COCO_val2014_000000403864.jpg"))
    assert seed_query["query_labels"] == [73] and seed_query["query_label_names"] == ["train"]
    assert seed_query["results"][0]["distance"] == 0
    assert seed_query["results"][0]["shared_labels"] == [73]


# ---------------------------------------------------------------------------------------------------------- cache
def test_cache_sidecar_reuse_and_recompute_for_other_weights(toy, tmp_path, capsys):
    root, save = toy["root"], tmp_path / "out"
    query = str(root / list_items(root / "database.txt")[3][0])
    status, _, err = run_predict(toy_args(toy, save, "--img", query), capsys)
    assert status == 0, err
    assert "encoding 34 images once" in err
    npy, sidecar = save / "database_code_64.npy", save / "database_code_64.json"
    meta = json.loads(sidecar.read_text())
    assert meta["checkpoint"]["sha256"] == sha256(toy["ckpt"])
    assert meta["checkpoint"]["size"] == Path(toy["ckpt"]).stat().st_size
    assert meta["checkpoint"]["mtime"] == Path(toy["ckpt"]).stat().st_mtime
    assert meta["checkpoint"]["path"] == str(Path(toy["ckpt"]).resolve())
    assert meta["database_list"] == {"path": str((root / "database.txt").resolve()),
                                     "sha256": sha256(root / "database.txt")}
    assert (meta["preprocess"]["resize_size"], meta["preprocess"]["crop_size"]) == (72, 64)
    assert meta["codes_sha256"] == sha256(npy) and meta["bit"] == 64 and meta["num_items"] == 34
    first_codes = np.load(npy)

    status, out, err = run_predict(toy_args(toy, save, "--img", query), capsys)
    assert status == 0 and "(34 x 64 bits, cached)" in err and "recomputing" not in err

    # other weights with the same bit width: recomputed, said in one line
    other = toy["model"].state_dict()
    other["hash_layer.bias"] = paddle.full([64], 0.5)
    other_ckpt = checkpoint.save(other, tmp_path / "other_64.pdparams")
    status, _, err = run_predict(toy_args(toy, save, "--img", query, ckpt=other_ckpt), capsys)
    assert status == 0
    lines = [line for line in err.splitlines() if "recomputing" in line]
    assert len(lines) == 1 and "was made by other weights" in lines[0]
    assert json.loads(sidecar.read_text())["checkpoint"]["sha256"] == sha256(other_ckpt)
    assert not np.array_equal(np.load(npy), first_codes)


def test_cache_follows_the_checkpoint_contents_when_retrained_in_place(toy, tmp_path, capsys):
    """Retraining overwrites model_best_64.pdparams at the same path (the common case): the cache is keyed by the
    file's contents, so it is recomputed, even with the modification time unchanged."""
    import os
    root, save = toy["root"], tmp_path / "out"
    ckpt = Path(shutil.copy(toy["ckpt"], tmp_path / "model_best_64.pdparams"))
    query = str(root / list_items(root / "database.txt")[3][0])
    status, _, err = run_predict(toy_args(toy, save, "--img", query, ckpt=ckpt), capsys)
    assert status == 0 and "encoding 34 images once" in err, err
    first_codes = np.load(save / "database_code_64.npy")

    stat = ckpt.stat()
    retrained = toy["model"].state_dict()
    retrained["hash_layer.bias"] = paddle.full([64], 0.5)
    checkpoint.save(retrained, ckpt)
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert ckpt.stat().st_mtime_ns == stat.st_mtime_ns

    status, _, err = run_predict(toy_args(toy, save, "--img", query, ckpt=ckpt), capsys)
    assert status == 0
    assert "was made by other weights" in err and "recomputing" in err and "cached" not in err
    codes = np.load(save / "database_code_64.npy")
    assert not np.array_equal(codes, first_codes)
    assert json.loads((save / "database_code_64.json").read_text())["checkpoint"]["sha256"] == sha256(ckpt)


@pytest.fixture
def cache_case(toy, tmp_path):
    """A database, its cache identity and a counting compute(): the cache logic without a network."""
    database = database_module.Database("toy", toy["root"], toy["root"])
    fingerprint = fileio.file_fingerprint(toy["ckpt"])
    rng = np.random.default_rng(0)
    calls = []

    def compute():
        calls.append(1)
        return np.where(rng.random((len(database), 64)) < 0.5, -1.0, 1.0).astype(np.float32)

    return {"database": database, "fingerprint": fingerprint, "compute": compute, "calls": calls,
            "save": tmp_path / "cache", "identity": retrieval.cache_identity(64, fingerprint, database, 72, 64)}


def test_cache_reused_only_for_the_same_list_preprocessing_and_file(cache_case, tmp_path, capsys):
    save, identity, compute, calls = (cache_case[k] for k in ("save", "identity", "compute", "calls"))
    database, fingerprint = cache_case["database"], cache_case["fingerprint"]
    codes = retrieval.database_codes(save, identity, compute)
    np.testing.assert_array_equal(retrieval.database_codes(save, identity, compute), codes)
    assert len(calls) == 1
    capsys.readouterr()

    # another list with the same number of items (one label flipped)
    lists = tmp_path / "lists"
    lists.mkdir()
    for name in ("train.txt", "test.txt"):
        shutil.copy(database.list_path.parent / name, lists / name)
    rows = database.list_path.read_text().splitlines()
    rows[0] = rows[0][:-1] + ("0" if rows[0].endswith("1") else "1")
    (lists / "database.txt").write_text("\n".join(rows) + "\n")
    other_db = database_module.Database("toy", database.root, lists)
    other_list = retrieval.cache_identity(64, fingerprint, other_db, 72, 64)
    retrieval.database_codes(save, other_list, compute)
    err = capsys.readouterr().err
    assert len(calls) == 2 and "was made for another database list" in err and "recomputing" in err

    # other preprocessing (one difference at a time: the cache now holds the other list's codes)
    other_crop = retrieval.cache_identity(64, fingerprint, other_db, 72, 56)
    retrieval.database_codes(save, other_crop, compute)
    assert len(calls) == 3 and "was made with preprocessing" in capsys.readouterr().err

    # the .npy changed behind its sidecar: not trusted
    npy, sidecar = retrieval.cache_paths(save, 64)
    np.save(npy, -np.load(npy))
    retrieval.database_codes(save, other_crop, compute)
    assert len(calls) == 4 and "changed after its sidecar was written" in capsys.readouterr().err

    # no sidecar (e.g. the seed's shipped database_code_64.npy): nothing says which weights made it
    sidecar.unlink()
    retrieval.database_codes(save, other_crop, compute)
    assert len(calls) == 5 and "has no sidecar database_code_64.json" in capsys.readouterr().err
    assert json.loads(sidecar.read_text())["codes_sha256"] == sha256(npy)


def test_failed_encoding_leaves_the_old_cache_valid(cache_case):
    save, identity = cache_case["save"], cache_case["identity"]
    codes = retrieval.database_codes(save, identity, cache_case["compute"])
    other = retrieval.cache_identity(64, cache_case["fingerprint"], cache_case["database"], 80, 64)

    def broken():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        retrieval.database_codes(save, other, broken)
    cached, reason = retrieval.load_cached_codes(save, identity)
    assert reason is None
    np.testing.assert_array_equal(cached, codes)


def test_both_caches_judge_their_sidecar_with_one_function(cache_case, tmp_path, monkeypatch):
    """fileio.sidecar_mismatch is the one staleness check: missing, unreadable, or every recorded key that differs
    (worded by the caller, a difference that does not matter left out); the database-code cache and the data caches
    (utils/datasets/cache.py) both answer through it."""
    from utils.datasets import cache as datacache
    sidecar = tmp_path / "x.json"
    wanted = {"format": 1, "bit": 64, "checkpoint": {"sha256": "ab", "path": "/new"}}
    assert fileio.sidecar_mismatch(sidecar, wanted) == (None, "missing")
    sidecar.write_text("{not json")
    recorded, reason = fileio.sidecar_mismatch(sidecar, wanted)
    assert recorded is None and reason.startswith(f"unreadable sidecar {sidecar} (")
    sidecar.write_text("[1, 2]")
    assert fileio.sidecar_mismatch(sidecar, wanted) == (None, f"unreadable sidecar {sidecar} (a JSON list, not an "
                                                               f"object)")
    fileio.save_json({"format": 2, "bit": 32, "checkpoint": {"sha256": "ab", "path": "/old"}}, sidecar)
    assert fileio.sidecar_mismatch(sidecar, wanted)[1] == "format differs, bit differs, checkpoint differs"
    recorded, reason = fileio.sidecar_mismatch(sidecar, wanted, retrieval.explain_mismatch)
    assert recorded["bit"] == 32  # the same weights under another path: no difference that matters
    assert reason == "has sidecar format 2, expected 1, holds 32-bit codes, not 64-bit"
    assert datacache.stale_reason(sidecar, {"format": 2, "bit": 32}) is None
    assert datacache.stale_reason(sidecar, {"format": 2, "bit": 16}) == "stale: bit differs"

    calls = []
    real = fileio.sidecar_mismatch

    def spy(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(retrieval, "sidecar_mismatch", spy)
    monkeypatch.setattr(datacache, "sidecar_mismatch", spy)
    save, identity = cache_case["save"], cache_case["identity"]
    retrieval.database_codes(save, identity, cache_case["compute"])
    assert retrieval.load_cached_codes(save, identity)[1] is None
    assert datacache.stale_reason(sidecar, {"bit": 64}) == "stale: bit differs"
    assert calls == [retrieval.cache_paths(save, 64)[1], sidecar]


# -------------------------------------------------------------------------------------------------------- outputs
def test_table_best_match_copy_and_contact_sheet(toy, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    root = toy["root"]
    rel = list_items(root / "database.txt")[5][0]
    status, out, err = run_predict(toy_args(toy, tmp_path, "--img", str(root / rel), "--topk", "7", "--show"), capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"query {root / rel}  (labels: ")
    assert lines[1].split() == ["rank", "dist", "shared", "labels", "path"]
    assert [int(line.split()[0]) for line in lines[2:9]] == list(range(1, 8))
    assert lines[2].split()[1] == "0" and lines[2].endswith(str(root / rel))
    copy = tmp_path / Path(rel).name
    assert copy.read_bytes() == (root / rel).read_bytes()
    sheet = tmp_path / f"{Path(rel).stem}_top7.png"
    assert f"best match copied to {copy}; contact sheet {sheet}" in out
    with Image.open(sheet) as image:  # a legend line, then query + 7 matches in rows of 6 cells
        assert image.format == "PNG"
        thumb, caption = contact_sheet.THUMB_SIZE, contact_sheet.CAPTION_HEIGHT
        assert image.size == (6 * thumb, contact_sheet.LEGEND_HEIGHT + 2 * (thumb + caption))
    if sys.platform.startswith("linux"):  # without a display --show is skipped, with a note
        assert f"--show: no display (DISPLAY unset); contact sheet saved at {sheet}" in err


def test_folder_query_sorted_and_unknown_labels(toy, tmp_path, capsys):
    folder = tmp_path / "queries"
    folder.mkdir()
    db = list_items(toy["root"] / "database.txt")
    for name, (rel, *_) in zip(("b.png", "a.png", "c.PNG"), db[:3]):
        shutil.copy(toy["root"] / rel, folder / name)
    (folder / "notes.txt").write_text("not an image")
    status, out, err = run_predict(toy_args(toy, tmp_path / "out", "--img", str(folder), str(folder / "a.png"),
                                            "--json", "--topk", "2"), capsys)
    assert status == 0, err
    results = json_results(out)
    assert [Path(e["query"]).name for e in results] == ["a.png", "b.png", "c.PNG", "a.png"]
    # copies outside the data root: labels unknown, each match shows its own labels; still found at distance 0
    for entry, expected in zip(results, (db[1], db[0], db[2], db[1])):
        assert entry["query_labels"] is None and entry["results"][0]["shared_labels"] is None
        assert entry["results"][0]["distance"] == 0
        assert entry["results"][0]["labels"] == [j for j, v in enumerate(expected[1:]) if v == "1"]


# --------------------------------------------------------------------------------------------------------- errors
@pytest.fixture(scope="session")
def ckpt_32(toy):
    # load_model_weights reads the bit width from hash_layer.weight before anything else
    path = toy["base"] / "model_best_32.pdparams"
    from utils.train import checkpoint  # with its checksum, as training writes it (no "no checksum" note)
    checkpoint.save({"hash_layer.weight": paddle.zeros([4096, 32])}, path)
    return path


def error_cases(toy, tmp_path, ckpt_32):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    good = str(toy["root"] / list_items(toy["root"] / "database.txt")[0][0])
    return {
        "missing image": (["--img", str(tmp_path / "nope.jpg")], r"--img .*nope\.jpg: query image not found"),
        "unreadable image": (["--img", str(bad)], r"query image .*broken\.jpg is unreadable"),
        "folder without images": (["--img", str(empty)], r"--img .*empty: the folder has no images"),
        "other bit width": (["--img", good, "--pretrained", str(ckpt_32)],
                            r"holds a 32-bit model .* but --bit is 64; pass --bit 32"),
        "missing checkpoint": (["--img", good, "--pretrained", str(tmp_path / "none.pdparams")],
                               r"--pretrained .*none\.pdparams: checkpoint not found"),
        "no query": ([], r"no query given: pass --img PATH"),
    }


@pytest.mark.parametrize("case", ["missing image", "unreadable image", "folder without images", "other bit width",
                                  "missing checkpoint", "no query"])
def test_user_errors_exit_nonzero_with_message(toy, tmp_path, ckpt_32, capsys, case):
    extra, pattern = error_cases(toy, tmp_path, ckpt_32)[case]
    argv = toy_args(toy, tmp_path / "out", *extra)
    if "--pretrained" in extra:  # the later flag wins in argparse, but keep one for clarity
        i = argv.index("--pretrained")
        del argv[i:i + 2]
    status, out, err = run_predict(argv, capsys)
    assert status == 2 and out == ""
    assert err.startswith("error: ")
    assert re.search(pattern, err), err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "database_code_64.npy").exists()  # queries fail before database encoding


def test_cli_error_has_no_traceback(toy, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "predict.py"), *toy_args(toy, tmp_path, "--img",
                                                                               str(tmp_path / "missing.png"))],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert "error: --img" in proc.stderr and "query image not found" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
