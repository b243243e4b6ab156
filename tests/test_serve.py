"""serve.py's search page: results equal predict.py's, bad input gives a message and the server keeps serving, no
file outside the data root can be read, and the page works in a real (headless Chromium) browser.

Needs Flask (requirements-web.txt); the browser test also needs Debian's chromium + chromium-driver and selenium.
Each test skips, saying what is missing, without them.
"""
import io
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flask", reason="the search page needs Flask: pip install -r requirements-web.txt")

import predict  # noqa: E402
import serve  # noqa: E402
from conftest import free_port  # noqa: E402
from test_predict import list_items, toy_checkpoint  # noqa: E402
from utils.datasets.toy import TOY_CLASSES  # noqa: E402
from utils.retrieval.search_page import MAX_PIXELS, create_app  # noqa: E402

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SECRET = b"secret outside the data root"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A toy database whose list also names a file outside the data root, a checkpoint, the service and the app."""
    base = tmp_path_factory.mktemp("serve")
    root, model, ckpt = toy_checkpoint(base, 32, seed=2)
    lists = base / "lists"
    lists.mkdir()
    for name in ("train.txt", "test.txt", "classes.txt"):
        shutil.copy(root / name, lists / name)
    rows = (root / "database.txt").read_text().splitlines()
    # a list line pointing outside the data root: it is an image (so the database encodes), but never served
    outside = base / "outside.png"
    shutil.copy(root / rows[0].split()[0], outside)
    (base / "secret.txt").write_bytes(SECRET)
    rows.append("../outside.png " + rows[0].split(maxsplit=1)[1])
    (lists / "database.txt").write_text("\n".join(rows) + "\n")
    argv = ["--dataset", "toy", "--data-path", str(root), "--list-dir", str(lists), "--pretrained", str(ckpt),
            "--bit", "32", "--crop_size", "64", "--resize_size", "72", "--save_path", str(base / "cache"),
            "--num_workers", "0", "--device", "cpu"]
    args = predict.resolve_args(serve.get_parser(), argv)
    service = serve.build_service(args)
    app = create_app(service, default_k=5, max_upload_mb=1)
    db = list_items(lists / "database.txt")
    return {"root": root, "lists": lists, "ckpt": ckpt, "service": service, "app": app, "db": db, "base": base,
            "argv": argv, "client": app.test_client()}


def upload(client, data, name, k=None):
    form = {"image": (io.BytesIO(data), name)}
    if k is not None:
        form["k"] = str(k)
    return client.post("/search", data=form, content_type="multipart/form-data")


def cells(html):
    """(rank, distance, index, classes) of each result cell of a page."""
    import re
    found = re.findall(r'<div class="cell([^"]*)" data-rank="(\d+)" data-distance="(\d+)" data-index="(\d+)"', html)
    return [(int(rank), int(dist), int(index), classes.split()) for classes, rank, dist, index in found]


def error_of(html):
    import re
    match = re.search(r'<div class="error" id="error"><b>Cannot search:</b> (.*?)</div>', html, re.S)
    return match.group(1) if match else None


# ------------------------------------------------------------------------------------------------------ searching
def test_upload_of_a_database_image_comes_back_first_like_predict(site, tmp_path, capsys):
    client, db, root = site["client"], site["db"], site["root"]
    image = root / db[3][0]
    page = upload(client, image.read_bytes(), image.name, k=6)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and error_of(html) is None
    got = cells(html)
    assert [c[0] for c in got] == [1, 2, 3, 4, 5, 6] and got[0][1] == 0
    zero = [c[2] for c in got if c[1] == 0]
    assert 3 in zero

    # the same ranking as predict.py --json on the same image and cache
    assert predict.main([*site["argv"], "--img", str(image), "--json", "--topk", "6"]) == 0
    import json
    entry = json.loads(capsys.readouterr().out.splitlines()[0])
    assert [(r["rank"], r["distance"], r["index"]) for r in entry["results"]] == [c[:3] for c in got]
    assert "(" in html and entry["results"][0]["distance"] == 0

    # an upload identical to a listed image (same name and bytes) has its labels: marks and names are shown
    labels = [j for j, v in enumerate(db[3][1:]) if v == "1"]
    for _, _, index, classes in got:
        shares = bool(set(labels) & {j for j, v in enumerate(db[index][1:]) if v == "1"})
        assert ("right" if shares else "wrong") in classes
    assert ", ".join(TOY_CLASSES[j] for j in labels) in html
    code = "".join("1" if v > 0 else "0" for v in np.load(site["base"] / "cache" / "database_code_32.npy")[3])
    assert " ".join(code[i:i + 8] for i in range(0, 32, 8)) in html  # its code is the database image's

    # the same bytes under another name: labels unknown, no marks
    html = upload(client, image.read_bytes(), "renamed.png", k=3).get_data(as_text=True)
    assert "unknown (not an image of the dataset lists)" in html
    assert all(not {"right", "wrong"} & set(c[3]) for c in cells(html)) and cells(html)[0][1] == 0


def test_query_list_pick_k_and_more_results(site):
    client, service = site["client"], site["service"]
    page = client.get("/search?query=2&k=4")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and len(cells(html)) == 4
    assert f"#2 {service.query_paths[2]}" in html  # the drop-down keeps the pick
    more = client.get("/search?query=2&k=8").get_data(as_text=True)
    assert [c[:3] for c in cells(more)][:4] == [c[:3] for c in cells(html)]  # more results extend the same list
    assert 'href="/search?query=2&amp;k=8"' in html
    assert len(cells(client.get("/search?query_number=1").get_data(as_text=True))) == 5  # default k
    # "more" for an upload keeps the upload (by token, in memory)
    image = site["root"] / site["db"][0][0]
    first = upload(client, image.read_bytes(), image.name, k=2).get_data(as_text=True)
    import re
    link = re.search(r'id="more" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert "upload=" in link and len(cells(client.get(link).get_data(as_text=True))) == 4


# ------------------------------------------------------------------------------------------------------ bad input
def bad_inputs(site):
    root, db = site["root"], site["db"]
    good = (root / db[0][0]).read_bytes()
    from PIL import Image
    huge = io.BytesIO()
    side = int(MAX_PIXELS ** 0.5) + 10
    Image.new("1", (side, side)).save(huge, format="PNG")  # a few KB on disk, too many pixels to decode
    return {
        "text file": (lambda c: upload(c, b"just some text\n", "notes.txt"), 400,
                      "is not an image this page can read"),
        "truncated image": (lambda c: upload(c, good[:len(good) // 2], "cut.png"), 400,
                            "could not be decoded: image file is truncated"),
        "empty file": (lambda c: upload(c, b"", "empty.png"), 400, "is empty (0 bytes)"),
        "empty request": (lambda c: c.post("/search", data={}), 400,
                          "nothing to search: choose an image file to upload, or pick a query"),
        "oversized file": (lambda c: upload(c, b"\0" * (1024 * 1024 + 1), "big.png"), 413,
                           "larger than the limit of 1 MB (--max-upload-mb)"),
        "too many pixels": (lambda c: upload(c, huge.getvalue(), "huge.png"), 413,
                            f"the limit is {MAX_PIXELS:,} pixels"),
        "bad k": (lambda c: c.get("/search?query=1&k=zero"), 400, "k must be a whole number from 1 to"),
        "k too large": (lambda c: c.get("/search?query=1&k=100000"), 400, "k must be from 1 to"),
        "query out of range": (lambda c: c.get("/search?query=999"), 400, "no query #999: the query list has"),
        "expired upload": (lambda c: c.get("/search?upload=0123abc"), 404, "no longer held by the server"),
    }


@pytest.mark.parametrize("case", ["text file", "truncated image", "empty file", "empty request", "oversized file",
                                  "too many pixels", "bad k", "k too large", "query out of range",
                                  "expired upload"])
def test_bad_input_gets_a_message_and_the_server_keeps_serving(site, case):
    client = site["client"]
    send, status, message = bad_inputs(site)[case]
    page = send(client)
    html = page.get_data(as_text=True)
    assert page.status_code == status
    assert message in html.replace("&#39;", "'"), html[-1500:]
    assert cells(html) == []
    after = client.get("/search?query=0&k=3")
    assert after.status_code == 200 and len(cells(after.get_data(as_text=True))) == 3


def test_no_file_outside_the_data_root_is_served(site):
    client, db = site["client"], site["db"]
    outside = len(db) - 1  # the list line ../outside.png
    for url in (f"/api/v1/items/{outside}/image", f"/api/v1/items/{outside}/thumbnail"):
        page = client.get(url)
        assert page.status_code == 403 and b"outside the data root" in page.data
    for url in ("/api/v1/items/../../secret.txt", "/api/v1/items/..%2F..%2Fsecret.txt/image",
                "/api/v1/items/%2e%2e/secret.txt", "/api/v1/items/-1/image", f"/api/v1/items/{len(db)}/image",
                "/thumb/query/9999", "/static/../secret.txt", "/thumb/upload/../../secret.txt",
                "/image/" + str(site["base"] / "secret.txt")):
        page = client.get(url)
        assert page.status_code in (403, 404), url
        assert SECRET not in page.data, url
    assert client.get("/api/v1/items/0/image").data == (site["root"] / db[0][0]).read_bytes()  # inside: as is


def test_requirements_of_the_page_are_optional():
    """Training and prediction import no web library: utils/retrieval/search_page.py is the only Flask importer. (Nor,
    until
    a figure is drawn, matplotlib: utils/hashing/plots.new_figure imports it, so a process that draws none skips its
    cost.)"""
    import subprocess
    import sys
    code = ("import sys, predict, export_model, utils.train.engine, utils.retrieval.search; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'flask', 'werkzeug', 'matplotlib'}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], timeout=300,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "[]"


def test_the_pages_errors_are_user_errors():
    """The page's error (an answer with an HTTP status) is a UserError like every other, so a command that meets one
    outside a request reports it as one `error:` line with status 2 (utils/runtime/failure.py), not as a bug."""
    from utils.retrieval.search_page import PageError, parse_k
    from utils.runtime.errors import UserError, is_user_error
    from utils.runtime.failure import run_cli
    with pytest.raises(PageError) as raised:
        parse_k("0", 12, 50)
    assert isinstance(raised.value, UserError) and is_user_error(raised.value) and raised.value.status == 400
    assert str(raised.value) == "k must be from 1 to 50, got 0"

    def run(argv):
        raise raised.value
    assert run_cli(run) == 2


# -------------------------------------------------------------------------------------------------------- browser
@pytest.fixture
def browser(tmp_path, monkeypatch):
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (pip install "
                                                                   "selenium)")
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(f"the browser test needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                    f"apt-get install -y chromium chromium-driver")
    from selenium.webdriver.chrome.service import Service
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not try to fetch a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def test_page_in_a_real_browser(site, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", free_port(), site["app"], threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        browser.get(url)
        assert "HashNet image search" in browser.title + browser.page_source

        image = site["root"] / site["db"][5][0]
        browser.find_element(By.ID, "image").send_keys(str(image))
        browser.find_element(By.ID, "search").click()
        WebDriverWait(browser, 120).until(ec.presence_of_element_located((By.ID, "results")))
        first = browser.find_elements(By.CSS_SELECTOR, "#results .cell")
        assert len(first) == 5 and first[0].get_attribute("data-distance") == "0"
        zero = [c.get_attribute("data-index") for c in first if c.get_attribute("data-distance") == "0"]
        assert "5" in zero
        assert "distance 0" in first[0].text
        # thumbnails really load (the browser decoded them)
        loaded = browser.execute_script(
            "return Array.from(document.querySelectorAll('#results img')).every(i => i.complete && i.naturalWidth > 0)")
        assert loaded
        browser.save_screenshot(str(tmp_path / "search_page.png"))
        assert (tmp_path / "search_page.png").stat().st_size > 1000

        text = tmp_path / "notes.txt"
        text.write_text("not an image")
        browser.find_element(By.ID, "image").send_keys(str(text))
        browser.find_element(By.ID, "search").click()
        error = WebDriverWait(browser, 60).until(ec.presence_of_element_located((By.ID, "error")))
        assert "'notes.txt' is not an image this page can read" in error.text
        assert not browser.find_elements(By.CSS_SELECTOR, "#results .cell")
        browser.save_screenshot(str(tmp_path / "search_page_error.png"))

        browser.get(url + "search?query=1&k=3")  # still serving
        assert len(browser.find_elements(By.CSS_SELECTOR, "#results .cell")) == 3
    finally:
        server.shutdown()
        thread.join(timeout=30)


def test_serve_cli_prints_its_local_address_and_serves(site):
    """`python serve.py ...` binds 127.0.0.1 by default, prints the address, and serves the page there."""
    import subprocess
    import sys
    import urllib.request

    from conftest import REPO
    proc = subprocess.Popen([sys.executable, str(REPO / "serve.py"), *site["argv"], "--port", "0"], cwd=site["base"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the server is up (or the process ends)
        assert line.startswith("HashNet search page: http://127.0.0.1:"), (line, proc.stderr.read())
        url = line.split()[3]
        with urllib.request.urlopen(url + "search?query=0&k=2", timeout=120) as page:
            assert page.status == 200 and len(cells(page.read().decode())) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_a_listed_query_the_page_cannot_encode_is_a_message_not_a_500(site, monkeypatch):
    """A query of the list that is over the pixel limit (413) or unreadable (422) is named on the page, as an upload
    would be; the server goes on answering."""
    from PIL import Image
    service, client = site["service"], site["client"]
    huge, broken = site["base"] / "huge_query.png", site["base"] / "broken_query.png"
    side = int(MAX_PIXELS ** 0.5) + 10
    Image.new("1", (side, side)).save(huge)
    broken.write_bytes(b"not an image")
    for path, status, words in ((huge, 413, f"the limit is {MAX_PIXELS:,} pixels"), (broken, 422, "unreadable")):
        monkeypatch.setattr(service, "query_file", lambda index, path=path: path)
        page = client.get("/search?query=0")
        assert page.status_code == status
        assert words in error_of(page.get_data(as_text=True)) and path.name in error_of(page.get_data(as_text=True))
    monkeypatch.undo()
    assert client.get("/search?query=0").status_code == 200
