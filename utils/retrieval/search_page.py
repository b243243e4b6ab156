"""The local web search page of serve.py: upload an image or pick a query, see its top-k database images.

Flask (requirements-web.txt) is imported only here and in serve.py; nothing else in the project needs it.

- Search: the same database codes (predict.py's cache) and the same bit-packed Hamming search as predict.py, and
  build_results for labels and shared labels, so the page and `predict.py --json` agree.
- Images are addressed by their index in the database or query list, never by a path from the request, and every
  file is checked to lie inside the data root before it is read (a list line like `../x.jpg` is refused).
- Limits (results, pixels): utils/retrieval/limits.py, as in predict.py and infer.py.
- Uploads: at most --max-upload-mb (default 16 MB) and MAX_PIXELS pixels; the image is decoded in full before it is
  encoded, so a non-image, a truncated image, an oversized file or an empty request gets a message on the page (HTTP
  400 / 413) and the server keeps serving. Uploads live in memory only (the last UPLOADS_KEPT, for "more results").
"""
import hashlib
import io
import os
import tempfile
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

from flask import Flask, Response, abort, render_template_string, request, url_for
from PIL import Image
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from utils.datasets.image_list import read_list_file
from utils.hashing.codes import binarize, pack_codes, topk_search
from utils.retrieval.contact_sheet import COLOURS
from utils.retrieval.limits import MAX_PIXELS, MAX_RESULTS, cap_results
from utils.retrieval.search import build_results, encode_images
from utils.runtime.errors import UserError

MAX_K = MAX_RESULTS  # the limits of predict.py and infer.py too (utils/retrieval/limits.py)
UPLOADS_KEPT = 32
THUMB_PIXELS = 192
QUERY_CHOICES = 500  # the query list's first entries offered in the drop-down; any other by its number


class PageError(UserError):
    """A request the page answers with a message (and this HTTP status) instead of results: a user error like any
    other (utils/runtime/errors.py), which the page tells instead of one `error:` line."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def _rgb(value):
    return "rgb({}, {}, {})".format(*value)


class SearchService:
    """The database codes, an encoder and the query list: what the page searches with. Thread-safe."""

    def __init__(self, database, db_codes, encode_batch, transform, bit, title=""):
        self.database, self.bit, self.title = database, int(bit), title
        self.encode_batch, self.transform = encode_batch, transform
        self.packed = pack_codes(db_codes)
        self.root = os.path.abspath(database.root)
        self.query_paths, self.query_labels = read_list_file(database.lists["test"], num_classes=database.num_classes)
        self.uploads = OrderedDict()
        self._lock = threading.Lock()  # one forward pass at a time; the model is not re-entrant
        self._by_name = {}
        for path in database.listed_paths():  # basename -> listed file, to recognise an uploaded copy of one
            self._by_name.setdefault(os.path.basename(path), []).append(path)

    # ------------------------------------------------------------------------------------------------- files
    def inside_root(self, relative):
        """The absolute path of a listed file, or a 403 when it would lie outside the data root."""
        path = os.path.normpath(os.path.join(self.root, relative))
        if os.path.commonpath([path, self.root]) != self.root:
            abort(403, f"refused: {relative} lies outside the data root")
        return path

    def database_file(self, index):
        if not 0 <= index < len(self.database):
            abort(404, f"no database image #{index} (the database has {len(self.database)})")
        return self.inside_root(self.database.paths[index])

    def query_file(self, index):
        if not 0 <= index < len(self.query_paths):
            raise PageError(f"no query #{index}: the query list has {len(self.query_paths)} images "
                            f"(0 to {len(self.query_paths) - 1})")
        return self.inside_root(self.query_paths[index])

    # ------------------------------------------------------------------------------------------------ search
    def encode_file(self, path):
        with self._lock:
            raw = encode_images(self.encode_batch, [Path(path)], self.transform, 1)
        return binarize(raw)[0]

    def search(self, code, k, query_name, query_row):
        indices, distances = topk_search(pack_codes(code[None]), self.packed, k)
        entry = build_results([query_name], indices, distances, self.database, self.bit, query_rows=[query_row])[0]
        entry["code"] = "".join("1" if v > 0 else "0" for v in code)
        return entry

    def search_query(self, index, k):
        path = self.query_file(index)
        try:
            code = self.encode_file(path)
        except UserError as err:  # a listed image over the pixel limit, or unreadable: the page says which
            raise PageError(str(err), 413 if "pixels" in str(err) else 422) from err
        entry = self.search(code, k, self.query_paths[index], self.query_labels[index])
        entry.update(source="query", query_index=index, query_thumb=url_for("query_thumb", index=index))
        return entry

    def add_upload(self, name, data):
        """Decode an uploaded file in full (or raise PageError), encode it; returns its token."""
        if not data:
            raise PageError(f"the uploaded file {name!r} is empty (0 bytes)")
        image = decode_upload(name, data)
        suffix = Path(name).suffix.lower() if Path(name).suffix.lower() in (".png", ".jpg", ".jpeg") else ".png"
        with tempfile.TemporaryDirectory(prefix="hashnet_upload_") as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            code = self.encode_file(path)
        thumb = io.BytesIO()
        image.thumbnail((THUMB_PIXELS * 2, THUMB_PIXELS * 2))
        image.save(thumb, format="PNG")
        token = hashlib.sha256(data).hexdigest()[:20]
        record = {"name": os.path.basename(name) or "upload", "code": code, "labels": self._listed_labels(name, data),
                  "thumb": thumb.getvalue()}
        with self._lock:
            self.uploads[token] = record
            self.uploads.move_to_end(token)
            while len(self.uploads) > UPLOADS_KEPT:
                self.uploads.popitem(last=False)
        return token

    def _listed_labels(self, name, data):
        """Labels of an upload that is byte for byte a listed image with the same file name, else None."""
        candidates = self._by_name.get(os.path.basename(name or ""), [])
        if len(candidates) != 1 or not os.path.isfile(candidates[0]):
            return None
        with open(candidates[0], "rb") as f:
            same = hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
        return self.database.labels_of(candidates[0]) if same else None

    def search_upload(self, token, k):
        with self._lock:
            record = self.uploads.get(token)
        if record is None:
            raise PageError(f"the uploaded image is no longer held by the server (it keeps the last {UPLOADS_KEPT}); "
                            f"upload it again", 404)
        entry = self.search(record["code"], k, record["name"], record["labels"])
        entry.update(source="upload", token=token, query_thumb=url_for("upload_thumb", token=token))
        return entry


def decode_upload(name, data):
    """The uploaded bytes as an RGB image, fully decoded; PageError with the reason when they are not one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                size = image.size
                if size[0] * size[1] > MAX_PIXELS:
                    raise PageError(f"{name!r} is {size[0]} x {size[1]} pixels; the limit is {MAX_PIXELS:,} pixels",
                                    413)
                image.load()  # a truncated file fails here, not half-way through the encoder
                return image.convert("RGB")
    except PageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise PageError(f"{name!r} is too large to decode safely ({err})", 413) from err
    except Image.UnidentifiedImageError as err:
        raise PageError(f"{name!r} is not an image this page can read (PNG, JPEG, GIF, BMP, WebP, TIFF, ...)") from err
    except (OSError, ValueError, SyntaxError) as err:  # PIL's broken-file errors
        raise PageError(f"{name!r} could not be decoded: {err} (a truncated or damaged image?)") from err


def thumbnail_png(path):
    """A small PNG of an image (every format PIL reads shows in the browser); a grey tile when it cannot be read."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMB_PIXELS, THUMB_PIXELS))
            if max(image.size) < THUMB_PIXELS:  # the 64 px toy images: enlarge so the grid is readable
                scale = THUMB_PIXELS / max(image.size)
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.NEAREST)
    except (OSError, ValueError, Image.DecompressionBombError):
        image = Image.new("RGB", (THUMB_PIXELS, THUMB_PIXELS), (200, 200, 200))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def parse_k(value, default, limit):
    if value in (None, ""):
        return min(default, limit)
    try:
        k = int(value)
    except ValueError:
        raise PageError(f"k must be a whole number from 1 to {limit}, got {value!r}") from None
    if not 1 <= k <= limit:
        raise PageError(f"k must be from 1 to {limit}, got {k}")
    return k


def create_app(service, default_k=12, max_upload_mb=16):
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 1024 * 1024)
    app.jinja_env.globals.update(fmt=format_labels, grouped=grouped, hexcode=hex_code)
    limit = min(MAX_K, len(service.database))
    default_k = cap_results(default_k, len(service.database))  # --num-results over the limit: said once, at start

    def page(entry=None, error=None, status=200, k=None):
        k = k or min(default_k, limit)
        choices = [(i, p) for i, p in enumerate(service.query_paths[:QUERY_CHOICES])]
        body = render_template_string(PAGE, service=service, entry=entry, error=error, k=k, limit=limit,
                                      choices=choices, num_queries=len(service.query_paths),
                                      max_upload_mb=max_upload_mb, max_pixels=f"{MAX_PIXELS:,}",
                                      colours={key: _rgb(v) for key, v in COLOURS.items()},
                                      names=service.database.class_names, more=_more_link(entry, k, limit))
        return body, status

    @app.get("/")
    def index():
        return page()

    @app.route("/search", methods=["GET", "POST"])
    def search():
        k = None
        try:
            k = parse_k(request.values.get("k"), default_k, limit)
            upload = request.files.get("image") if request.method == "POST" else None
            if upload is not None and upload.filename:
                token = service.add_upload(upload.filename, upload.read())
                entry = service.search_upload(token, k)
            elif request.values.get("upload"):
                entry = service.search_upload(request.values["upload"], k)
            elif request.values.get("query") or request.values.get("query_number"):
                chosen = request.values.get("query") or request.values.get("query_number")
                try:
                    index = int(chosen)
                except ValueError:
                    raise PageError(f"a query is chosen by its number in the query list, got {chosen!r}") from None
                entry = service.search_query(index, k)
            else:
                raise PageError("nothing to search: choose an image file to upload, or pick a query from the list")
        except PageError as err:
            return page(error=str(err), status=err.status, k=k)
        return page(entry=entry, k=k)

    @app.get("/thumb/db/<int:index>")
    def db_thumb(index):
        return Response(thumbnail_png(service.database_file(index)), mimetype="image/png")

    @app.get("/thumb/query/<int:index>")
    def query_thumb(index):
        try:
            path = service.query_file(index)
        except PageError as err:
            abort(404, str(err))
        return Response(thumbnail_png(path), mimetype="image/png")

    @app.get("/thumb/upload/<token>")
    def upload_thumb(token):
        record = service.uploads.get(token)
        if record is None:
            abort(404, "upload no longer held")
        return Response(record["thumb"], mimetype="image/png")

    @app.get("/image/db/<int:index>")
    def db_image(index):
        from flask import send_file
        return send_file(service.database_file(index))

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(err):
        return page(error=f"the upload is larger than the limit of {max_upload_mb} MB (--max-upload-mb)",
                    status=413)

    @app.errorhandler(HTTPException)
    def http_error(err):
        if request.path.startswith(("/thumb/", "/image/")):
            return Response(f"{err.code} {err.name}: {err.description}", status=err.code, mimetype="text/plain")
        return page(error=f"{err.code} {err.name}: {err.description}", status=err.code)

    @app.errorhandler(Exception)
    def unexpected(err):  # an encoder or file failure: say so on the page and keep serving
        app.logger.exception("search failed")
        return page(error=f"search failed: {type(err).__name__}: {err}", status=500)

    return app


def _more_link(entry, k, limit):
    if entry is None or k >= limit:
        return None
    more = min(limit, k * 2)
    if entry["source"] == "upload":
        return url_for("search", upload=entry["token"], k=more)
    return url_for("search", query=entry["query_index"], k=more)


def format_labels(indices, names):
    if not indices:
        return "-"
    return ", ".join(names[i] if names else str(i) for i in indices)


def grouped(code):
    return " ".join(code[i:i + 8] for i in range(0, len(code), 8))


def hex_code(code):
    return "".join(f"{int(code[i:i + 4], 2):x}" for i in range(0, len(code), 4))


PAGE = (Path(__file__).parent / "search_page.html").read_text(encoding="utf-8")  # a Jinja template
