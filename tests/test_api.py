"""serve.py's JSON API (/api/v1, utils/retrieval/api.py): what it answers and how it refuses.

Pinned here:
- health, stats (items, bits, engine, limits) and openapi.json: an OpenAPI 3 document whose paths and methods are
  exactly the API routes the app registers, whose answers carry the properties it describes;
- search by item = `predict.py --json` on the item's image (ids and distances), the item first at distance 0; search
  by the item's hex code (/items/<id>) = search by item; a radius search returns exactly the items within it, sorted by
  (distance, id), with `total` and `truncated`; an uploaded database image comes back first at distance 0;
  thumbnails are PNG;
- every malformed request is a JSON error {"error": {"status", "message"}} with its status (400, 404, 405, 413) and a
  message naming the parameter or limit, and the server keeps serving; an unknown non-API URL is a short text 404;
- over an index (scripts/index_images.py): item ids are the index's ids (not positions), paths the indexed files;
- the real server: `python serve.py --port 0` (waitress) on 127.0.0.1 answers over HTTP and stops on SIGTERM with
  exit 0, "stopped", and nothing alarming on stderr.

The toy database, checkpoint and app are tests/test_serve.py's `site` (one per module that uses it).
"""
import importlib.util
import io
import json
import re
import select
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flask", reason="the JSON API needs Flask: pip install -r requirements-web.txt")

import predict  # noqa: E402
import serve  # noqa: E402
import test_serve  # noqa: E402
from conftest import REPO  # noqa: E402
from test_predict import sha256  # noqa: E402
from utils.retrieval import search_service  # noqa: E402
from utils.retrieval.api import API_PREFIX  # noqa: E402
from utils.retrieval.limits import MAX_PIXELS, MAX_RESULTS  # noqa: E402
from utils.retrieval.search_page import create_app  # noqa: E402

site = test_serve.site  # reused, not copied: pytest finds a fixture by its name in this module
cached_codes, hex_of = test_serve.cached_codes, test_serve.hex_of
BITS = 32
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------------- helpers
def unique_item(site):
    """An item whose code no other item shares, so it alone is at distance 0 from itself (item 0 is not: the site's
    last list line is a copy of its image)."""
    codes = cached_codes(site)
    for item in range(1, len(codes)):
        if (codes == codes[item]).all(axis=1).sum() == 1:
            return item
    raise AssertionError("no item with a unique code in the toy database")


def ranking(answer):
    return [(r["id"], r["distance"]) for r in answer["results"]]


def error_message(response, status):
    """The message of a JSON error answer, after checking its status and shape."""
    body = response.get_data(as_text=True)
    assert response.status_code == status, body[:1000]
    assert response.mimetype == "application/json", body[:1000]
    error = json.loads(body)
    assert set(error) == {"error"} and set(error["error"]) == {"status", "message"}, error
    assert error["error"]["status"] == status
    return error["error"]["message"]


def api_upload(client, data, name, **fields):
    return client.post(f"{API_PREFIX}/search", data={"image": (io.BytesIO(data), name), **fields},
                       content_type="multipart/form-data")


# ----------------------------------------------------------------------------------------------- health and stats
def test_health_and_stats(site):
    client, n = site["client"], len(site["db"])
    health = client.get(f"{API_PREFIX}/health")
    assert health.status_code == 200 and health.get_json() == {"status": "ok", "items": n, "bits": BITS}

    stats = client.get(f"{API_PREFIX}/stats").get_json()
    assert (stats["items"], stats["bits"], stats["engine"]) == (n, BITS, "linear")  # auto: linear under 1M items
    assert stats["source"] == f"database list {site['lists'] / 'database.txt'}"
    assert stats["engine_bytes"] >= n * BITS // 8
    assert stats["limits"] == {"max_k": n, "max_radius": BITS, "max_radius_results": MAX_RESULTS,
                               "max_upload_bytes": 1024 * 1024, "max_pixels": MAX_PIXELS}  # the site's 1 MB
    assert stats["model"]["bits"] == BITS and stats["model"]["checkpoint_sha256"] == sha256(site["ckpt"])
    assert stats["queries"] == len((site["lists"] / "test.txt").read_text().splitlines())


# ------------------------------------------------------------------------------------------------------- openapi
def api_routes(app):
    """{OpenAPI path: lower-case methods} of the app's rules under the API prefix."""
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.rule == API_PREFIX or rule.rule.startswith(API_PREFIX + "/"):
            path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
            routes.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    return routes


def resolve(spec, ref):
    node = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def refs_in(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs_in(value)


def test_openapi_describes_exactly_the_registered_routes(site):
    client, app = site["client"], site["app"]
    response = client.get(f"{API_PREFIX}/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    spec = json.loads(response.get_data(as_text=True))
    assert re.fullmatch(r"3\.\d+\.\d+", spec["openapi"]) and spec["info"]["title"] and spec["info"]["version"]

    routes = api_routes(app)
    assert len(routes) >= 7  # health, stats, openapi.json, search, an item, its thumbnail and image
    assert sorted(spec["paths"]) == sorted(routes)
    for path, methods in routes.items():
        assert set(spec["paths"][path]) == methods, path
        for operation in spec["paths"][path].values():
            assert operation["responses"], path
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), path
    assert all(resolve(spec, ref) for ref in refs_in(spec))  # a dangling $ref raises KeyError
    try:
        from openapi_spec_validator import validate
    except ImportError:
        pass  # the checks above stand alone; the full validator is not a requirement
    else:
        validate(spec)

    # the answers carry what the document says they do
    schemas = spec["components"]["schemas"]
    item = unique_item(site)
    assert set(client.get(f"{API_PREFIX}/stats").get_json()) == set(schemas["Stats"]["properties"])
    assert set(client.get(f"{API_PREFIX}/items/{item}").get_json()) == set(schemas["Item"]["properties"])
    answer = client.get(f"{API_PREFIX}/search?item={item}&k=2").get_json()
    assert set(answer) <= set(schemas["SearchResult"]["properties"])
    assert set(answer["results"][0]) == set(schemas["Result"]["properties"])


# ------------------------------------------------------------------------------------------------------ searching
def test_search_by_item_is_first_and_equals_predict(site, capsys):
    client, item, k = site["client"], unique_item(site), 6
    response = client.get(f"{API_PREFIX}/search?item={item}&k={k}")
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["results"][0]["id"] == item and answer["results"][0]["distance"] == 0
    assert [r["rank"] for r in answer["results"]] == list(range(1, k + 1)) and answer["count"] == answer["k"] == k
    assert answer["query"]["source"] == "item" and answer["query"]["item"] == item
    assert (answer["bits"], answer["engine"]) == (BITS, "linear")

    image = site["root"] / site["db"][item][0]
    assert predict.main([*site["argv"], "--img", str(image), "--json", "--topk", str(k)]) == 0
    entry = json.loads(capsys.readouterr().out.splitlines()[0])
    assert ranking(answer) == [(r["index"], r["distance"]) for r in entry["results"]]
    assert [r["labels"] for r in answer["results"]] == [r["labels"] for r in entry["results"]]
    assert answer["query"]["labels"] == entry["query_labels"]


def test_search_by_code_equals_search_by_item(site):
    client, item = site["client"], unique_item(site)
    found = client.get(f"{API_PREFIX}/items/{item}").get_json()
    assert found["id"] == item and Path(found["path"]) == site["root"] / site["db"][item][0]
    code = found["code"]
    assert code == hex_of(cached_codes(site)[item]) and len(code) == BITS // 4

    by_item = client.get(f"{API_PREFIX}/search?item={item}&k=10").get_json()
    by_code = client.get(f"{API_PREFIX}/search?code={code}&k=10").get_json()
    assert ranking(by_code) == ranking(by_item) and by_code["results"][0]["id"] == item
    assert by_code["query"]["source"] == "code" and by_code["query"]["code"] == by_item["query"]["code"] == code
    # the same in a JSON body, with the 0x prefix and upper case the description allows
    posted = client.post(f"{API_PREFIX}/search", json={"code": "0x" + code.upper(), "k": 10}).get_json()
    assert ranking(posted) == ranking(by_item)


def test_radius_search_returns_exactly_the_items_within_it(site, monkeypatch):
    client, item, codes = site["client"], unique_item(site), cached_codes(site)
    distances = (BITS - codes @ codes[item]).astype(int) // 2
    radius = int(np.sort(distances)[len(distances) // 2])  # about half the items
    expected = sorted((int(d), j) for j, d in enumerate(distances) if d <= radius)
    assert 1 < len(expected) < len(codes)

    answer = client.get(f"{API_PREFIX}/search?item={item}&radius={radius}").get_json()
    assert [(r["distance"], r["id"]) for r in answer["results"]] == expected
    assert all(r["distance"] <= radius for r in answer["results"])
    assert (answer["radius"], answer["total"], answer["truncated"], answer["count"]) == (
        radius, len(expected), False, len(expected))
    assert "k" not in answer

    only = client.get(f"{API_PREFIX}/search?item={item}&radius=0").get_json()
    assert ranking(only) == [(item, 0)] and only["total"] == 1

    # over the cap on results (MAX_RESULTS, too many items to make here): the first ones, and how many there were
    monkeypatch.setattr(search_service, "MAX_K", 3)
    capped = client.post(f"{API_PREFIX}/search", json={"item": item, "radius": radius}).get_json()
    assert [(r["distance"], r["id"]) for r in capped["results"]] == expected[:3]
    assert (capped["total"], capped["truncated"], capped["count"]) == (len(expected), True, 3)


def test_upload_of_a_database_image_comes_back_first(site):
    client, item = site["client"], unique_item(site)
    image = site["root"] / site["db"][item][0]
    response = api_upload(client, image.read_bytes(), image.name, k="4")
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["results"][0]["id"] == item and answer["results"][0]["distance"] == 0 and answer["count"] == 4
    assert answer["query"]["source"] == "upload" and answer["query"]["name"] == image.name
    assert answer["query"]["code"] == hex_of(cached_codes(site)[item])
    assert ranking(answer) == ranking(client.get(f"{API_PREFIX}/search?item={item}&k=4").get_json())
    # the upload is held: its token searches it again (the page's "More results" and address), its thumbnail shows
    token = answer["query"]["token"]
    again = client.post(f"{API_PREFIX}/search", json={"upload": token, "k": 6}).get_json()
    assert again["query"]["source"] == "upload" and ranking(again)[:4] == ranking(answer) and again["count"] == 6
    assert client.get(answer["query"]["thumbnail"]).data.startswith(PNG_SIGNATURE)


def test_item_thumbnails_are_png_and_images_the_files(site):
    from PIL import Image
    client, item = site["client"], unique_item(site)
    answer = client.get(f"{API_PREFIX}/search?item={item}&k=3").get_json()
    for url in [r["thumbnail"] for r in answer["results"]] + [f"{API_PREFIX}/items/{item}/thumbnail"]:
        thumb = client.get(url)
        assert thumb.status_code == 200 and thumb.mimetype == "image/png" and thumb.data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(thumb.data)) as decoded:
            assert decoded.format == "PNG" and max(decoded.size) > 64  # enlarged from the 64 px toy image
    found = client.get(answer["results"][0]["item"]).get_json()
    assert client.get(found["image"]).data == (site["root"] / site["db"][item][0]).read_bytes()


# ------------------------------------------------------------------------------------------------------ bad input
def too_many_pixels():
    """A PNG of a few KB with more than MAX_PIXELS pixels."""
    from PIL import Image
    side = int(MAX_PIXELS ** 0.5) + 10
    out = io.BytesIO()
    Image.new("1", (side, side)).save(out, format="PNG")
    return out.getvalue()


def bad_requests(n, image):
    """name: (send(client), status, words the message must contain), for a database of n items and an image file's
    bytes."""
    search = f"{API_PREFIX}/search"
    return {
        "k over the limit": (lambda c: c.get(f"{search}?item=1&k={n + 1}"), 400,
                             [f"k must be a whole number from 1 to {n}", f"'{n + 1}'"]),
        "k zero": (lambda c: c.get(f"{search}?item=1&k=0"), 400, [f"k must be a whole number from 1 to {n}"]),
        "k zero in JSON": (lambda c: c.post(search, json={"item": 1, "k": 0}), 400, ["k must be a whole number"]),
        "k not a number": (lambda c: c.get(f"{search}?item=1&k=x"), 400, ["k must be a whole number", "'x'"]),
        "k not whole": (lambda c: c.post(search, json={"item": 1, "k": 2.5}), 400, ["k must be a whole number"]),
        "k infinite": (lambda c: c.post(search, data='{"item": 1, "k": 1e999}', content_type="application/json"),
                       400, ["k must be a whole number"]),
        "negative radius": (lambda c: c.get(f"{search}?item=1&radius=-1"), 400,
                            [f"radius must be a whole number from 0 to {BITS}", "'-1'"]),
        "radius over the bits": (lambda c: c.get(f"{search}?item=1&radius={BITS + 1}"), 400,
                                 [f"radius must be a whole number from 0 to {BITS}"]),
        "k and radius": (lambda c: c.get(f"{search}?item=1&k=3&radius=2"), 400, ["give k", "or radius", "not both"]),
        "no source": (lambda c: c.get(search), 400, ["give exactly one of image", "item", "code", "query",
                                                      "upload (an earlier upload's token)", "got none"]),
        "upload no longer held": (lambda c: c.get(f"{search}?upload=0123abc"), 404,
                                  ["no longer held by the server", "upload it again"]),
        "two sources": (lambda c: c.get(f"{search}?item=1&code=00000000"), 400, ["exactly one of", "got item, code"]),
        "upload and item": (lambda c: api_upload(c, image, "a.png", item="1"), 400, ["got image, item"]),
        "code too short": (lambda c: c.get(f"{search}?code=abc"), 400,
                           [f"code must be {BITS // 4} hex digits for {BITS}-bit codes", "'abc'"]),
        "code not hex": (lambda c: c.get(f"{search}?code=zzzzzzzz"), 400, [f"code must be {BITS // 4} hex digits",
                                                                          "'zzzzzzzz'"]),
        "item not a number": (lambda c: c.get(f"{search}?item=three"), 400, ["item must be a whole number",
                                                                             "'three'"]),
        "query out of range": (lambda c: c.get(f"{search}?query=999"), 400, ["no query #999", "the query list has"]),
        "unknown item searched": (lambda c: c.get(f"{search}?item=9999"), 404, ["no item #9999", f"{n} items"]),
        "unknown item": (lambda c: c.get(f"{API_PREFIX}/items/9999"), 404, ["no item #9999"]),
        "unknown item's thumbnail": (lambda c: c.get(f"{API_PREFIX}/items/9999/thumbnail"), 404, ["no item #9999"]),
        "unknown item's image": (lambda c: c.get(f"{API_PREFIX}/items/9999/image"), 404, ["no item #9999"]),
        "unknown route": (lambda c: c.get(f"{API_PREFIX}/nothing/here"), 404, ["Not Found", "openapi.json"]),
        "the bare prefix": (lambda c: c.get(API_PREFIX), 404, ["openapi.json"]),
        "wrong method": (lambda c: c.delete(search), 405, ["Method Not Allowed", "openapi.json"]),
        "POST to health": (lambda c: c.post(f"{API_PREFIX}/health"), 405, ["Method Not Allowed"]),
        "upload not an image": (lambda c: api_upload(c, b"just some text\n", "notes.txt"), 400,
                                ["'notes.txt' is not an image"]),
        "upload over the pixel limit": (lambda c: api_upload(c, too_many_pixels(), "huge.png"), 413,
                                        ["'huge.png'", f"the limit is {MAX_PIXELS:,} pixels"]),
        "upload empty": (lambda c: api_upload(c, b"", "empty.png"), 400, ["'empty.png' is empty"]),
        "upload truncated": (lambda c: api_upload(c, image[:len(image) // 2], "cut.png"), 400,
                             ["'cut.png' could not be decoded", "truncated"]),
        "upload over the limit": (lambda c: api_upload(c, b"\0" * (1024 * 1024 + 1), "big.png"), 413,
                                  ["larger than the limit of 1 MB", "--max-upload-mb"]),
        "JSON body a list": (lambda c: c.post(search, json=[1]), 400, ["the JSON body must be an object"]),
        "JSON body malformed": (lambda c: c.post(search, data="{item: 1", content_type="application/json"), 400,
                                ["the JSON body must be an object"]),
    }


@pytest.mark.parametrize("case", list(bad_requests(0, b"")))
def test_a_bad_request_is_a_json_error_naming_what_is_wrong(site, case):
    client = site["client"]
    image = (site["root"] / site["db"][1][0]).read_bytes()
    send, status, words = bad_requests(len(site["db"]), image)[case]
    message = error_message(send(client), status)
    for word in words:
        assert word in message, message
    assert client.get(f"{API_PREFIX}/health").status_code == 200


def test_a_wrong_method_says_which_methods_are_allowed(site):
    client = site["client"]
    for method, url, allowed in (("DELETE", f"{API_PREFIX}/search", {"GET", "POST"}),
                                 ("PUT", f"{API_PREFIX}/items/1", {"GET"}), ("POST", f"{API_PREFIX}/health", {"GET"})):
        response = client.open(url, method=method)
        assert "Method Not Allowed" in error_message(response, 405)
        # RFC 9110 15.5.6: a 405 answer must carry Allow
        assert allowed <= {m.strip() for m in response.headers.get("Allow", "").split(",")}, (url, response.headers)


def test_an_unknown_page_url_is_a_short_text_404(site):
    client = site["client"]
    page = client.get("/")
    assert page.status_code == 200 and len(page.data) > 2000  # what the 404s below must not be
    for url in ("/no/such/page", "/api", "/api/v2/health", "/thumb/query/9999"):
        response = client.get(url)
        assert response.status_code == 404 and response.mimetype == "text/plain", url
        assert len(response.data) < 400 and b"<" not in response.data, (url, response.data)
        assert response.get_data(as_text=True).startswith("404 Not Found"), url


# ----------------------------------------------------------------------------------------------------- an index
def load_script(name):
    """scripts/<name>.py as a module: scripts/ is not a package."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def indexed(site, tmp_path_factory):
    """An index of 30 toy images minus two removed ones (so ids and positions differ), served by its own app."""
    base = tmp_path_factory.mktemp("api_index")
    photos, index = base / "photos", base / "index"
    photos.mkdir()
    for i, (relative, *_) in enumerate(site["db"][:30]):
        shutil.copy(site["root"] / relative, photos / f"{i:02d}_{Path(relative).name}")
    files = sorted(photos.iterdir())
    tool = load_script("index_images")
    assert tool.main(["build", "--index", str(index), "--pretrained", str(site["ckpt"]), "--bit", str(BITS),
                      "--crop-size", "64", "--resize-size", "72", "--num-workers", "0", "--device", "cpu",
                      str(photos)]) == 0
    assert tool.main(["remove", "--index", str(index), str(files[0]), str(files[7])]) == 0
    args = predict.resolve_args(serve.get_parser(), ["--index", str(index), "--device", "cpu", "--num-workers", "0"])
    app = create_app(serve.build_service(args), default_k=5)
    from utils.retrieval.index_store import IndexStore
    ids, paths, _, _ = IndexStore(index).items()
    return {"client": app.test_client(), "ids": [int(i) for i in ids], "paths": paths, "files": files,
            "index": index}


def test_an_index_is_served_with_its_ids_and_files(indexed):
    client, ids, paths, files = indexed["client"], indexed["ids"], indexed["paths"], indexed["files"]
    assert len(ids) == 28 and sorted(paths) == sorted(str(f.resolve()) for f in files[1:7] + files[8:])
    assert ids != list(range(len(ids)))  # two removed: an id is not a position
    stats = client.get(f"{API_PREFIX}/stats").get_json()
    assert (stats["items"], stats["bits"], stats["queries"]) == (28, BITS, 0)
    assert stats["source"] == f"index {indexed['index']}"

    codes = {}
    for item, path in zip(ids, paths):
        found = client.get(f"{API_PREFIX}/items/{item}").get_json()
        assert (found["id"], found["path"], found["labels"]) == (item, path, [])
        codes[item] = found["code"]
    for gone in set(range(max(ids) + 1)) - set(ids):
        assert "no item" in error_message(client.get(f"{API_PREFIX}/items/{gone}"), 404)

    def distance(a, b):
        return bin(int(codes[a], 16) ^ int(codes[b], 16)).count("1")
    for item in (ids[0], ids[13], ids[-1]):
        answer = client.get(f"{API_PREFIX}/search?item={item}&k=28").get_json()
        assert sorted(r["id"] for r in answer["results"]) == sorted(ids)
        assert ranking(answer) == sorted(((j, distance(item, j)) for j in ids), key=lambda r: (r[1], ids.index(r[0])))
        assert answer["results"][0]["distance"] == 0 and item in [j for j, d in ranking(answer) if d == 0]
        assert client.get(f"{API_PREFIX}/items/{item}/image").data == Path(paths[ids.index(item)]).read_bytes()
    assert "an index has no query list" in error_message(client.get(f"{API_PREFIX}/search?query=0"), 400)


# ------------------------------------------------------------------------------------------------ the real server
def multipart(fields, files):
    """(body, content type) of a multipart/form-data request, as a browser builds it."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, (filename, data) in files.items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def http(opener, url, data=None, content_type=None):
    """(status, content type, parsed JSON body) of a request; an HTTP error status is an answer too."""
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type} if content_type else {})
    try:
        with opener.open(request, timeout=60) as response:
            return response.status, response.headers.get_content_type(), json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers.get_content_type(), json.loads(err.read())


def first_line(proc, timeout):
    """The first line the process prints, waiting at most `timeout` seconds for it."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def test_the_real_server_answers_and_stops_quietly_on_sigterm(site, tmp_path):
    pytest.importorskip("waitress", reason="serve.py serves with waitress: pip install -r requirements-web.txt")
    client, item = site["client"], unique_item(site)
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "w") as stderr:
        # stderr to a file: a pipe nobody reads could fill and stall the server
        proc = subprocess.Popen([sys.executable, str(REPO / "serve.py"), *site["argv"], "--port", "0", "--threads",
                                 "2", "--max-upload-mb", "1"], cwd=site["base"], stdout=subprocess.PIPE,
                                stderr=stderr, text=True)
    try:
        line = first_line(proc, 120)
        match = re.fullmatch(r"HashNet search page: (http://127\.0\.0\.1:(\d+)/)  API: (\S+)  \(Ctrl\+C stops it\)\n",
                             line)
        assert match, (line, stderr_path.read_text()[-3000:])
        url, api = match.group(1), match.group(3)
        assert int(match.group(2)) > 0 and api == url + API_PREFIX.lstrip("/")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a configured proxy

        assert http(opener, f"{api}/health") == (200, "application/json",
                                                 {"status": "ok", "items": len(site["db"]), "bits": BITS})
        status, kind, answer = http(opener, f"{api}/search?item={item}&k=5")
        assert (status, kind) == (200, "application/json")
        assert ranking(answer) == ranking(client.get(f"{API_PREFIX}/search?item={item}&k=5").get_json())

        image = site["root"] / site["db"][item][0]
        body, content_type = multipart({"k": "3"}, {"image": (image.name, image.read_bytes())})
        status, _, answer = http(opener, f"{api}/search", body, content_type)
        assert status == 200 and answer["count"] == 3 and answer["results"][0]["id"] == item
        assert answer["results"][0]["distance"] == 0 and answer["query"]["source"] == "upload"

        status, kind, error = http(opener, f"{api}/items/9999")
        assert (status, kind) == (404, "application/json") and error["error"]["status"] == 404
        assert "no item #9999" in error["error"]["message"]
        status, kind, error = http(opener, f"{api}/search?item={item}&k=x")
        assert (status, kind) == (400, "application/json") and error["error"]["status"] == 400
        assert "k must be a whole number" in error["error"]["message"]

        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        errors = stderr_path.read_text()
        assert proc.returncode == 0, errors[-3000:]
        assert out.strip().splitlines()[-1] == "HashNet search page: stopped", out
        for alarming in ("FatalError", "Traceback", "\x1b["):
            assert alarming not in errors, errors[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
        proc.stdout.close()
