r"""HashNet codes and retrieval with Paddle Inference (a model written by export_model.py).

    # codes of one image or of a folder, in batches
    python deploy/inference_python/infer.py --model-dir output/inference_64 --img data/toy/images/000001.png
    # the same retrieval output as predict.py (shares its database-code cache in --save_path)
    python deploy/inference_python/infer.py --model-dir output/inference_64 --img query.jpg \
        --dataset coco --data-path ./datasets/COCO2014/ --topk 10
    # search an index of your own images (scripts/index_images.py) built by the checkpoint the model was exported from
    python deploy/inference_python/infer.py --model-dir output/inference_64 --img query.jpg --index output/my_photos

Preprocessing (resize, center crop) comes from the export's export_meta.json, so it equals predict.py's; the model
takes uint8 pixels and normalises them itself (mean/std inside the exported program).
So does the database: an export of a run folder records the run's dataset, lists and data root ("database"), and
infer.py searches it with no other flag (explicit --dataset/--data-path/--list-dir override it, with a note).
--index searches an index instead; the index must have been built by the checkpoint the export came from, with the
same width, backbone and preprocessing (export_meta.json against the index's record: another is refused, naming both).
CPU by default, with oneDNN unless --enable_mkldnn false, threads with --cpu_threads; --use_gpu on a CUDA build.
With --codes-only, or when neither the export nor a flag names a database, it prints one line per image: the path
and its code as a 0/1 string (or JSON lines with --json). As in predict.py, an unreadable query is named and skipped
(with --json: {"image" or "query", "error"} in its place), the others answered, and the command exits 2; the limits
are utils/retrieval/limits.py's.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # utils/ is shared with predict.py
import utils.runtime.before_paddle  # noqa: E402,F401  (before anything imports paddle: see that module)

from utils.config.flags import (  # noqa: E402
    COLLECTION_FLAGS,
    DATA_FLAGS,
    RETRIEVAL_FLAGS,
    add_flag,
    add_flags,
    entry_parser,
    str2bool,
)
from utils.config.resolve import resolve_flags  # noqa: E402
from utils.config.run_folder import is_data_key  # noqa: E402
from utils.runtime.errors import MissingFileError, SetupError, UsageError  # noqa: E402
from utils.runtime.failure import run_cli  # noqa: E402

META_NAME = "export_meta.json"
META_FORMAT = 2


def read_export_meta(model_dir):
    """export_meta.json of an export, after checking the files it names are there and unchanged."""
    from utils.runtime.fileio import sha256_of
    model_dir = Path(model_dir)
    meta_path = model_dir / META_NAME
    if not model_dir.is_dir():
        raise MissingFileError(f"--model-dir {model_dir}: folder not found; write it with export_model.py")
    if not meta_path.is_file():
        raise MissingFileError(f"--model-dir {model_dir} has no {META_NAME}: not an export_model.py folder, or the "
                                f"export was interrupted; re-run export_model.py")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UsageError(f"{meta_path} is not valid JSON ({err}); re-run export_model.py") from err
    if meta.get("format") != META_FORMAT:
        raise UsageError(f"{meta_path}: format {meta.get('format')}, this infer.py reads format {META_FORMAT} "
                         f"(uint8 input, normalised inside the model); re-export with export_model.py")
    for name, digest in meta["files"].items():
        path = model_dir / name
        if not path.is_file():
            raise MissingFileError(f"{path} (listed in {meta_path}) is missing; re-run export_model.py")
        if sha256_of(path) != digest:
            raise UsageError(f"{path} changed after the export (sha256 differs from {meta_path}); re-run "
                             f"export_model.py")
    return meta


class HashInference:
    """A Paddle Inference predictor for an exported HashNet: preprocess, run, postprocess."""

    def __init__(self, model_dir, use_gpu=False, gpu_id=0, enable_mkldnn=False, cpu_threads=None):
        import paddle

        from utils.datasets.image_list import build_transform
        from utils.datasets.normalization import IMAGENET_MEAN, IMAGENET_STD
        from utils.retrieval.fast_encoder import Predictor, create_predictor

        self.model_dir = Path(model_dir)
        self.meta = read_export_meta(model_dir)
        if (self.meta["mean"], self.meta["std"]) != (list(IMAGENET_MEAN), list(IMAGENET_STD)):
            raise UsageError(f"{self.model_dir / META_NAME}: mean/std {self.meta['mean']}/{self.meta['std']} differ "
                             f"from utils/datasets/normalization.py's {IMAGENET_MEAN}/{IMAGENET_STD}; re-export the "
                             f"model")
        self.bit = int(self.meta["bit"])
        self.resize_size, self.crop_size = int(self.meta["resize_size"]), int(self.meta["crop_size"])
        self.resize_mode = self.meta.get("resize_mode", "short")  # exports before --resize-mode: the short side
        self.transform = build_transform(False, self.resize_size, self.crop_size, resize_mode=self.resize_mode)

        if use_gpu and not paddle.device.is_compiled_with_cuda():
            raise SetupError("--use_gpu needs a CUDA build of Paddle (paddlepaddle-gpu); this one is CPU-only")
        self.predictor = Predictor(create_predictor(self.model_dir / self.meta["model_file"],
                                                    self.model_dir / self.meta["params_file"], use_gpu, gpu_id,
                                                    enable_mkldnn, cpu_threads))

    def preprocess(self, paths):
        """Images -> uint8 (n, 3, crop, crop), exactly like the database images of predict.py."""
        from utils.retrieval.search import load_batch
        return load_batch(paths, self.transform)

    def run(self, images):
        """Raw hash activations (n, bit) of a preprocessed uint8 batch."""
        try:
            out = self.predictor(images)
        except ValueError as err:
            raise ValueError(f"{self.model_dir}: {err} (preprocess)") from None
        if out.ndim != 2 or out.shape[1] != self.bit:
            raise RuntimeError(f"{self.model_dir}: output shape {out.shape}, expected (n, {self.bit})")
        return out

    @staticmethod
    def postprocess(raw):
        """±1 codes (sign, 0 -> +1)."""
        from utils.hashing.codes import binarize
        return binarize(raw)

    def encode_paths(self, paths, batch_size):
        from utils.retrieval.search import encode_images
        return encode_images(self.run, list(paths), self.transform, batch_size, desc="infer")


def get_parser():
    parser = entry_parser(__doc__)
    add_flags(parser, RETRIEVAL_FLAGS, "retrieval")
    add_flags(parser, DATA_FLAGS, "database", help={"--batch-size": "images per predictor run"})
    add_flags(parser, COLLECTION_FLAGS, "what is searched", help={
        "--index": "search this index of your own images (scripts/index_images.py) instead of the dataset's database; "
                   "it must have been built by the checkpoint the model was exported from"})
    g = parser.add_argument_group("predictor")
    add_flag(g, "--model-dir", default=None, help="folder written by export_model.py (default output/inference_64)")
    add_flag(g, "--use-gpu", "--use_gpu", action="store_true", help="run on the GPU (CUDA build of Paddle)")
    add_flag(g, "--gpu-id", "--gpu_id", type=int, default=0)
    add_flag(g, "--enable-mkldnn", "--enable_mkldnn", type=str2bool, nargs="?", const=True, default=True,
             help="oneDNN kernels on CPU (measured ~3x faster here); --enable-mkldnn false turns them off")
    add_flag(g, "--cpu-threads", "--cpu_threads", type=int, default=None,
             help="CPU math threads (default: OMP_NUM_THREADS when set, else the CPUs this process may use)")
    add_flag(g, "--codes-only", action="store_true", help="print the codes, even when the export names a database")
    return parser


def exported_database(model_dir):
    """The database export_model.py recorded (dataset, data root, lists), or None; the files are checked later."""
    try:
        meta = json.loads((Path(model_dir) / META_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # HashInference reports a missing or broken export with the full reason
    database = meta.get("database") if isinstance(meta, dict) else None
    return {"path": Path(model_dir) / META_NAME, "values": database} if isinstance(database, dict) else None


def parse_args(argv=None):
    """resolve_flags with the database the export recorded standing in for a run folder's config.json; retrieval
    when the export or a flag names a database, otherwise just codes (the dataset picks the batch size)."""
    parser = get_parser()
    model_dir = parser.parse_known_args(argv)[0].model_dir or str(Path("output") / "inference_64")
    exported = exported_database(model_dir)
    args, given, _ = resolve_flags(parser, argv, from_run=exported is not None, run_config=exported,
                                   preset_keys=("data_path", "path_prefix", "batch_size"))
    args.model_dir = model_dir
    args.save_path = args.save_path or "output"
    args.retrieve = not args.codes_only and (exported is not None or args.index is not None
                                             or any(is_data_key(k) for k in given))
    return args


def run(argv=None, out=None):
    args = parse_args(argv)
    from utils.retrieval import search as retrieval
    out = out or sys.stdout
    paths = retrieval.collect_images(args.img)  # a wrong path fails before the predictor is built
    engine = HashInference(args.model_dir, args.use_gpu, args.gpu_id, args.enable_mkldnn, args.cpu_threads)
    if args.retrieve:
        source = engine.meta.get("source_checkpoint")
        if not source:
            raise UsageError(f"{Path(args.model_dir) / META_NAME} names no source checkpoint, so no database-code "
                             f"cache can be matched to it; re-export with export_model.py --pretrained")

        def encode_database(dataset):
            return retrieval.encode_dataset(engine.run, dataset, args.batch_size, args.num_workers)

        # the cache, or the index, is keyed by the source checkpoint: the exported model's codes equal the dynamic
        # graph's, so the model identity is the source's with the export's width, backbone and preprocessing
        args.bit, args.backbone, args.pretrained = engine.bit, engine.meta.get("backbone", "alexnet"), source["path"]
        args.resize_size, args.crop_size, args.resize_mode = engine.resize_size, engine.crop_size, engine.resize_mode
        return retrieval.run_retrieval(args, paths, engine.bit, engine.transform, engine.run, lambda: (
            retrieval.open_collection(args, engine.bit, engine.transform, encode_database, source, engine.resize_size,
                                      engine.crop_size)), out=out)
    readable, raw, failures = retrieval.encode_queries(engine.run, paths, engine.transform, args.batch_size, "infer")
    codes = dict(zip(readable, engine.postprocess(raw))) if readable else {}
    rows = []
    for path in paths:
        if path in failures:  # told on stderr already; --json keeps one object per image
            rows.append({"image": str(path), "error": failures[path]})
            if args.json:
                print(json.dumps(rows[-1]), file=out, flush=True)
            continue
        bits = "".join("1" if v > 0 else "0" for v in codes[path])
        rows.append({"image": str(path), "bit": engine.bit, "code": bits})
        print(json.dumps(rows[-1]) if args.json else f"{path}  {bits}", file=out, flush=True)
    if failures:
        raise retrieval.failed_queries_error(failures, len(paths))
    return rows


def main(argv=None):
    return run_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
