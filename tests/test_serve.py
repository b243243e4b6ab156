"""serve.py's search page: a form whose searches go through the JSON API, drawn by its script, in a real (headless
Chromium) browser: upload, query pick, k, "More results", "similar images", back and reload, errors; an upload's
answer equals predict.py's; old result addresses redirect; no file outside the data root can be read.

Needs Flask (requirements-web.txt); the browser test also needs Debian's chromium + chromium-driver and selenium.
Each test skips, saying what is missing, without them. The API's own answers and refusals: tests/test_api.py.
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
from utils.retrieval.api import API_PREFIX  # noqa: E402
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
    """POST an image to the API's search, as the page's script does."""
    form = {"image": (io.BytesIO(data), name)}
    if k is not None:
        form["k"] = str(k)
    return client.post(f"{API_PREFIX}/search", data=form, content_type="multipart/form-data")


def labels_of(site, item):
    return {j for j, v in enumerate(site["db"][item][1:]) if v == "1"}


def cached_codes(site):
    """The site's database codes (±1, predict.py's cache), one row per database.txt line."""
    return np.load(site["base"] / "cache" / "database_code_32.npy")


def bits_of(code):
    return "".join("1" if v > 0 else "0" for v in code)


def hex_of(code):
    bits = bits_of(code)
    return "".join(f"{int(bits[i:i + 4], 2):x}" for i in range(0, len(bits), 4))


# ------------------------------------------------------------------------------------------------------ searching
def test_upload_of_a_database_image_comes_back_first_like_predict(site, capsys):
    client, db, root = site["client"], site["db"], site["root"]
    image = root / db[3][0]
    response = upload(client, image.read_bytes(), image.name, k=6)
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    got = [(r["rank"], r["distance"], r["id"]) for r in answer["results"]]
    assert [g[0] for g in got] == [1, 2, 3, 4, 5, 6] and got[0][1] == 0 and 3 in [g[2] for g in got if g[1] == 0]

    # the same ranking as predict.py --json on the same image and cache
    assert predict.main([*site["argv"], "--img", str(image), "--json", "--topk", "6"]) == 0
    import json
    entry = json.loads(capsys.readouterr().out.splitlines()[0])
    assert [(r["rank"], r["distance"], r["index"]) for r in entry["results"]] == got

    # an upload identical to a listed image (same name and bytes) has its labels: each result's shared ones
    labels = labels_of(site, 3)
    assert answer["query"]["labels"] == sorted(labels)
    assert answer["query"]["label_names"] == [TOY_CLASSES[j] for j in sorted(labels)]
    for r in answer["results"]:
        assert set(r["shared_labels"]) == labels & labels_of(site, r["id"])
    assert answer["query"]["code"] == hex_of(cached_codes(site)[3])

    # the same bytes under another name: labels unknown, nothing marked
    renamed = upload(client, image.read_bytes(), "renamed.png", k=3).get_json()
    assert renamed["query"]["labels"] is None and renamed["results"][0]["distance"] == 0
    assert all(r["shared_labels"] is None for r in renamed["results"])


def test_the_page_is_a_form_whose_script_searches_through_the_api(site):
    page = site["client"].get("/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "HashNet image search" in html
    assert f'data-api="{API_PREFIX}"' in html and f'data-limit="{len(site["db"])}"' in html and 'data-k="5"' in html
    assert "fetch(`${api}/search" in html and 'id="results"' not in html  # results come from the API, drawn later
    assert f'<option value="2">#2 {site["service"].query_paths[2]}</option>' in html


def test_old_result_addresses_redirect_to_the_page(site):
    """/search?... was the results' address when the server drew them: a saved link now opens the page on it."""
    client = site["client"]
    for query in ("query=2&k=4", "item=3", "upload=0123abc&k=2"):
        response = client.get(f"/search?{query}")
        assert response.status_code == 301 and response.headers["Location"] == f"/?{query}"
    assert client.get("/search").headers["Location"] == "/"


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


def test_the_pages_errors_are_user_errors():
    """The page's error (an answer with an HTTP status) is a UserError like every other, so a command that meets one
    outside a request reports it as one `error:` line with status 2 (utils/runtime/failure.py), not as a bug."""
    from utils.retrieval.search_service import PageError
    from utils.runtime.errors import UserError, is_user_error
    from utils.runtime.failure import run_cli
    error = PageError("no query #999: the query list has 40 images (0 to 39)")
    assert isinstance(error, UserError) and is_user_error(error) and error.status == 400

    def run(argv):
        raise error
    assert run_cli(run) == 2


def drawn(browser, timeout=120):
    """What the page shows once its search has answered: (cells as (rank, distance, id, marks), error or None)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, timeout).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#results, #error")
                                          and not b.find_elements(By.ID, "searching"))
    errors = browser.find_elements(By.ID, "error")
    found = [(int(c.get_attribute("data-rank")), int(c.get_attribute("data-distance")),
              int(c.get_attribute("data-index")), set(c.get_attribute("class").split()) & {"right", "wrong"})
             for c in browser.find_elements(By.CSS_SELECTOR, "#results .cell")]
    return found, errors[0].text if errors else None


def api_cells(client, query):
    """The API's answer to GET /api/v1/search?<query> as the page draws it: (rank, distance, id, marks)."""
    answer = client.get(f"{API_PREFIX}/search?{query}").get_json()
    return [(r["rank"], r["distance"], r["id"], set() if r["shared_labels"] is None
             else {"right" if r["shared_labels"] else "wrong"}) for r in answer["results"]]


def test_page_in_a_real_browser(site, browser, tmp_path):
    """Every search of the page is the API's answer drawn as it is: by upload, query pick and k, "More results",
    "similar images"; its address names the search, so back and reload show it again; errors are the API's."""
    from urllib.parse import parse_qs, urlsplit

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
    from werkzeug.serving import make_server

    client = site["client"]
    server = make_server("127.0.0.1", free_port(), site["app"], threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def address():
        return {key: values[0] for key, values in parse_qs(urlsplit(browser.current_url).query).items()}

    def search_button():
        browser.find_element(By.ID, "search").click()
        return drawn(browser)

    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        browser.get(url)
        assert "HashNet image search" in browser.title + browser.page_source
        assert not browser.find_elements(By.CSS_SELECTOR, "#results, #error")  # nothing searched yet

        # upload a listed image: it comes back first, marked as the API marks it, with its labels and code
        image = site["root"] / site["db"][5][0]
        browser.find_element(By.ID, "image").send_keys(str(image))
        cells, error = search_button()
        token = address()["upload"]
        assert error is None and address() == {"upload": token, "k": "5"}
        assert cells == api_cells(client, f"upload={token}&k=5") and len(cells) == 5
        assert cells[0][1] == 0 and 5 in [c[2] for c in cells if c[1] == 0] and all(c[3] for c in cells)
        info = browser.find_element(By.ID, "query-info").text
        assert ", ".join(TOY_CLASSES[j] for j in sorted(labels_of(site, 5))) in info
        code = bits_of(cached_codes(site)[5])
        assert browser.find_element(By.ID, "code").text == " ".join(code[i:i + 8] for i in range(0, 32, 8))
        loaded = browser.execute_script(  # the thumbnails really load (the browser decoded them)
            "return Array.from(document.querySelectorAll('#answer img')).every(i => i.complete && i.naturalWidth > 0)")
        assert loaded
        browser.save_screenshot(str(tmp_path / "search_page.png"))
        assert (tmp_path / "search_page.png").stat().st_size > 1000

        # "More results" doubles k on the same upload; back returns to the five
        browser.find_element(By.ID, "more").click()
        more, _ = drawn(browser)
        assert address() == {"upload": token, "k": "10"} and more[:5] == cells and len(more) == 10
        browser.back()  # the address changes and the page's popstate handler starts its search in one task
        WebDriverWait(browser, 60).until(lambda b: address().get("k") == "5")
        assert drawn(browser)[0] == cells

        # a query from the list with k = 4: the drop-down keeps the pick, and a reload shows the same
        Select(browser.find_element(By.ID, "query")).select_by_value("2")
        browser.find_element(By.ID, "k").clear()
        browser.find_element(By.ID, "k").send_keys("4")
        picked, _ = search_button()
        assert address() == {"query": "2", "k": "4"} and picked == api_cells(client, "query=2&k=4")
        browser.refresh()
        assert drawn(browser)[0] == picked
        assert Select(browser.find_element(By.ID, "query")).first_selected_option.get_attribute("value") == "2"
        assert browser.find_element(By.ID, "k").get_attribute("value") == "4"

        # "similar images" of the second result searches by that item
        second = picked[1][2]
        browser.find_elements(By.CSS_SELECTOR, "#results .similar")[1].click()
        similar, _ = drawn(browser)
        assert address() == {"item": str(second), "k": "4"} and similar == api_cells(client, f"item={second}&k=4")
        assert similar[0][1] == 0 and second in [c[2] for c in similar if c[1] == 0]

        # errors are the API's messages, drawn in place of results; the page goes on searching after them
        text = tmp_path / "notes.txt"
        text.write_text("not an image")
        browser.find_element(By.ID, "image").send_keys(str(text))
        cells, error = search_button()
        assert cells == [] and "'notes.txt' is not an image this page can read" in error
        browser.save_screenshot(str(tmp_path / "search_page_error.png"))
        browser.execute_script("document.getElementById('image').value = ''")  # the failed upload kept its file
        Select(browser.find_element(By.ID, "query")).select_by_value("")
        cells, error = search_button()
        assert cells == [] and "nothing to search: choose an image file to upload, or pick a query" in error
        browser.get(url + "?upload=0123abc")
        assert "no longer held by the server" in drawn(browser)[1]

        browser.get(url + "search?query_number=1&k=3")  # an old address: redirected, drawn
        assert drawn(browser)[0] == api_cells(client, "query=1&k=3")
        assert browser.find_element(By.ID, "query").get_attribute("value") == "1"
    finally:
        server.shutdown()
        thread.join(timeout=30)


def test_serve_cli_prints_its_local_address_and_serves(site):
    """`python serve.py ...` binds 127.0.0.1 by default, prints the address, and serves the page and API there."""
    import json
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
        with urllib.request.urlopen(url, timeout=120) as page:
            assert page.status == 200 and b"HashNet image search" in page.read()
        with urllib.request.urlopen(url + "api/v1/search?query=0&k=2", timeout=120) as answer:
            assert answer.status == 200 and json.loads(answer.read())["count"] == 2
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_a_listed_query_the_page_cannot_encode_is_a_message_not_a_500(site, monkeypatch):
    """A query of the list that is over the pixel limit (413) or unreadable (422) is named in the answer, as an upload
    would be; the server goes on answering."""
    from PIL import Image
    service, client = site["service"], site["client"]
    huge, broken = site["base"] / "huge_query.png", site["base"] / "broken_query.png"
    side = int(MAX_PIXELS ** 0.5) + 10
    Image.new("1", (side, side)).save(huge)
    broken.write_bytes(b"not an image")
    for path, status, words in ((huge, 413, f"the limit is {MAX_PIXELS:,} pixels"), (broken, 422, "unreadable")):
        monkeypatch.setattr(service, "query_file", lambda index, path=path: path)
        answer = client.get(f"{API_PREFIX}/search?query=0")
        message = answer.get_json()["error"]["message"]
        assert answer.status_code == status and words in message and path.name in message
    monkeypatch.undo()
    assert client.get(f"{API_PREFIX}/search?query=0").status_code == 200
