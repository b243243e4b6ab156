"""Images/s of Paddle Inference (an export_model.py export) against the dynamic graph, on one batch, this machine.

    python benchmarks/bench_infer.py                      # random-init 64-bit HashNet, 224 px, batch 16
    python benchmarks/bench_infer.py --pretrained output/toy_run --dataset toy --batch-size 64

Both engines run the same uint8 batch (random pixels, normalised inside the model; the speed does not depend on
the content) for --iters timed passes after --warmup untimed ones. The model is exported into a temporary folder
(or --model-dir is used as is together with --pretrained for the dynamic graph). Prints one line per engine, the
largest raw-output difference (a sanity check: the engines must agree), and the inference/dygraph ratios last
(Paddle Inference with and without oneDNN; infer.py's default is with).
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import utils.runtime.before_paddle  # noqa: E402,F401  (before anything imports paddle: see utils/runtime/before_paddle.py)


def images_per_second(fn, batch, iters, warmup):
    """{'images_per_s', 'seconds_per_batch', 'iters'} of fn(batch), after `warmup` untimed calls."""
    for _ in range(warmup):
        fn(batch)
    start = time.perf_counter()
    for _ in range(iters):
        fn(batch)
    elapsed = time.perf_counter() - start
    return {"images_per_s": iters * len(batch) / elapsed, "seconds_per_batch": elapsed / iters, "iters": iters}


def bench(args):
    import numpy as np
    import paddle

    from deploy.inference_python.infer import HashInference
    from export_model import export_inference_model
    from models import HashNet
    from predict import load_model
    from utils.config.run_folder import resolve_checkpoint
    from utils.runtime import dist
    paddle.set_device("cpu")
    args.cpu_threads = dist.use_cpu_threads(args.cpu_threads)  # the same threads for the dynamic graph
    if args.pretrained:
        model = load_model(args.bit, resolve_checkpoint(args.pretrained, args.bit))
    else:
        paddle.seed(0)
        with paddle.utils.unique_name.guard():
            model = HashNet(args.bit)
        model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:  # the export converts a copy: `model` stays a dynamic-graph layer
            model_dir = str(Path(tmp) / "inference")
            export_inference_model(model, model_dir, args.bit, args.resize_size, args.crop_size)
        engines = {name: HashInference(model_dir, enable_mkldnn=mkldnn, cpu_threads=args.cpu_threads)
                   for name, mkldnn in (("inference_onednn", True), ("inference_plain", False))}
        crop = engines["inference_onednn"].crop_size
        batch = np.random.default_rng(0).integers(0, 256, (args.batch_size, 3, crop, crop), dtype=np.uint8)

        @paddle.no_grad()
        def dygraph(images):
            return model(paddle.to_tensor(images)).numpy()

        reference = dygraph(batch)
        result = {"batch_size": args.batch_size, "crop_size": crop, "cpu_threads": args.cpu_threads,
                  "dygraph": images_per_second(dygraph, batch, args.iters, args.warmup)}
        for name, engine in engines.items():
            result[name] = images_per_second(engine.run, batch, args.iters, args.warmup)
            result[name]["max_abs_diff"] = float(np.abs(engine.run(batch) - reference).max())
            # random pixels can push a standardised model's outputs far out (hundreds): compare to their scale too
            result[name]["max_rel_diff"] = result[name]["max_abs_diff"] / max(float(np.abs(reference).max()), 1e-12)
            result[f"ratio_{name}"] = result[name]["images_per_s"] / result["dygraph"]["images_per_s"]
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bit", type=int, default=64)
    parser.add_argument("--pretrained", default=None, help="checkpoint (default: a random-init HashNet)")
    parser.add_argument("--model-dir", default=None, help="an existing export (default: export to a temp folder)")
    parser.add_argument("--crop_size", type=int, default=224)
    parser.add_argument("--resize_size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cpu_threads", type=int, default=None,
                        help="CPU threads of every engine (default: OMP_NUM_THREADS when set, else all the CPUs)")
    result = bench(parser.parse_args(argv))
    for name in ("dygraph", "inference_plain", "inference_onednn"):
        r = result[name]
        diff = (f", max |raw - dygraph| {r['max_abs_diff']:.1e} = {r['max_rel_diff']:.1e} of max |raw|"
                if "max_abs_diff" in r else "")
        print(f"{name:<17} {r['images_per_s']:8.1f} images/s  ({r['seconds_per_batch'] * 1000:.1f} ms per batch of "
              f"{result['batch_size']} at {result['crop_size']} px{diff})")
    print(f"ratio inference without oneDNN / dygraph: {result['ratio_inference_plain']:.2f}x")
    print(f"ratio inference (infer.py default, oneDNN) / dygraph: {result['ratio_inference_onednn']:.2f}x")
    return result


if __name__ == "__main__":
    main()
