r"""Retrieve the nearest database images of query images with a trained HashNet (dynamic graph).

    python predict.py --pretrained output/toy_run --img data/toy/images/000001.png
    python predict.py --bit 64 --data-path ./datasets/COCO2014/ --pretrained output/weights_64.pdparams \
        --img ./resources/COCO_val2014_000000403864.jpg --save_path ./output --show

The database codes are computed once and cached in --save_path (default <run folder>/retrieval for a trained run,
else ./output): database_code_{bit}.npy + a .json sidecar naming the checkpoint, list and preprocessing that made
them; another checkpoint or list recomputes them. For every query:
a table of rank, Hamming distance, shared labels and path (or with --json one JSON object per line), the best match
copied into --save_path and a contact sheet {query}_top{k}.png. When --pretrained names a run folder (or a checkpoint
in one), flags left unset take the run's values from its config.json (bit width, dataset, lists, data root, image
sizes); a flag given explicitly wins, with a warning when it contradicts training. Flags still unset take the
dataset preset's values (utils/config.py). The Paddle Inference twin of this script is
deploy/inference_python/infer.py.
"""
import utils.before_paddle  # noqa: F401  (first, before anything imports paddle: see that module)
import argparse
import logging
import sys
from types import SimpleNamespace

from utils.config import resolve_checkpoint  # noqa: F401  (also predict.resolve_checkpoint for older callers)

PRESET_KEYS = ("data_path", "path_prefix", "batch_size", "resize_size", "crop_size")


def add_model_flags(g):
    """The flags naming the checkpoint and how to run it (shared with serve.py)."""
    from utils.config import _add
    _add(g, "--bit", type=int, default=64, help="hash code length of the checkpoint (default: the run's, else 64)")
    _add(g, "--pretrained", default=None,
         help="HashNet checkpoint: model_best_{bit}.pdparams, last_{bit}.pdckpt, or the run folder holding one")
    _add(g, "--device", default="auto", help="auto | cpu | gpu | gpu:N")
    _add(g, "--crop_size", type=int, default=None, help="center crop (default: the run's, else the preset)")
    _add(g, "--resize_size", type=int, default=None, help="resize before the crop (default: the run's, else preset)")
    return g


def get_parser():
    from utils.retrieval import add_retrieval_flags
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(add_retrieval_flags(parser))
    return parser


def resolve_args(parser, argv=None):
    """Parse, fill unset flags from the run folder's config.json then the preset, check, resolve the checkpoint."""
    from utils.config import (absolute_data_paths, apply_preset, apply_run_config, check_positive, given_flags,
                              run_folder_of)
    from utils.retrieval import resolve_loader_flags
    args = parser.parse_args(argv)
    trained = apply_run_config(args, given_flags(parser, argv))
    if args.save_path is None:  # a trained run keeps its database codes next to it, wherever the command runs
        args.save_path = str(run_folder_of(args.pretrained).resolve() / "retrieval") if trained else "output"
    apply_preset(args, PRESET_KEYS)
    absolute_data_paths(args)
    check_positive(args, ["bit", "batch_size", "crop_size", "resize_size"] + (["topk"] if "topk" in args else []))
    resolve_loader_flags(args)
    args.pretrained = resolve_checkpoint(args.pretrained, args.bit)
    return args


def parse_args(argv=None):
    return resolve_args(get_parser(), argv)


def load_model(bit, checkpoint_path):
    """HashNet with the checkpoint's weights, in eval mode (bit-width mismatch is a ValueError)."""
    from utils import checkpoint, engine
    # the backbone weights come from the checkpoint, so no ImageNet file is looked for
    cfg = SimpleNamespace(bit=bit, backbone_weights="none", init="torchvision", train_scope="all")
    model = engine.build_model(cfg, logging.getLogger("predict"))
    checkpoint.load_model_weights(model, checkpoint_path)
    model.eval()
    return model


def build_encoders(args):
    """(transform, encode_batch, encode_database) of args.pretrained on args.device: what run_retrieval and the
    search page need from the dynamic-graph model."""
    import paddle
    from utils import dist, engine
    from utils.datasets import build_loader, build_transform

    dist.select_device(args.device)
    model = load_model(args.bit, args.pretrained)
    transform = build_transform(False, args.resize_size, args.crop_size)

    @paddle.no_grad()
    def encode_batch(images):
        return model(paddle.to_tensor(images)).numpy()

    def encode_database(dataset):
        loader = build_loader(dataset, args.num_workers, args.batch_size, image_bytes=3 * args.crop_size ** 2)
        return engine.encode(model, loader, "encode database")[0]

    return transform, encode_batch, encode_database


def run(argv=None, out=None):
    args = parse_args(argv)
    from utils import retrieval

    queries = retrieval.collect_images(args.img)  # a wrong path fails before the model is loaded
    transform, encode_batch, encode_database = build_encoders(args)
    return retrieval.run_retrieval(args, queries, args.bit, transform, encode_batch, encode_database,
                                   retrieval.file_fingerprint(args.pretrained), args.resize_size, args.crop_size,
                                   out=out)


def main(argv=None):
    from utils.retrieval import main_guard
    return main_guard(run, argv)


if __name__ == "__main__":
    sys.exit(main())
