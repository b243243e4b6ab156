r"""A local web page and JSON API to search with a trained HashNet: upload an image, pick a query or an item, see
the top k (docs/retrieval.md).

    python serve.py --pretrained output/<run>               # the dataset's database: http://127.0.0.1:8000/
    python serve.py --index output/my_index --port 0        # an index of your images (scripts/index_images.py)
    curl 'http://127.0.0.1:8000/api/v1/search?item=3&k=5'   # the API: /api/v1/openapi.json describes it

Needs Flask and waitress (`pip install -r requirements-web.txt`); waitress serves (Flask's development server only
with --dev-server). The model, the database and the image sizes come from the run folder's config.json exactly as
for predict.py (explicit flags override), and the database codes from predict.py's cache (<run
folder>/retrieval/database_code_{bit}.npy; computed once when missing); with --index, the index's items and codes and
its model. The server listens on 127.0.0.1 only, unless --host says otherwise: it has no authentication, so do not
expose it to a network you do not trust. Uploads are limited to --max-upload-mb and are kept in memory only. Ctrl+C
or SIGTERM stops it quietly.
"""
import utils.runtime.before_paddle  # noqa: F401  (first: silences Paddle's ccache warning)

import signal
import sys

from predict import resolve_args
from utils.config.flags import COLLECTION_FLAGS, DATA_FLAGS, MODEL_FLAGS, add_flag, add_flags, entry_parser
from utils.runtime.errors import MissingPackageError, SetupError, UsageError
from utils.runtime.failure import run_cli


def get_parser():
    parser = entry_parser(__doc__)
    g = add_flags(parser, DATA_FLAGS, "database", help={"--batch-size": "images per forward pass when encoding"})
    add_flags(g, ("--save-path",), help={"--save-path": "database-code cache (default: <run folder>/retrieval, "
                                                        "shared with predict.py)"})
    add_flags(parser, COLLECTION_FLAGS, "what is searched")
    add_flags(parser, MODEL_FLAGS, "model")
    g = parser.add_argument_group("server")
    add_flag(g, "--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    add_flag(g, "--port", type=int, default=8000, help="port; 0 picks a free one")
    add_flags(g, ("--num-results",), help={"--num-results": "results shown first (k is adjustable on the page)"})
    add_flag(g, "--max-upload-mb", type=float, default=16, help="largest accepted upload in MB")
    add_flag(g, "--threads", type=int, default=4, help="requests served at once (waitress)")
    add_flag(g, "--dev-server", action="store_true", help="Flask's development server instead of waitress")
    parser.set_defaults(num_results=12)  # two rows of the page's six-column grid
    return parser


def build_service(args):
    """Load the model and what is searched (the index of --index, else the database with predict.py's code cache);
    returns the page's and the API's SearchService."""
    from predict import build_encoders
    from utils.retrieval import search as retrieval
    from utils.retrieval.search_service import SearchService
    from utils.runtime.fileio import file_fingerprint
    transform, encode_batch, encode_database = build_encoders(args)
    fingerprint = file_fingerprint(args.pretrained)
    collection = retrieval.open_collection(args, args.bit, transform, encode_database, fingerprint,
                                           args.resize_size, args.crop_size)
    title = f"index {args.index}" if args.index else f"{args.dataset} ({args.pretrained})"
    model = {"checkpoint": fingerprint["path"], "checkpoint_sha256": fingerprint["sha256"], "bits": args.bit,
             "backbone": args.backbone}
    return SearchService(collection, encode_batch, transform, title=title, model=model)


def make_server(app, args):
    """waitress (the default) or Flask's development server, listening; a taken port is a SetupError."""
    try:
        if args.dev_server:
            from werkzeug.serving import make_server as werkzeug_server
            server = werkzeug_server(args.host, args.port, app, threaded=True)
            return server, server.server_port, server.serve_forever, server.server_close
        try:
            import waitress
        except ImportError:
            raise MissingPackageError("serve.py serves with waitress: pip install -r requirements-web.txt (or "
                                      "--dev-server for Flask's development server)") from None
        server = waitress.create_server(app, host=args.host, port=args.port, threads=args.threads,
                                        ident="hashnet-search", clear_untrusted_proxy_headers=True)
        return server, server.effective_port, server.run, server.close
    except OSError as err:
        raise SetupError(f"cannot listen on {args.host}:{args.port} ({err.strerror or err}); pick another --port "
                         f"(0 = any free one) or --host") from err


def stop_on_sigterm():
    """SIGTERM ends the server as Ctrl+C does (Paddle installs a handler that prints a C++ 'FatalError' block)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)


def run(argv=None):
    # the flags and the checkpoint first (--help and a mistyped flag need no Flask), Flask before the slow model load
    args = resolve_args(get_parser(), argv)
    if args.max_upload_mb <= 0:
        raise UsageError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    try:
        import flask  # noqa: F401
    except ImportError:
        raise MissingPackageError("serve.py needs Flask: pip install -r requirements-web.txt") from None

    from utils.retrieval.search_page import create_app
    from utils.runtime.console import log_to_stderr
    app = create_app(build_service(args), default_k=args.num_results, max_upload_mb=args.max_upload_mb)
    server, port, serve, close = make_server(app, args)
    stop_on_sigterm()  # after the model load: Paddle's import installs its own handler
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"HashNet search page: http://{host}:{port}/  API: http://{host}:{port}/api/v1  (Ctrl+C stops it)",
          flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log_to_stderr(f"warning: listening on {args.host}: anyone who can reach this address can search and view "
                      f"the images")
    try:
        serve()
    except KeyboardInterrupt:
        pass
    finally:
        close()
    print("HashNet search page: stopped", flush=True)


def main(argv=None):
    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
