r"""Retrieve the nearest database images of query images with a trained HashNet.

    python predict.py --pretrained output/toy_run --img data/toy/images/000001.png
    python predict.py --bit 64 --data-path ./datasets/COCO2014/ --pretrained output/weights_64.pdparams \
        --img ./resources/COCO_val2014_000000403864.jpg --save_path ./output --show

The database codes are computed once and cached in --save_path (default <run folder>/retrieval for a trained run,
else ./output): database_code_{bit}.npy + a .json sidecar naming the checkpoint, list and preprocessing that made
them; another checkpoint or list recomputes them. For every query:
a table of rank, Hamming distance, shared labels and path (or with --json one JSON object per line), the best match
copied into --save_path and a contact sheet {query}_top{k}.png. A query that cannot be read is named on stderr
and skipped (with --json: {"query", "error"} in its place), the others answered, and the command exits 2; the
result count, contact sheet and image size limits are utils/retrieval/limits.py's, said when applied.
When --pretrained names a run folder (or a checkpoint in one), flags left unset take the run's values from its
config.json (bit width, dataset, lists, data root, image sizes); a flag given explicitly wins, with a warning when
it contradicts training. Flags still unset take the dataset preset's values (utils/config/presets.py). The Paddle
Inference twin of this script is deploy/inference_python/infer.py.
"""
import utils.runtime.before_paddle  # noqa: F401  (first, before anything imports paddle: see that module)

import logging
import sys
from types import SimpleNamespace

from utils.config.flags import COLLECTION_FLAGS, DATA_FLAGS, MODEL_FLAGS, RETRIEVAL_FLAGS, add_flags, entry_parser
from utils.config.resolve import resolve_flags
from utils.config.run_folder import run_folder_of
from utils.runtime.failure import run_cli

PRESET_KEYS = ("data_path", "path_prefix", "batch_size", "resize_size", "resize_mode", "crop_size")


def get_parser():
    parser = entry_parser(__doc__)
    add_flags(parser, RETRIEVAL_FLAGS, "retrieval")
    add_flags(parser, COLLECTION_FLAGS, "what is searched")
    add_flags(parser, DATA_FLAGS, "database",
              help={"--batch-size": "images per forward pass", "--cache-dir": "keep the database's decoded, resized "
                    "and cropped images here (uint8 .npy, built once; docs/data.md#data-caches)"})
    add_flags(parser, MODEL_FLAGS, "model")
    return parser


def resolve_args(parser, argv=None):
    """The flags of predict.py and serve.py: resolve_flags (the run's config.json, then the preset), then the
    default --save-path: a trained run keeps its database codes next to it, wherever the command runs. With --index and
    no --pretrained, the index's own model (its checkpoint and preprocessing) is used."""
    argv = list(sys.argv[1:] if argv is None else argv)
    known, _ = parser.parse_known_args(argv)
    if getattr(known, "index", None) and known.pretrained is None:
        from utils.retrieval.index_store import model_argv
        argv += model_argv(known.index)
    args, _, trained = resolve_flags(parser, argv, preset_keys=PRESET_KEYS, checkpoint=True)
    if args.save_path is None:
        args.save_path = str(run_folder_of(args.pretrained).resolve() / "retrieval") if trained else "output"
    return args


def parse_args(argv=None):
    return resolve_args(get_parser(), argv)


def load_model(bit, checkpoint_path, backbone="alexnet"):
    """HashNet on `backbone` with the checkpoint's weights, in eval mode (bit-width mismatch is a ValueError)."""
    from utils.train import build
    cfg = SimpleNamespace(bit=bit, backbone=backbone, train_scope="all")  # every weight comes from the checkpoint
    model = build.build_model(cfg, logging.getLogger("predict"), weights=checkpoint_path)
    model.eval()
    return model


def build_encoders(args):
    """(transform, encode_batch, encode_database) of args.pretrained on args.device: what run_retrieval and the
    search page need from the model, encoding as --encoder says (on the CPU by default a Paddle Inference predictor,
    utils/retrieval/fast_encoder.py)."""
    import numpy as np
    import paddle

    from utils.datasets.image_list import build_loader, build_transform
    from utils.retrieval import fast_encoder
    from utils.runtime import dist
    from utils.train import evaluation

    dist.select_device(args.device)
    model = load_model(args.bit, args.pretrained, args.backbone)
    encoder = fast_encoder.model_encoder(model, args.encoder, args.crop_size)
    transform = build_transform(False, args.resize_size, args.crop_size, resize_mode=args.resize_mode)

    @paddle.no_grad()
    def encode_batch(images):
        return np.asarray(encoder(paddle.to_tensor(images)))

    def encode_database(dataset):
        loader = build_loader(dataset, args.num_workers, args.batch_size, image_bytes=3 * args.crop_size ** 2)
        return evaluation.encode(model, loader, "encode database", encoder)[0]

    return transform, encode_batch, encode_database


def run(argv=None, out=None):
    args = parse_args(argv)
    from utils.retrieval import search as retrieval
    from utils.runtime.fileio import file_fingerprint

    queries = retrieval.collect_images(args.img)  # a wrong path fails before the model is loaded
    transform, encode_batch, encode_database = build_encoders(args)
    return retrieval.run_retrieval(args, queries, args.bit, transform, encode_batch, lambda: retrieval.open_collection(
        args, args.bit, transform, encode_database, file_fingerprint(args.pretrained), args.resize_size,
        args.crop_size), out=out)


def main(argv=None):
    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
