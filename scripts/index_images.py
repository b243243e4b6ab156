r"""An index of your own images, searched by predict.py and serve.py (docs/retrieval.md#an-index-of-your-images).

    python scripts/index_images.py build  --index output/my_index --pretrained output/<run> ~/Pictures "shots/**/*.jpg"
    python scripts/index_images.py add    --index output/my_index ~/Pictures/new          # only new or changed files
    python scripts/index_images.py remove --index output/my_index "~/Pictures/old/*"
    python scripts/index_images.py info   --index output/my_index [--json]
    python scripts/index_images.py verify --index output/my_index [--reencode 16]
    python scripts/index_images.py compact --index output/my_index                        # drop removed items' rows

Inputs: image files, folders (searched recursively), globs (quoted, `**` recursive) and list files (.txt, the
training format `path label...`: paths relative to --root, default the list file's folder; the labels are kept).
The work is utils/retrieval/indexing.py's, the storage utils/retrieval/index_store.py's. The codes come from a run
folder's model (--pretrained, with its image sizes from config.json as predict.py takes
them) through the fastest encoder (utils/retrieval/fast_encoder.py), in chunks of --chunk images, each committed
atomically (utils/retrieval/index_store.py): a killed build rerun with the same command finishes the job, with one
row per image. `add` takes the model from the index (its recorded checkpoint) and encodes only files that are new or
whose content changed (size or mtime differ and the sha256 too). An image that cannot be read is named, left out,
and makes the command exit 2 once the others are indexed.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python scripts/index_images.py` from anywhere
import utils.runtime.before_paddle  # noqa: E402, F401  (first: silences Paddle's ccache warning)

import argparse  # noqa: E402
import json  # noqa: E402

from utils.config.flags import MODEL_FLAGS, add_flags  # noqa: E402
from utils.retrieval import indexing  # noqa: E402
from utils.retrieval.index_store import IndexStore, model_argv, model_identity  # noqa: E402
from utils.runtime.errors import UsageError  # noqa: E402
from utils.runtime.failure import run_cli  # noqa: E402

COMMANDS = ("build", "add", "remove", "info", "verify", "compact")


def _model_args(args, store=None):
    """args with the model resolved: from --pretrained (a run folder's config.json, as predict.py) or, when not given,
    from the index's recorded checkpoint and preprocessing."""
    from predict import get_parser, resolve_args

    if args.pretrained is None:
        if store is None:
            raise UsageError("build needs --pretrained: a run folder (or checkpoint) whose model encodes the images")
        argv = model_argv(store)
    else:
        argv = ["--pretrained", str(args.pretrained)]
        for flag in ("bit", "backbone", "resize_size", "crop_size", "resize_mode"):
            if getattr(args, flag) is not None:
                argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    for flag in ("device", "encoder", "batch_size", "num_workers"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return resolve_args(get_parser(), argv + ["--img", "unused"])


def identity_of(margs):
    """The model identity (index_store.model_identity) of resolved model args."""
    from utils.runtime.fileio import sha256_of
    return model_identity(margs, sha256_of(margs.pretrained))


def encoder_loader(args, store, margs=None):
    """load_encoder for utils/retrieval/indexing.py: the model of --pretrained (or the index's), checked against the
    index's identity, as an indexing.Encoder."""
    def load():
        from predict import build_encoders

        resolved = margs or _model_args(args, store)
        store.check_identity(identity_of(resolved))
        transform, encode_batch, _ = build_encoders(resolved)
        return indexing.Encoder(transform, encode_batch, resolved.batch_size, resolved.num_workers or 1)
    return load


# ---------------------------------------------------------------------------------------------------- commands
def build(args):
    images = indexing.gather(args.inputs, args.root)  # a wrong path fails before the model is read
    margs = _model_args(args)
    store = IndexStore.create(args.index, identity_of(margs))
    with store.writing():
        return indexing.update(store, images, encoder_loader(args, store, margs), args.chunk)


def given_model(args, store):
    """The model of an explicit --pretrained, refused at once when it is not the index's (even when nothing is to be
    encoded); None without --pretrained (the index's own model, loaded only when needed)."""
    if args.pretrained is None:
        return None
    margs = _model_args(args, store)
    store.check_identity(identity_of(margs))
    return margs


def add(args):
    store = IndexStore(args.index)
    images = indexing.gather(args.inputs, args.root)
    margs = given_model(args, store)
    with store.writing():
        return indexing.update(store, images, encoder_loader(args, store, margs), args.chunk)


def remove(args):
    store = IndexStore(args.index)
    with store.writing():
        removed = store.remove(indexing.matching(store, args.inputs))
    print(f"{store.folder}: {removed} items removed, {len(store)} left (their code rows are freed by `compact`)",
          flush=True)
    if not removed:
        raise UsageError(f"nothing in {store.folder} matches {' '.join(args.inputs)} (paths are stored absolute; "
                         f"`info` shows the count)")
    return {"removed": removed}


def info(args):
    found = IndexStore(args.index).info()
    print(json.dumps(found, indent=2, sort_keys=True) if args.json else "\n".join(
        f"{key:>14}: {value}" for key, value in found.items()), flush=True)
    return found


def verify(args):
    store = IndexStore(args.index)
    margs = given_model(args, store)
    report, problems = indexing.check_index(store, args.reencode, encoder_loader(args, store, margs))
    print(json.dumps(report, indent=2) if args.json else f"{store.folder}: {report['items']} items, "
          f"{report['missing']} missing, {report['changed']} changed, {report['reencoded']} re-encoded, "
          f"{report['codes_differing']} codes differing", flush=True)
    if problems:
        raise UsageError(f"index {store.folder} failed verification ({len(problems)} problems: "
                         f"{'; '.join(problems[:3])}); `add` re-encodes changed files, `remove` drops missing ones")
    return report


def compact(args):
    store = IndexStore(args.index)
    with store.writing():
        dropped = store.compact()
    print(f"{store.folder}: {dropped} dead code rows dropped; {store.slots} rows for {len(store)} items", flush=True)
    return {"dropped": dropped}


def get_parser():
    parser = argparse.ArgumentParser(prog="python scripts/index_images.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="|".join(COMMANDS))
    for name in COMMANDS:
        sub = commands.add_parser(name, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--index", required=True, help="the index folder")
        if name in ("build", "add", "remove"):
            sub.add_argument("inputs", nargs="+", help="images, folders, globs or list files" if name != "remove"
                             else "paths, folders or globs of indexed images")
        if name in ("build", "add", "verify"):
            add_flags(sub, MODEL_FLAGS, "model (add / verify: the index's own by default)")
            sub.set_defaults(bit=None, backbone=None)  # unset: a run folder's config.json or the index decides
            sub.add_argument("--batch-size", type=int, default=None, help="images per forward pass")
            sub.add_argument("--num-workers", type=int, default=None, help="threads decoding images")
        if name in ("build", "add"):
            sub.add_argument("--root", default=None, help="folder a list file's paths are relative to")
            sub.add_argument("--chunk", type=int, default=1024, help="images per committed chunk")
        if name in ("info", "verify"):
            sub.add_argument("--json", action="store_true", help="print the result as JSON")
        if name == "verify":
            sub.add_argument("--reencode", type=int, default=16,
                             help="re-encode this many items and compare their stored codes (0: skip)")
    return parser


def run(argv=None):
    args = get_parser().parse_args(argv)
    if getattr(args, "chunk", 1) < 1:
        raise UsageError(f"--chunk must be >= 1, got {args.chunk}")
    if Path(args.index).is_file():
        raise UsageError(f"--index {args.index} is a file; give a folder")
    return {"build": build, "add": add, "remove": remove, "info": info, "verify": verify,
            "compact": compact}[args.command](args)


def main(argv=None):
    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
