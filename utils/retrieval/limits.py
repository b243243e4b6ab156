"""The retrieval limits, the same in every entry point (predict.py, deploy/inference_python/infer.py, serve.py's
search page), and how each is applied: said in one line, never silently.

- MAX_RESULTS: results per query. A larger --num-results (or one above the database size) is cut, with one line
  on stderr saying to what and why; the page refuses a larger k with a message.
- SHEET_RESULTS: a contact sheet draws at most this many results (the first ones; the table and --json keep all),
  said in one line when it applies. 1,000 thumbnails made a 56 MB PNG.
- MAX_PIXELS: a query image or upload with more pixels is refused, naming it, its size and the limit. Only the
  header is read to know the size (PIL's Image.open reads no pixel data until load()), so a decompression bomb
  costs nothing: a 144-megapixel PNG would otherwise take ~2 GB to decode.
"""
import warnings

from utils.runtime.console import log_to_stderr
from utils.runtime.errors import UsageError

MAX_RESULTS = 1000
SHEET_RESULTS = 48  # eight rows of the sheet's six columns
MAX_PIXELS = 40_000_000  # PIL's own decompression-bomb guard starts at 89 M (a warning) and 179 M (an error)


def cap_results(requested, database_size, flag="--num-results"):
    """The number of results to return for `requested`: at most MAX_RESULTS and the database size; says so in one
    line when it cuts."""
    k = min(int(requested), MAX_RESULTS, int(database_size))
    if k < requested:
        why = (f"the limit of {MAX_RESULTS:,} per query, utils/retrieval/limits.py" if k == MAX_RESULTS
               and MAX_RESULTS < database_size else f"the database has {database_size:,} images")
        log_to_stderr(f"{flag} {requested:,}: returning {k:,} results per query ({why})")
    return k


def sheet_results(results_per_query):
    """How many results a contact sheet draws; says so in one line when fewer than the results."""
    if results_per_query > SHEET_RESULTS:
        log_to_stderr(f"contact sheets draw the first {SHEET_RESULTS} of the {results_per_query:,} results "
                      f"(utils/retrieval/limits.py SHEET_RESULTS); the table / --json list all")
    return min(results_per_query, SHEET_RESULTS)


def image_size(path, what="image"):
    """(width, height) from the image's header, without decoding its pixels; None when PIL cannot read the header
    (the decoder then reports the file as unreadable). Raises UsageError for a size PIL itself refuses."""
    from PIL import Image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked here, against ours
        try:
            with Image.open(path) as image:
                return image.size
        except Image.DecompressionBombError as err:
            raise UsageError(f"{what} {path} is too large to decode safely ({err}); the limit is {MAX_PIXELS:,} "
                             f"pixels: downscale it") from None
        except (OSError, ValueError, SyntaxError):
            return None


def check_pixels(path, what="query image"):
    """Refuse an image over MAX_PIXELS (UsageError naming it, its size and the limit) before it is decoded."""
    size = image_size(path, what)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise UsageError(f"{what} {path} is {size[0]:,} x {size[1]:,} = {size[0] * size[1]:,} pixels; the limit is "
                         f"{MAX_PIXELS:,} pixels (utils/retrieval/limits.py): downscale it")
