"""Per backbone (models/backbones.py): parameters, the time of one toy epoch at 64 px, and (--parity) how close
torchvision-layout weights through the converter come to torch's logits.

    python benchmarks/bench_backbones.py                               # all 14, frozen-backbone epoch
    python benchmarks/bench_backbones.py --train resnet18 vgg11        # + a whole-network epoch of these
    python benchmarks/bench_backbones.py --parity                      # + torch parity (needs torch)

One toy epoch: the toy set's 1,000 training images (random uint8 pixels here, the same cost), --size px, batch 64,
64 bits. "frozen": what the toy preset's epoch 1 costs (--train-scope hash, utils/train/frozen.py): the backbone's
features
of every training image through the fast encoder (Paddle Inference, oneDNN; the predictor's set-up included), then
one epoch of the hash layer on them. "train": one epoch of the whole network in train mode (--train-scope all: forward
and backward, momentum SGD, BatchNorm on the batch), the per-epoch cost of the seed recipe's kind of run. Every
backbone runs in a process of its own; the machine's load average is printed before and after, since a busy machine
moves every number. Parity: tests/torch_reference_backbones.py (and torch_reference_alexnet.py) write random
torchvision-layout weights and torch's logits on two 64 px images; the converter reads each file, the backbone's
Paddle network gives logits, and the largest difference is printed relative to the largest logit.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import utils.runtime.before_paddle  # noqa: E402,F401  (before anything imports paddle)

from models.backbones import BACKBONE_NAMES  # noqa: E402  (imports no Paddle)

BIT, BATCH = 64, 64


def parameters(name):
    """(trainable parameters of the ImageNet network, of the part HashNet keeps), counted on Paddle's layers (BatchNorm
    statistics, which Paddle holds as parameters that never train, left out)."""
    import numpy as np
    import paddle

    from models import HashNet
    from models.backbones import BACKBONES, build_network

    def count(named):
        return int(sum(np.prod(p.shape) for n, p in named if not n.endswith(("._mean", "._variance"))))
    with paddle.LazyGuard():
        network, model = build_network(BACKBONES[name]), HashNet(BIT, backbone=name)
    kept = [(n, p) for n, p in model.named_parameters() if not n.startswith("hash_layer.")]
    return count(network.named_parameters()), count(kept)


def measure(name, images, size, train):
    import numpy as np
    import paddle

    from models import HashNet
    from utils.losses.hashnet_loss import HashNetLoss
    from utils.retrieval import fast_encoder
    from utils.train.frozen import hash_outputs
    paddle.set_device("cpu")
    paddle.seed(0)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (images, 3, size, size), dtype=np.uint8)
    labels = paddle.to_tensor(np.eye(10, dtype=np.float32)[rng.integers(0, 10, images)])
    batches = [slice(start, start + BATCH) for start in range(0, images, BATCH)]
    model = HashNet(BIT, backbone=name, init="kaiming")
    total, network = parameters(name)
    result = {"backbone": name, "parameters": total, "parameters_kept": network,
              "feature_dim": int(model.feature_mean.shape[0])}

    model.eval()
    start = time.perf_counter()
    encoder = fast_encoder.method_encoder(model.fc7, "inference", size)
    setup = time.perf_counter() - start
    features = np.concatenate([np.asarray(encoder(pixels[b])) for b in batches])
    hash_layer = model.hash_layer
    criterion, optimizer = HashNetLoss(BIT, images, 0.1, 10), paddle.optimizer.Momentum(
        1e-3, momentum=0.9, parameters=hash_layer.parameters())
    for b in batches:  # one epoch of the hash layer on the cached features
        loss = criterion(hash_layer(paddle.to_tensor(features[b])), labels[b], paddle.arange(images)[b])
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    hash_outputs(hash_layer, features, BATCH)
    result.update(frozen_epoch_s=time.perf_counter() - start, encoder_setup_s=setup)

    if train:
        model.train()
        criterion = HashNetLoss(BIT, images, 0.1, 10)
        optimizer = paddle.optimizer.Momentum(1e-3, momentum=0.9, parameters=model.parameters(), weight_decay=5e-4)
        start = time.perf_counter()
        for b in batches:
            loss = criterion(model(paddle.to_tensor(pixels[b])), labels[b], paddle.arange(images)[b])
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
        result["train_epoch_s"] = time.perf_counter() - start
    return result


def parity(names, out_dir):
    """{backbone: (max |paddle - torch|, max |torch|)} of random torchvision-layout weights through the converter."""
    import numpy as np
    import paddle

    from models.alexnet import AlexNet
    from models.backbones import BACKBONES, build_network
    from models.pretrained import convert_to_pdparams, load_pretrained
    tests = ROOT / "tests"
    others = [n for n in names if n != "alexnet"]
    if others:
        subprocess.run([sys.executable, str(tests / "torch_reference_backbones.py"), "--out-dir", str(out_dir),
                        *others], check=True)
    if "alexnet" in names:
        subprocess.run([sys.executable, str(tests / "torch_reference_alexnet.py"), "--out-dir", str(out_dir)],
                       check=True)
    found = {}
    for name in names:
        pth, x, ref = ((out_dir / "alexnet_tv.pth", out_dir / "input_64.npy", out_dir / "logits_64.npy")
                       if name == "alexnet" else (out_dir / f"{name}.pth", out_dir / "input.npy",
                                                  out_dir / f"{name}_logits.npy"))
        converted = out_dir / f"{name}_imagenet.pdparams"
        summary = convert_to_pdparams(pth, converted)
        network = AlexNet() if name == "alexnet" else build_network(BACKBONES[name])
        load_pretrained(network, converted, backbone=name)
        network.eval()
        with paddle.no_grad():
            logits = network(paddle.to_tensor(np.load(x))).numpy()
        reference = np.load(ref)
        found[name] = {"detected": summary["backbone"], "max_abs_diff": float(np.abs(logits - reference).max()),
                       "max_abs_logit": float(np.abs(reference).max())}
        for path in (pth, converted):
            path.unlink()
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONE_NAMES), choices=BACKBONE_NAMES)
    parser.add_argument("--train", nargs="*", default=[], choices=BACKBONE_NAMES,
                        help="also time a whole-network training epoch of these")
    parser.add_argument("--images", type=int, default=1000, help="training images (the toy set's 1,000)")
    parser.add_argument("--size", type=int, default=64, help="pixels (the toy preset's 64)")
    parser.add_argument("--parity", action="store_true", help="torch parity of every backbone (needs torch)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one backbone, print JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.images, args.size, args.one in args.train)))
        return 0
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows = []
    for name in args.backbones:
        command = [sys.executable, __file__, "--one", name, "--images", str(args.images), "--size", str(args.size),
                   "--train", *args.train]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", flush=True)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        print(f"{name:10s} params {row['parameters']:>12,} kept {row['parameters_kept']:>12,} "
              f"features {row['feature_dim']:>5} frozen epoch {row['frozen_epoch_s']:7.1f} s "
              f"(encoder set-up {row['encoder_setup_s']:.1f} s)"
              + (f" train epoch {row['train_epoch_s']:7.1f} s" if "train_epoch_s" in row else ""), flush=True)
    print(f"load average after: {os.getloadavg()}")
    if args.parity:
        with tempfile.TemporaryDirectory() as tmp:
            for name, row in parity(args.backbones, Path(tmp)).items():
                print(f"parity {name:10s} (read as {row['detected']}): max |diff| {row['max_abs_diff']:.3g}, "
                      f"largest logit {row['max_abs_logit']:.3g}, "
                      f"relative {row['max_abs_diff'] / row['max_abs_logit']:.2e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
