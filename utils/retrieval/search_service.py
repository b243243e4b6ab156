"""The searching behind serve.py's page and JSON API: a collection (utils/retrieval/collection.py), the model's encoder
and the dataset's query list, with the uploads held in memory. Flask (requirements-web.txt) only for its request
helpers (abort, url_for); the page is utils/retrieval/search_page.py, the API utils/retrieval/api.py.

- Items are addressed by their id (the database line, or an index's id), never by a path from the request, and a
  dataset's file is checked to lie inside the data root before it is read (a list line like `../x.jpg` is refused).
- Uploads: decoded in full (MAX_PIXELS) before they are encoded; a non-image or truncated image is a PageError with
  its HTTP status. Uploads live in memory only (the last UPLOADS_KEPT, for "more results").
"""
import hashlib
import io
import os
import tempfile
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

from flask import abort, url_for
from PIL import Image

from utils.datasets.image_list import read_list_file
from utils.hashing.codes import binarize
from utils.retrieval.limits import MAX_PIXELS, MAX_RESULTS
from utils.retrieval.search import build_results, encode_images
from utils.runtime.errors import UserError

MAX_K = MAX_RESULTS  # the limits of predict.py and infer.py too (utils/retrieval/limits.py)
UPLOADS_KEPT = 32
THUMB_PIXELS = 192


def code_string(code):
    """A ±1 code as the page and the API write it before hex: '1' where an output is > 0, else '0'."""
    return "".join("1" if v > 0 else "0" for v in code)


class PageError(UserError):
    """A request the page answers with a message (and this HTTP status) instead of results: a user error like any
    other (utils/runtime/errors.py), which the page tells instead of one `error:` line."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


class SearchService:
    """What the page and the API search with: a collection (utils/retrieval/collection.py: the dataset's database or
    an index), an encoder and the dataset's query list when there is one. Thread-safe."""

    def __init__(self, collection, encode_batch, transform, title="", model=None):
        self.collection, self.title, self.model = collection, title, model
        self.database, self.bit = collection.database, collection.bits
        self.encode_batch, self.transform = encode_batch, transform
        self.root = os.path.abspath(self.database.root) if collection.root is not None else None
        test_list = self.database.lists.get("test")
        self.query_paths, self.query_labels = ([], None) if test_list is None else read_list_file(
            test_list, num_classes=self.database.num_classes)
        self.uploads = OrderedDict()
        self._lock = threading.Lock()  # one forward pass at a time; the model is not re-entrant
        self._by_name = {}
        for path in self.database.listed_paths():  # basename -> listed file, to recognise an uploaded copy of one
            self._by_name.setdefault(os.path.basename(path), []).append(path)

    # ------------------------------------------------------------------------------------------------- files
    def inside_root(self, relative):
        """The absolute path of a listed file, or a 403 when it would lie outside the data root."""
        path = os.path.normpath(os.path.join(self.root, relative))
        if os.path.commonpath([path, self.root]) != self.root:
            abort(403, f"refused: {relative} lies outside the data root")
        return path

    def position(self, item_id):
        position = self.collection.position_of(int(item_id))
        if position is None:
            abort(404, f"no item #{item_id} (the {self.collection.source} has {len(self.collection)} items)")
        return position

    def database_file(self, item_id):
        """The file of an item, by its id; a dataset's file is checked to lie inside the data root, an index's path
        is the one it recorded (never a path from the request)."""
        position = self.position(item_id)
        if self.root is None:
            return str(self.collection.path(position))
        return self.inside_root(self.database.paths[position])

    def query_file(self, index):
        if not 0 <= index < len(self.query_paths):
            raise PageError(f"no query #{index}: the query list has {len(self.query_paths)} images "
                            f"(0 to {len(self.query_paths) - 1})" if self.query_paths else
                            f"no query #{index}: an index has no query list; upload an image or search by item")
        return self.inside_root(self.query_paths[index])

    # ------------------------------------------------------------------------------------------------ search
    def encode_file(self, path):
        with self._lock:
            raw = encode_images(self.encode_batch, [Path(path)], self.transform, 1)
        return binarize(raw)[0]

    def search(self, code, k, query_name, query_row, radius=None):
        """The result entry (build_results' schema, "index" = item id) of a ±1 code: its k nearest items, or with
        `radius` every item within that Hamming radius up to MAX_K (then "truncated" says how many there were)."""
        if radius is None:
            positions, distances = self.collection.knn(code[None], k)
            total = None
        else:
            positions, distances = self.collection.within(code[None], radius)[0]
            total = len(positions)
            positions, distances = positions[None, :MAX_K], distances[None, :MAX_K]
        entry = build_results([query_name], positions, distances, self.database, self.bit, query_rows=[query_row],
                              item_ids=self.collection.item_ids)[0]
        entry["code"] = code_string(code)
        if radius is not None:
            entry.update(radius=int(radius), total=total, truncated=total > MAX_K)
        return entry

    def search_query(self, index, k, radius=None):
        path = self.query_file(index)
        try:
            code = self.encode_file(path)
        except UserError as err:  # a listed image over the pixel limit, or unreadable: the page says which
            raise PageError(str(err), 413 if "pixels" in str(err) else 422) from err
        entry = self.search(code, k, self.query_paths[index], self.query_labels[index], radius)
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

    def search_item(self, item_id, k, radius=None):
        """Search with the stored code of an item (its id)."""
        position = self.position(item_id)
        path = self.collection.path(position)
        entry = self.search(self.collection.code(position), k, str(path), self.database.labels_of(path), radius)
        entry.update(source="item", item=int(item_id), query_thumb=url_for("api.item_thumbnail", item_id=int(item_id)))
        return entry

    def search_upload(self, token, k, radius=None):
        with self._lock:
            record = self.uploads.get(token)
        if record is None:
            raise PageError(f"the uploaded image is no longer held by the server (it keeps the last {UPLOADS_KEPT}); "
                            f"upload it again", 404)
        entry = self.search(record["code"], k, record["name"], record["labels"], radius)
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
