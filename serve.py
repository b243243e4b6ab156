r"""A local web page to search the database with a trained HashNet: upload an image or pick a query, see the top k.

    python serve.py --pretrained output/<run>               # http://127.0.0.1:8000/
    python serve.py --pretrained output/<run> --port 0      # any free port (printed)

Needs Flask (`pip install -r requirements-web.txt`). The model, the database and the image sizes come from the run
folder's config.json exactly as for predict.py (explicit flags override), and the database codes from predict.py's
cache (<run folder>/retrieval/database_code_{bit}.npy; computed once when missing). The server listens on
127.0.0.1 only, unless --host says otherwise: it has no authentication, so do not expose it to a network you do
not trust. Uploads are limited to --max-upload-mb and are kept in memory only.
"""
import utils.before_paddle  # noqa: F401  (first: silences Paddle's ccache warning)
import argparse
import sys

from predict import add_model_flags, resolve_args


def get_parser():
    from utils.config import _add
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = parser.add_argument_group("database")
    _add(g, "--dataset", default="coco", help="database lists in data/<dataset>/ (default: the run's)")
    _add(g, "--data-path", default=None, help="data root the list paths are relative to (default: the run's)")
    _add(g, "--list-dir", default=None, help="folder of train/test/database.txt (default: the run's)")
    _add(g, "--save_path", default=None,
         help="database-code cache (default: <run folder>/retrieval, shared with predict.py)")
    _add(g, "--batch-size", type=int, default=None, help="images per forward pass when encoding the database")
    _add(g, "--num_workers", type=int, default=2, help="DataLoader workers for encoding the database")
    add_model_flags(parser.add_argument_group("model"))
    g = parser.add_argument_group("server")
    _add(g, "--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    _add(g, "--port", type=int, default=8000, help="port; 0 picks a free one")
    _add(g, "--topk", type=int, default=12, help="results shown first (k is adjustable on the page)")
    _add(g, "--max-upload-mb", type=float, default=16, help="largest accepted upload in MB")
    return parser


def build_service(args):
    """Load the model, the database and its codes (predict.py's cache); returns the page's SearchService."""
    from predict import build_encoders
    from utils import retrieval
    from utils.search_page import SearchService
    transform, encode_batch, encode_database = build_encoders(args)
    database, codes = retrieval.load_database(args, args.bit, transform, encode_database,
                                              retrieval.file_fingerprint(args.pretrained), args.resize_size,
                                              args.crop_size)
    title = f"{args.dataset} ({args.pretrained})"
    return SearchService(database, codes, encode_batch, transform, args.bit, title=title)


def run(argv=None):
    try:
        import flask  # noqa: F401
    except ImportError:
        raise RuntimeError("serve.py needs Flask: pip install -r requirements-web.txt") from None
    from werkzeug.serving import make_server
    from utils.retrieval import log
    from utils.search_page import create_app
    args = resolve_args(get_parser(), argv)
    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    app = create_app(build_service(args), default_k=args.topk, max_upload_mb=args.max_upload_mb)
    try:
        server = make_server(args.host, args.port, app, threaded=True)
    except OSError as err:
        raise RuntimeError(f"cannot listen on {args.host}:{args.port} ({err.strerror or err}); pick another --port "
                           f"(0 = any free one) or --host") from err
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"HashNet search page: http://{host}:{server.server_port}/  (Ctrl+C stops it)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log(f"warning: listening on {args.host}: anyone who can reach this address can search and view the images")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv=None):
    from utils.retrieval import main_guard
    return main_guard(run, argv)


if __name__ == "__main__":
    sys.exit(main())
