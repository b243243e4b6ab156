"""Data checker (data/check_data.py): missing and undecodable images are named and fail the check."""

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import load_data_script

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


check_data = load_data_script("check_data")


def _jpeg_bytes(seed):
    pixels = (np.random.default_rng(seed).random((32, 32, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _write_list(path, rel_paths, labels=("1 0", "0 1")):
    path.write_text("".join(f"{p} {labels[i % len(labels)]}\n" for i, p in enumerate(rel_paths)))
    return path


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    Image.new("RGB", (16, 16), (200, 30, 30)).save(root / "img" / "good.png")
    (root / "img" / "good2.jpg").write_bytes(_jpeg_bytes(1))
    full = _jpeg_bytes(0)
    (root / "img" / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "img" / "garbage.jpg").write_bytes(b"this is not an image at all" * 10)
    return root


BAD_LIST = ["img/good.png", "img/missing.png", "img/truncated.jpg", "img/garbage.jpg"]


def test_check_images_classifies_each_file(data_root):
    result = check_data.check_images(data_root, BAD_LIST, num_workers=2, show_progress=False)
    assert (result["n"], result["ok"], result["missing"]) == (4, 1, ["img/missing.png"])
    assert [p for p, _ in result["undecodable"]] == ["img/truncated.jpg", "img/garbage.jpg"]
    messages = dict(result["undecodable"])
    assert "truncated" in messages["img/truncated.jpg"]
    assert messages["img/garbage.jpg"].startswith("UnidentifiedImageError")


def test_bad_images_exit_1_and_are_named(data_root, tmp_path, capsys):
    bad = _write_list(tmp_path / "bad.txt", BAD_LIST)
    good = _write_list(tmp_path / "good.txt", ["img/good.png", "img/good2.jpg"])
    code = check_data.main(["--data-path", str(data_root), "--lists", str(good), str(bad)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{good}: 2 images, 2 ok, 0 missing, 0 undecodable" in out
    assert f"{bad}: 4 images, 1 ok, 1 missing, 2 undecodable" in out
    assert "  missing: img/missing.png" in out
    assert "  undecodable: img/truncated.jpg  (OSError: image file is truncated" in out
    assert "  undecodable: img/garbage.jpg  (UnidentifiedImageError" in out
    assert "FAILED: 1 missing and 2 undecodable images" in out


def test_all_good_exits_0(data_root, tmp_path, capsys):
    good = _write_list(tmp_path / "good.txt", ["img/good.png", "img/good2.jpg"])
    assert check_data.main(["--data-path", str(data_root), "--lists", str(good)]) == 0
    out = capsys.readouterr().out
    assert "2 images, 2 ok, 0 missing, 0 undecodable" in out
    assert "all images ok" in out


def test_long_lists_of_bad_files_are_cut_after_20(data_root, tmp_path, capsys):
    missing = [f"img/gone_{i:02d}.png" for i in range(25)]
    listed = _write_list(tmp_path / "many.txt", missing)
    assert check_data.main(["--data-path", str(data_root), "--lists", str(listed)]) == 1
    out = capsys.readouterr().out
    assert "  missing: img/gone_19.png" in out
    assert "img/gone_20.png" not in out
    assert "  ... and 5 more missing" in out


def test_format_error_stops_with_file_and_line(data_root, tmp_path, capsys):
    broken = tmp_path / "broken.txt"
    broken.write_text("img/good.png 1 0\nimg/good2.jpg 1 2\n")
    assert check_data.main(["--data-path", str(data_root), "--lists", str(broken)]) == 2
    assert f"{broken}:2" in capsys.readouterr().err


def test_lists_must_agree_on_label_count(data_root, tmp_path, capsys):
    two = _write_list(tmp_path / "two.txt", ["img/good.png"])
    three = _write_list(tmp_path / "three.txt", ["img/good.png"], labels=("1 0 0",))
    assert check_data.main(["--data-path", str(data_root), "--lists", str(two), str(three)]) == 2
    assert f"{three}:1: expected 2 labels after the path, got 3" in capsys.readouterr().err


def test_dataset_flag_reads_lists_from_data_name(tmp_path, monkeypatch, capsys):
    from utils.datasets.toy import ensure_toy_dataset

    ensure_toy_dataset(tmp_path / "data" / "toy", num_images=20, num_test=4, num_train=6)
    monkeypatch.setattr(check_data, "PROJECT_ROOT", tmp_path)
    assert check_data.main(["--dataset", "toy"]) == 0  # data root defaults to data/toy
    out = capsys.readouterr().out
    assert "20 distinct images, 10 labels per line" in out
    assert f"{tmp_path / 'data' / 'toy' / 'database.txt'}: 16 images, 16 ok" in out


def test_dataset_other_than_toy_needs_data_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(check_data, "PROJECT_ROOT", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        check_data.main(["--dataset", "coco"])
    assert exit_info.value.code == 2
    assert "--data-path is required" in capsys.readouterr().err


def test_runs_as_a_script(data_root, tmp_path):
    bad = _write_list(tmp_path / "bad.txt", BAD_LIST)
    run = subprocess.run([sys.executable, str(REPO_ROOT / "data" / "check_data.py"), "--data-path", str(data_root),
                          "--lists", str(bad)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "  missing: img/missing.png" in run.stdout


def test_coco_lite_images_all_decode(capsys):
    lite = SHARED / "coco_lite"
    if not (lite / "lists" / "database.txt").is_file():
        pytest.skip(f"coco_lite not found: {lite}")
    lists = [str(lite / "lists" / n) for n in ("train.txt", "test.txt", "database.txt")]
    assert check_data.main(["--data-path", str(lite), "--lists", *lists]) == 0
    out = capsys.readouterr().out
    assert "13 distinct images, 80 labels per line" in out
    assert f"{lite / 'lists' / 'database.txt'}: 13 images, 13 ok, 0 missing, 0 undecodable" in out
