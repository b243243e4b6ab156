r"""A local web page to search the database with a trained HashNet: upload an image or pick a query, see the top k.

    python serve.py --pretrained output/<run>               # http://127.0.0.1:8000/
    python serve.py --pretrained output/<run> --port 0      # any free port (printed)

Needs Flask (`pip install -r requirements-web.txt`). The model, the database and the image sizes come from the run
folder's config.json exactly as for predict.py (explicit flags override), and the database codes from predict.py's
cache (<run folder>/retrieval/database_code_{bit}.npy; computed once when missing). The server listens on
127.0.0.1 only, unless --host says otherwise: it has no authentication, so do not expose it to a network you do
not trust. Uploads are limited to --max-upload-mb and are kept in memory only.
"""
import utils.runtime.before_paddle  # noqa: F401  (first: silences Paddle's ccache warning)

import sys

from predict import resolve_args
from utils.config.flags import DATA_FLAGS, MODEL_FLAGS, add_flag, add_flags, entry_parser
from utils.runtime.errors import MissingPackageError, SetupError, UsageError
from utils.runtime.failure import run_cli


def get_parser():
    parser = entry_parser(__doc__)
    g = add_flags(parser, DATA_FLAGS, "database", help={"--batch-size": "images per forward pass when encoding"})
    add_flags(g, ("--save-path",), help={"--save-path": "database-code cache (default: <run folder>/retrieval, "
                                                        "shared with predict.py)"})
    add_flags(parser, MODEL_FLAGS, "model")
    g = parser.add_argument_group("server")
    add_flag(g, "--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    add_flag(g, "--port", type=int, default=8000, help="port; 0 picks a free one")
    add_flags(g, ("--num-results",), help={"--num-results": "results shown first (k is adjustable on the page)"})
    add_flag(g, "--max-upload-mb", type=float, default=16, help="largest accepted upload in MB")
    parser.set_defaults(num_results=12)  # two rows of the page's six-column grid
    return parser


def build_service(args):
    """Load the model, the database and its codes (predict.py's cache); returns the page's SearchService."""
    from predict import build_encoders
    from utils.retrieval import search as retrieval
    from utils.retrieval.search_page import SearchService
    from utils.runtime.fileio import file_fingerprint
    transform, encode_batch, encode_database = build_encoders(args)
    database, codes = retrieval.load_database(args, args.bit, transform, encode_database,
                                              file_fingerprint(args.pretrained), args.resize_size, args.crop_size)
    title = f"{args.dataset} ({args.pretrained})"
    return SearchService(database, codes, encode_batch, transform, args.bit, title=title)


def run(argv=None):
    # the flags and the checkpoint first (--help and a mistyped flag need no Flask), Flask before the slow model load
    args = resolve_args(get_parser(), argv)
    if args.max_upload_mb <= 0:
        raise UsageError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    try:
        import flask  # noqa: F401
    except ImportError:
        raise MissingPackageError("serve.py needs Flask: pip install -r requirements-web.txt") from None
    from werkzeug.serving import make_server

    from utils.retrieval.search_page import create_app
    from utils.runtime.console import log_to_stderr
    app = create_app(build_service(args), default_k=args.num_results, max_upload_mb=args.max_upload_mb)
    try:
        server = make_server(args.host, args.port, app, threaded=True)
    except OSError as err:
        raise SetupError(f"cannot listen on {args.host}:{args.port} ({err.strerror or err}); pick another --port "
                           f"(0 = any free one) or --host") from err
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"HashNet search page: http://{host}:{server.server_port}/  (Ctrl+C stops it)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log_to_stderr(f"warning: listening on {args.host}: anyone who can reach this address can search and view "
                      f"the images")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv=None):
    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
