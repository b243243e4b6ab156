"""serve.py's JSON API, /api/v1 (docs/retrieval.md#the-json-api; the OpenAPI description is api_openapi.json, served
at /api/v1/openapi.json). The search page answers from the same SearchService (search_service.py), so the page, the
API and `predict.py --json` give the same results.

Every answer is JSON, errors included: {"error": {"status": <HTTP status>, "message": "<what is wrong and what to
do>"}} with 400 (a malformed request), 404 (no such item or route), 405 (wrong method), 413 (an upload over the
size or pixel limit) or 500 (the server's own failure). k, radius and uploads are bounded (limits.py).
"""
import json
import re
import time
from pathlib import Path

from flask import Blueprint, Response, jsonify, request, send_file, url_for

from utils.retrieval.limits import MAX_PIXELS, MAX_RESULTS
from utils.retrieval.search_service import PageError, code_string, thumbnail_png

API_PREFIX = "/api/v1"
OPENAPI = json.loads((Path(__file__).parent / "api_openapi.json").read_text(encoding="utf-8"))
SOURCES = ("item", "code", "query", "upload")  # besides an uploaded `image`; upload: an earlier one's token


class ApiError(Exception):
    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def error_response(message, status):
    response = jsonify({"error": {"status": status, "message": message}})
    response.status_code = status
    return response


def code_from_hex(text, bits):
    """±1 code from the API's hex form: bit i of the code (1 when the i-th output is > 0) is bit 3 - i % 4 of hex
    digit i // 4, the page's `hex` line; a width not a multiple of 4 pads the last digit with zero bits."""
    import numpy as np

    digits = -(-bits // 4)
    text = str(text).strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    if len(text) != digits or not re.fullmatch(r"[0-9a-f]+", text):
        raise ApiError(f"code must be {digits} hex digits for {bits}-bit codes (bit 0 = the first digit's highest "
                       f"bit), got {text!r}")
    bits_of = np.array([(int(ch, 16) >> (3 - j)) & 1 for ch in text for j in range(4)][:bits], dtype=np.float32)
    return bits_of * 2 - 1


def code_to_hex(code_string):
    padded = code_string + "0" * (-len(code_string) % 4)
    return "".join(f"{int(padded[i:i + 4], 2):x}" for i in range(0, len(padded), 4))


def whole_number(value, name, low, high):
    if isinstance(value, bool):  # JSON true / false are not numbers here
        raise ApiError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ApiError(f"{name} must be a whole number from {low} to {high}, got {value!r}") from None
    if isinstance(value, float) and value != number or not low <= number <= high:
        raise ApiError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return number


def search_answer(service, entry, started):
    """The API's search answer from a page entry: item ids, hex codes and item URLs."""
    results = [{"rank": r["rank"], "id": r["index"], "distance": r["distance"], "path": r["path"],
                "labels": r["labels"], "label_names": r["label_names"], "shared_labels": r["shared_labels"],
                "thumbnail": url_for("api.item_thumbnail", item_id=r["index"]),
                "image": url_for("api.item_image", item_id=r["index"]),
                "item": url_for("api.item", item_id=r["index"])} for r in entry["results"]]
    query = {"source": entry["source"], "name": entry["query"], "code": code_to_hex(entry["code"]),
             "labels": entry["query_labels"], "label_names": entry["query_label_names"],
             "thumbnail": entry.get("query_thumb")}
    for key in ("item", "query_index", "token"):
        if key in entry:
            query[key] = entry[key]
    answer = {"query": query, "bits": service.bit, "engine": service.collection.engine_name, "count": len(results),
              "results": results, "took_ms": round((time.perf_counter() - started) * 1000, 2)}
    if "radius" in entry:
        answer.update(radius=entry["radius"], total=entry["total"], truncated=entry["truncated"])
    else:
        answer["k"] = len(results)
    return answer


def create_api(service, default_k, max_upload_mb):
    """The /api/v1 blueprint over a search_page.SearchService."""
    api = Blueprint("api", __name__, url_prefix=API_PREFIX)
    limit = min(MAX_RESULTS, len(service.collection))

    def parameters():
        """The request's parameters: a JSON body, or form fields and the query string."""
        if request.method == "POST" and request.is_json:
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                raise ApiError("the JSON body must be an object, e.g. {\"item\": 3, \"k\": 10}")
            return body
        return {**request.args.to_dict(), **request.form.to_dict()}

    @api.errorhandler(ApiError)
    def api_error(err):
        return error_response(str(err), err.status)

    @api.errorhandler(PageError)
    def page_error(err):
        return error_response(str(err), err.status)

    @api.get("/health")
    def health():
        return jsonify({"status": "ok", "items": len(service.collection), "bits": service.bit})

    @api.get("/stats")
    def stats():
        return jsonify({
            "items": len(service.collection), "bits": service.bit, "source": service.collection.source,
            "engine": service.collection.engine_name, "engine_bytes": int(service.collection.engine.nbytes),
            "model": service.model, "queries": len(service.query_paths),
            "limits": {"max_k": limit, "max_radius": service.bit, "max_radius_results": MAX_RESULTS,
                       "max_upload_bytes": int(max_upload_mb * 1024 * 1024), "max_pixels": MAX_PIXELS}})

    @api.get("/openapi.json")
    def openapi():
        return jsonify(OPENAPI)

    @api.route("/search", methods=["GET", "POST"])
    def search():
        started = time.perf_counter()
        params = parameters()
        upload = request.files.get("image") if request.method == "POST" else None
        if upload is not None and not upload.filename:
            upload = None  # a form's file field left empty, as a browser sends it
        given = [name for name in SOURCES if params.get(name) not in (None, "")]
        if upload is not None:
            given.insert(0, "image")
        if len(given) != 1:
            raise ApiError("give exactly one of image (a multipart upload), item (an item id), code (hex), query "
                           "(a number in the query list) or upload (an earlier upload's token); got "
                           f"{', '.join(given) if given else 'none'}")
        if params.get("k") not in (None, "") and params.get("radius") not in (None, ""):
            raise ApiError("give k (the k nearest) or radius (every item within it), not both")
        radius = None
        given_k = params.get("k")
        k = whole_number(default_k if given_k in (None, "") else given_k, "k", 1, limit) if limit else 0
        if params.get("radius") not in (None, ""):
            radius = whole_number(params["radius"], "radius", 0, service.bit)
        source = given[0]
        if source == "image":
            token = service.add_upload(upload.filename or "upload", upload.read())
            entry = service.search_upload(token, k, radius)
        elif source == "item":
            entry = service.search_item(whole_number(params["item"], "item", 0, 2 ** 63 - 1), k, radius)
        elif source == "query":
            entry = service.search_query(whole_number(params["query"], "query", 0, 2 ** 31), k, radius)
        elif source == "upload":
            entry = service.search_upload(str(params["upload"]), k, radius)
        else:
            code = code_from_hex(params["code"], service.bit)
            entry = service.search(code, k, "code", None, radius)
            entry["source"] = "code"
        return jsonify(search_answer(service, entry, started))

    @api.get("/items/<int:item_id>")
    def item(item_id):
        position = service.position(item_id)
        path = service.collection.path(position)
        row = service.database.labels[position]
        labels = [int(i) for i in row.nonzero()[0]]
        names = service.database.class_names
        found = {"id": item_id, "path": str(path), "labels": labels,
                 "label_names": [names[i] for i in labels] if names else None,
                 "code": code_to_hex(code_string(service.collection.code(position))),
                 "thumbnail": url_for("api.item_thumbnail", item_id=item_id),
                 "image": url_for("api.item_image", item_id=item_id)}
        return jsonify(found)

    @api.get("/items/<int:item_id>/thumbnail")
    def item_thumbnail(item_id):
        return Response(thumbnail_png(service.database_file(item_id)), mimetype="image/png")

    @api.get("/items/<int:item_id>/image")
    def item_image(item_id):
        return send_file(service.database_file(item_id))

    return api
