"""predict.py and infer.py batches and limits (issue 30): an unreadable query among several is reported and the
others answered (exit 2, a JSON error object in its place); the result count, the contact sheet and the image size
are limited the same way everywhere (utils/retrieval/limits.py) and said when applied."""
import json
import struct
import zlib

import pytest
from PIL import Image, ImageFile

import export_model
from deploy.inference_python import infer
from test_predict import json_results, list_items, run_predict, toy_args, toy_checkpoint
from utils.retrieval import contact_sheet, limits
from utils.runtime.errors import UsageError


def png_header(path, width, height):
    """A PNG whose header claims width x height: enough for PIL to open it, not to decode it."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    base = tmp_path_factory.mktemp("batches")
    root, _, ckpt = toy_checkpoint(base, 64, seed=3)
    return {"root": root, "ckpt": ckpt, "base": base,
            "images": [str(root / rel) for rel, *_ in list_items(root / "database.txt")[:3]]}


def test_one_broken_query_is_reported_and_the_others_answered(toy, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    first, second = toy["images"][:2]
    status, out, err = run_predict(toy_args(toy, tmp_path / "out", "--json", "--topk", "3",
                                            "--img", first, "--img", str(broken), "--img", second), capsys)
    assert status == 2
    rows = json_results(out)
    assert [row["query"] for row in rows] == [first, str(broken), second]  # one object per query, in order
    assert rows[1]["error"].startswith(f"query image {broken} is unreadable")
    assert "results" not in rows[1]
    assert [len(rows[0]["results"]), len(rows[2]["results"])] == [3, 3] and rows[0]["results"][0]["distance"] == 0
    assert f"error: query image {broken} is unreadable" in err
    assert err.rstrip().splitlines()[-1] == (f"error: 1 of 3 queries could not be read ({broken}); each is named "
                                             f"above, the others were answered")
    assert (tmp_path / "out" / f"{first.rsplit('/', 1)[1][:-4]}_top3.png").is_file()
    assert "Traceback" not in err


def test_a_folder_with_one_broken_file_answers_the_rest_in_the_table(toy, tmp_path, capsys):
    folder = tmp_path / "queries"
    folder.mkdir()
    for i, image in enumerate(toy["images"][:2]):
        (folder / f"q{i}.png").write_bytes(open(image, "rb").read())
    (folder / "q9.png").write_bytes(b"\x89PNG truncated")
    status, out, err = run_predict(toy_args(toy, tmp_path / "out", "--img", str(folder)), capsys)
    assert status == 2
    assert out.count("query ") == 2 and f"query {folder / 'q0.png'}" in out and f"query {folder / 'q1.png'}" in out
    assert f"error: query image {folder / 'q9.png'} is unreadable" in err


def test_a_result_count_over_the_database_size_is_cut_and_said(toy, tmp_path, capsys):
    status, out, err = run_predict(toy_args(toy, tmp_path, "--json", "--num-results", "100000",
                                            "--img", toy["images"][0]), capsys)
    assert status == 0, err
    assert len(json_results(out)[0]["results"]) == 34
    assert "--num-results 100,000: returning 34 results per query (the database has 34 images)" in err


def test_the_result_cap_and_the_sheet_limit_are_said(toy, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(limits, "MAX_RESULTS", 20)
    monkeypatch.setattr(limits, "SHEET_RESULTS", 3)
    status, out, err = run_predict(toy_args(toy, tmp_path, "--json", "--num-results", "30",
                                            "--img", toy["images"][0]), capsys)
    assert status == 0, err
    entry = json_results(out)[0]
    assert len(entry["results"]) == 20
    assert ("--num-results 30: returning 20 results per query (the limit of 20 per query, "
            "utils/retrieval/limits.py)") in err
    assert "contact sheets draw the first 3 of the 20 results" in err
    with Image.open(entry["contact_sheet"]) as sheet:  # the query and 3 results: one row of 4 cells
        assert sheet.height == contact_sheet.LEGEND_HEIGHT + contact_sheet.THUMB_SIZE + contact_sheet.CAPTION_HEIGHT


def test_an_over_limit_image_is_refused_from_its_header(toy, tmp_path, capsys, monkeypatch):
    big = png_header(tmp_path / "big.png", 12_000, 12_000)  # 144 MP: ~2 GB if decoded; the file holds no pixels
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self))
    status, out, err = run_predict(toy_args(toy, tmp_path / "out", "--json", "--img", str(big)), capsys)
    assert status == 2 and decoded == []
    assert json_results(out) == [{"query": str(big), "error": f"query image {big} is 12,000 x 12,000 = "
                                  f"144,000,000 pixels; the limit is 40,000,000 pixels (utils/retrieval/limits.py): "
                                  f"downscale it"}]


def test_pil_bomb_sizes_are_refused_with_the_limit(tmp_path):
    huge = png_header(tmp_path / "huge.png", 20_000, 20_000)  # over PIL's own error threshold
    with pytest.raises(UsageError, match=r"query image .*huge\.png is too large to decode safely .* the limit is "
                                         r"40,000,000 pixels"):
        limits.check_pixels(huge)
    limits.check_pixels(png_header(tmp_path / "ok.png", 6_000, 6_000))  # 36 MP: under the limit


def test_every_entry_point_shares_the_limits():
    search_page = pytest.importorskip("utils.retrieval.search_page", reason="the search page needs Flask "
                                      "(requirements-web.txt)")
    assert search_page.MAX_PIXELS == limits.MAX_PIXELS == 40_000_000
    assert search_page.MAX_K == limits.MAX_RESULTS == 1000


def test_infer_codes_of_a_batch_with_a_broken_image(toy, tmp_path, capsys):
    model_dir = tmp_path / "inference"
    assert export_model.main(["--dataset", "toy", "--bit", "64", "--pretrained", str(toy["ckpt"]),
                              "--save-inference-dir", str(model_dir)]) == 0
    capsys.readouterr()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"no jpeg")
    status = infer.main(["--model-dir", str(model_dir), "--codes-only", "--json", "--img", toy["images"][0],
                         "--img", str(broken), "--img", toy["images"][1]])
    captured = capsys.readouterr()
    assert status == 2
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [row["image"] for row in rows] == [toy["images"][0], str(broken), toy["images"][1]]
    assert len(rows[0]["code"]) == 64 and len(rows[2]["code"]) == 64
    assert rows[1]["error"].startswith(f"query image {broken} is unreadable")
    assert "error: 1 of 3 queries could not be read" in captured.err
