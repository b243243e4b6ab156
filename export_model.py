"""Export a trained HashNet to a static inference model for Paddle Inference (deploy/inference_python/infer.py).

    python export_model.py --pretrained output/coco_64bits        # bit, sizes and database from its config.json
    python export_model.py --dataset toy --bit 64 --pretrained weights_64.pdparams --save-inference-dir output/inf

Writes into --save-inference-dir (default output/inference_{bit}):
  inference.json (Paddle 3.x, PIR) or inference.pdmodel (Paddle 2.6, or 3.x with FLAGS_enable_pir_api=0)
  inference.pdiparams      the weights
  export_meta.json         bit, resize/crop sizes, mean/std, input name and shape, file names and sha256, the
                           source checkpoint (path, size, mtime, sha256) and the database ("database": dataset,
                           absolute data root and list folder, from the run's config.json or the data flags), so
                           inference preprocesses exactly like predict.py, reuses predict.py's database-code cache,
                           and `infer.py --model-dir DIR --img X` searches the training database with no other flag.
Flags left unset take the run's values when --pretrained names a run folder or a checkpoint in one (config.json),
then the dataset preset's. The input is x: uint8 [batch, 3, crop, crop] pixels (RGB, resized and center-cropped)
with any batch size; the float conversion and ImageNet normalisation are inside the model, as in training. The
output is the raw hash activation (code = sign, 0 -> +1). The files are written into a temporary folder and moved in
place, export_meta.json last: an export without export_meta.json is incomplete.
"""
import utils.runtime.before_paddle  # noqa: F401  (first, before anything imports paddle: see that module)

import os
import shutil
import sys
import tempfile
from pathlib import Path

from utils.config.flags import add_flag, add_flags, entry_parser
from utils.config.resolve import resolve_flags
from utils.config.run_folder import is_data_key
from utils.retrieval.fast_encoder import MODEL_FILES
from utils.runtime.failure import run_cli

PRESET_KEYS = ("data_path", "resize_size", "resize_mode", "crop_size")
META_NAME = "export_meta.json"
META_FORMAT = 2  # 2: uint8 input, normalised inside the model (1: float32, normalised by the caller)


def get_parser():
    parser = entry_parser(__doc__)
    add_flags(parser, ("--bit", "--backbone", "--pretrained", "--resize-size", "--resize-mode", "--crop-size"),
              "model",
              help={"--crop-size": "input size of the exported model (default: the run's, else the preset)"})
    add_flags(parser, ("--dataset", "--data-path", "--list-dir"), "database recorded for infer.py",
              help={"--dataset": "database recorded for infer.py, and the preset of the image sizes when there is "
                                 "no run folder ('toy': 72/64, else 256/224)"})
    add_flag(parser, "--save-inference-dir", default=None, help="output folder (default output/inference_{bit})")
    return parser


def parse_args(argv=None):
    args, given, trained = resolve_flags(get_parser(), argv, preset_keys=PRESET_KEYS, checkpoint=True)
    # the database travels with the export only when something names one: the run folder, or a data flag other than
    # --dataset (which alone keeps its old role here: the preset of the image sizes)
    args.database_known = trained is not None or bool({k for k in given if is_data_key(k) and k != "dataset"})
    if args.save_inference_dir is None:
        args.save_inference_dir = str(Path("output") / f"inference_{args.bit}")
    return args


def database_meta(args):
    """The database infer.py searches by default: dataset and every data key (absolute paths), or None."""
    if not args.database_known:
        return None
    return {key: value for key, value in sorted(vars(args).items()) if is_data_key(key)}


def export_inference_model(model, save_dir, bit, resize_size, crop_size, source=None, extra=None, resize_mode="short"):
    """The static program of an eval-mode HashNet (utils/retrieval/fast_encoder.save_program) and its export_meta.json,
    into save_dir; returns the export_meta dict it wrote.

    source: the checkpoint's fingerprint (utils.runtime.fileio.file_fingerprint) or None for an unsaved model.
    """
    import paddle

    from utils.datasets.normalization import IMAGENET_MEAN, IMAGENET_STD
    from utils.retrieval.fast_encoder import INPUT_NAME, PARAMS_FILE, save_program
    from utils.runtime.errors import NO_SPACE
    from utils.runtime.fileio import save_json, sha256_of

    save_dir = Path(save_dir)
    save_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{save_dir.name}.", dir=save_dir.parent))
    try:
        model_file = save_program(model, tmp, crop_size)
        meta = {
            "format": META_FORMAT, "bit": int(bit), "resize_size": int(resize_size), "resize_mode": resize_mode,
            "crop_size": int(crop_size),
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "input_name": INPUT_NAME, "input_shape": [None, 3, int(crop_size), int(crop_size)], "input_dtype": "uint8",
            "output": "raw hash activation o (n, bit); code = sign(o) with 0 -> +1",
            "model_file": model_file, "params_file": PARAMS_FILE,
            "files": {name: sha256_of(tmp / name) for name in (model_file, PARAMS_FILE)},
            "source_checkpoint": source, "paddle_version": paddle.__version__, **(extra or {}),
        }
        save_dir.mkdir(parents=True, exist_ok=True)
        (save_dir / META_NAME).unlink(missing_ok=True)  # the folder is incomplete until the new meta is written
        for name in MODEL_FILES + (PARAMS_FILE + ".info",):
            (save_dir / name).unlink(missing_ok=True)  # a previous export in the other format must not linger
        for name in os.listdir(tmp):
            os.replace(tmp / name, save_dir / name)
        save_json(meta, save_dir / META_NAME)
    except OSError as err:
        if err.errno in NO_SPACE:  # name the file meant, not the temporary folder it was being written into
            err.filename = str(save_dir / Path(err.filename or PARAMS_FILE).name)
            err.advice = "free space there or export elsewhere (--save-inference-dir)"
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def run(argv=None):
    args = parse_args(argv)
    from predict import load_model
    from utils.runtime import dist
    from utils.runtime.console import log_to_stderr
    from utils.runtime.fileio import file_fingerprint
    dist.select_device("cpu")  # exporting needs no accelerator, and the program is device independent
    model = load_model(args.bit, args.pretrained, args.backbone)
    database = database_meta(args)
    meta = export_inference_model(model, args.save_inference_dir, args.bit, args.resize_size, args.crop_size,
                                  source=file_fingerprint(args.pretrained),
                                  extra={"dataset": args.dataset, "database": database, "backbone": args.backbone},
                                  resize_mode=args.resize_mode)
    log_to_stderr(f"exported {args.pretrained} ({args.backbone}, {args.bit} bits, input [N, 3, {args.crop_size}, "
                  f"{args.crop_size}], "
                  f"resize {args.resize_size}) to {args.save_inference_dir}/{meta['model_file']} + inference.pdiparams "
                  f"+ {META_NAME}")
    if database is None:
        log_to_stderr("no database recorded (no run folder config.json or data flag): infer.py prints codes unless "
                      "given --dataset/--data-path/--list-dir")
    return meta


def main(argv=None):
    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
