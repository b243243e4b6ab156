"""The web search page of serve.py (search_page.html): upload an image, pick a query or an item, see its top k; the
Flask app that serves it with the JSON API (api.py) and the errors of both.

Flask (requirements-web.txt) is imported only by serve.py and these web modules; nothing else in the project needs it.

- Search: SearchService (search_service.py) over the same codes and engine as predict.py, and build_results for
  labels and shared labels, so the page, the API and `predict.py --json` agree.
- Limits (results, pixels): utils/retrieval/limits.py, as in predict.py and infer.py. Uploads: at most
  --max-upload-mb (default 16 MB); a non-image, a truncated image, an oversized file or an empty request gets a
  message on the page (HTTP 400 / 413) and the server keeps serving.
- Any URL that is neither the page, its thumbnails nor the API gets a one-line 404.
"""
from pathlib import Path

from flask import Flask, Response, abort, render_template_string, request, url_for
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from utils.retrieval.api import API_PREFIX, code_to_hex, create_api, error_response
from utils.retrieval.contact_sheet import COLOURS
from utils.retrieval.limits import MAX_PIXELS, cap_results
from utils.retrieval.search_service import MAX_K, PageError, SearchService, thumbnail_png  # noqa: F401 (re-exported)

QUERY_CHOICES = 500  # the query list's first entries offered in the drop-down; any other by its number


def _rgb(value):
    return "rgb({}, {}, {})".format(*value)


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
    app.jinja_env.globals.update(fmt=format_labels, grouped=grouped, hexcode=code_to_hex)
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

    app.register_blueprint(create_api(service, default_k, max_upload_mb))

    def for_api():
        return request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/")

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
            elif request.values.get("item"):
                try:
                    item = int(request.values["item"])
                except ValueError:
                    raise PageError(f"an item is chosen by its id, got {request.values['item']!r}") from None
                entry = service.search_item(item, k)
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

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(err):
        message = f"the upload is larger than the limit of {max_upload_mb} MB (--max-upload-mb)"
        return error_response(message, 413) if for_api() else page(error=message, status=413)

    @app.errorhandler(HTTPException)
    def http_error(err):
        if for_api():
            unrouted = err.code in (404, 405) and err.description == type(err).description  # no such route / method
            hint = f" (the API is described at {API_PREFIX}/openapi.json)" if unrouted else ""
            response = error_response(f"{err.name}: {err.description}{hint}", err.code)
            if getattr(err, "valid_methods", None):  # a 405 says which methods are allowed (RFC 9110)
                response.headers["Allow"] = ", ".join(err.valid_methods)
            return response
        if request.path in ("/", "/search"):
            return page(error=f"{err.code} {err.name}: {err.description}", status=err.code)
        # any other path: a short answer, not the whole page
        return Response(f"{err.code} {err.name}: {err.description} (the search page is /, the API {API_PREFIX})\n",
                        status=err.code, mimetype="text/plain")

    @app.errorhandler(Exception)
    def unexpected(err):  # an encoder or file failure: say so and keep serving
        app.logger.exception("search failed")
        message = f"search failed: {type(err).__name__}: {err}"
        return error_response(message, 500) if for_api() else page(error=message, status=500)

    return app


def _more_link(entry, k, limit):
    if entry is None or k >= limit:
        return None
    more = min(limit, k * 2)
    if entry["source"] == "upload":
        return url_for("search", upload=entry["token"], k=more)
    if entry["source"] == "item":
        return url_for("search", item=entry["item"], k=more)
    return url_for("search", query=entry["query_index"], k=more)


def format_labels(indices, names):
    if not indices:
        return "-"
    return ", ".join(names[i] if names else str(i) for i in indices)


def grouped(code):
    return " ".join(code[i:i + 8] for i in range(0, len(code), 8))


PAGE = (Path(__file__).parent / "search_page.html").read_text(encoding="utf-8")  # a Jinja template
