r"""Retrieve the nearest database images of query images with a trained HashNet (dynamic graph).

    python predict.py --dataset toy --bit 64 --pretrained output/toy_run/model_best_64.pdparams \
        --img data/toy/images/000001.png
    python predict.py --bit 64 --data-path ./datasets/COCO2014/ --pretrained output/weights_64.pdparams \
        --img ./resources/COCO_val2014_000000403864.jpg --save_path ./output --show

The database codes are computed once and cached in --save_path (database_code_{bit}.npy + .json sidecar naming the
checkpoint, list and preprocessing that made them; another checkpoint or list recomputes them). For every query:
a table of rank, Hamming distance, shared labels and path (or with --json one JSON object per line), the best match
copied into --save_path and a contact sheet {query}_top{k}.png. Flags left unset take the dataset preset's values
(utils/config.py). The Paddle Inference twin of this script is deploy/inference_python/infer.py.
"""
import argparse
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

PRESET_KEYS = ("data_path", "batch_size", "resize_size", "crop_size")


def get_parser():
    from utils.config import _add
    from utils.retrieval import add_retrieval_flags
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = add_retrieval_flags(parser)
    _add(g, "--bit", type=int, default=64, help="hash code length of the checkpoint")
    _add(g, "--pretrained", default=None,
         help="HashNet checkpoint: model_best_{bit}.pdparams, last_{bit}.pdckpt, or the run folder holding one")
    _add(g, "--device", default="auto", help="auto | cpu | gpu | gpu:N")
    _add(g, "--crop_size", type=int, default=None, help="center crop (default: preset)")
    _add(g, "--resize_size", type=int, default=None, help="resize before the crop (default: preset)")
    return parser


def parse_args(argv=None):
    from utils.config import apply_preset, check_positive
    from utils.retrieval import resolve_loader_flags
    args = apply_preset(get_parser().parse_args(argv), PRESET_KEYS)
    check_positive(args, ["bit", "topk", "batch_size", "crop_size", "resize_size"])
    resolve_loader_flags(args)
    args.pretrained = resolve_checkpoint(args.pretrained, args.bit)
    return args


def resolve_checkpoint(path, bit):
    """The checkpoint file; a run folder means its model_best_{bit}.pdparams (else last_{bit}.pdckpt)."""
    if path is None:
        raise ValueError(f"--pretrained is required: a model_best_{bit}.pdparams or last_{bit}.pdckpt written by "
                         f"main_single_gpu.py (or its run folder)")
    path = Path(path)
    if path.is_dir():
        for name in (f"model_best_{bit}.pdparams", f"last_{bit}.pdckpt"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"--pretrained {path}: folder has neither model_best_{bit}.pdparams nor "
                                f"last_{bit}.pdckpt (check --bit)")
    if not path.is_file():
        raise FileNotFoundError(f"--pretrained {path}: checkpoint not found")
    return path


def load_model(bit, checkpoint_path):
    """HashNet with the checkpoint's weights, in eval mode (bit-width mismatch is a ValueError)."""
    from utils import checkpoint, engine
    # the backbone weights come from the checkpoint, so no ImageNet file is looked for
    cfg = SimpleNamespace(bit=bit, backbone_weights="none", init="torchvision", train_scope="all")
    model = engine.build_model(cfg, logging.getLogger("predict"))
    checkpoint.load_model_weights(model, checkpoint_path)
    model.eval()
    return model


def run(argv=None, out=None):
    args = parse_args(argv)
    import paddle
    from utils import dist, engine, retrieval
    from utils.datasets import build_loader, build_transform

    queries = retrieval.collect_images(args.img)  # a wrong path fails before the model is loaded
    dist.select_device(args.device)
    model = load_model(args.bit, args.pretrained)
    retrieval.warn_if_trained_differently(args.pretrained, args.resize_size, args.crop_size)
    transform = build_transform(False, args.resize_size, args.crop_size)

    @paddle.no_grad()
    def encode_batch(images):
        return model(paddle.to_tensor(images)).numpy()

    def encode_database(dataset):
        loader = build_loader(dataset, args.num_workers, args.batch_size, image_bytes=3 * args.crop_size ** 2)
        return engine.encode(model, loader, "encode database")[0]

    return retrieval.run_retrieval(args, queries, args.bit, transform, encode_batch, encode_database,
                                   retrieval.file_fingerprint(args.pretrained), args.resize_size, args.crop_size,
                                   out=out)


def main(argv=None):
    from utils.retrieval import main_guard
    return main_guard(run, argv)


if __name__ == "__main__":
    sys.exit(main())
