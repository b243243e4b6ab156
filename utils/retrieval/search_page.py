"""The web search page of serve.py (search_page.html) and the Flask app that serves it with the JSON API (api.py).

Flask (requirements-web.txt) is imported only by serve.py and these web modules; nothing else in the project needs it.

- The page is a form and a script: each search it makes is a call to the JSON API (GET or POST /api/v1/search), whose
  answer the script draws, so the page shows exactly what an application gets, errors included (the API's message).
- The page's address names its search (/?item=3&k=12, ?query=2, ?upload=<token>, ?code=<hex>): reload, back and
  forward, and a copied link give it again; /search?<the same> (the results' address before) redirects there.
- Limits (results, pixels, upload size): the API's (limits.py, --max-upload-mb).
- Any URL that is neither the page, its thumbnails nor the API gets a one-line 404.
"""
from pathlib import Path

from flask import Flask, Response, abort, redirect, render_template_string, request, url_for
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from utils.retrieval.api import API_PREFIX, create_api, error_response
from utils.retrieval.contact_sheet import COLOURS
from utils.retrieval.limits import MAX_PIXELS, cap_results
from utils.retrieval.search_service import MAX_K, PageError, thumbnail_png

QUERY_CHOICES = 500  # the query list's first entries offered in the drop-down; any other by its number


def _rgb(value):
    return "rgb({}, {}, {})".format(*value)


def create_app(service, default_k=12, max_upload_mb=16):
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 1024 * 1024)
    limit = min(MAX_K, len(service.database))
    default_k = cap_results(default_k, len(service.database))  # --num-results over the limit: said once, at start
    app.register_blueprint(create_api(service, default_k, max_upload_mb))

    def for_api():
        return request.path == API_PREFIX or request.path.startswith(API_PREFIX + "/")

    @app.get("/")
    def index():
        return render_template_string(
            PAGE, service=service, k=min(default_k, limit), limit=limit, api=API_PREFIX,
            choices=list(enumerate(service.query_paths[:QUERY_CHOICES])), num_queries=len(service.query_paths),
            max_upload_mb=max_upload_mb, max_pixels=f"{MAX_PIXELS:,}",
            colours={key: _rgb(v) for key, v in COLOURS.items()})

    @app.get("/search")
    def search():  # where results were before the page searched through the API: old links still work
        query = request.query_string.decode()
        return redirect(url_for("index") + (f"?{query}" if query else ""), 301)

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

    def short_text(message, status):
        return Response(f"{message}\n", status=status, mimetype="text/plain")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(err):
        message = f"the upload is larger than the limit of {max_upload_mb} MB (--max-upload-mb)"
        return error_response(message, 413) if for_api() else short_text(f"413 {message}", 413)

    @app.errorhandler(HTTPException)
    def http_error(err):
        if for_api():
            unrouted = err.code in (404, 405) and err.description == type(err).description  # no such route / method
            hint = f" (the API is described at {API_PREFIX}/openapi.json)" if unrouted else ""
            response = error_response(f"{err.name}: {err.description}{hint}", err.code)
            if getattr(err, "valid_methods", None):  # a 405 says which methods are allowed (RFC 9110)
                response.headers["Allow"] = ", ".join(err.valid_methods)
            return response
        # a short answer, not the whole page
        return short_text(f"{err.code} {err.name}: {err.description} (the search page is /, the API {API_PREFIX})",
                          err.code)

    @app.errorhandler(Exception)
    def unexpected(err):  # an encoder or file failure: say so and keep serving
        app.logger.exception("search failed")
        message = f"search failed: {type(err).__name__}: {err}"
        return error_response(message, 500) if for_api() else short_text(message, 500)

    return app


PAGE = (Path(__file__).parent / "search_page.html").read_text(encoding="utf-8")  # a Jinja template
