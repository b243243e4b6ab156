"""Reference for tests/test_alexnet.py, run in its own process (torch only, never Paddle).

Builds torchvision's AlexNet layout in plain torch, seeds it, saves its state dict with
torch.save (zip format, and the legacy format of alexnet-owt-4df8aa71.pth), and saves the
eval-mode logits on fixed inputs:

    python tests/torch_reference_alexnet.py --out-dir DIR

writes DIR/alexnet_tv.pth, DIR/alexnet_tv_legacy.pth, DIR/input_{224,64}.npy and
DIR/logits_{224,64}.npy.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

INPUT_SIZES = (224, 64)  # 64 makes the features 1x1, so the adaptive pool really resamples


def torchvision_layout_alexnet(num_classes: int = 1000) -> nn.Module:
    model = nn.Module()
    model.features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    model.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    model.classifier = nn.Sequential(
        nn.Dropout(p=0.5),
        nn.Linear(256 * 6 * 6, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(p=0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    )
    return model


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = model.avgpool(model.features(x))
    return model.classifier(torch.flatten(x, 1))


def scale_preserving_init_(model: nn.Module) -> None:
    # torch's default init shrinks activations layer by layer, leaving logits ~1e-3 where a
    # 1e-4 tolerance would prove little; He-normal weights keep logits O(1), and non-zero
    # biases make a wrong bias mapping visible.
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            nn.init.normal_(module.weight, 0.0, (2.0 / fan_in) ** 0.5)
            nn.init.uniform_(module.bias, -0.1, 0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    model = torchvision_layout_alexnet()
    scale_preserving_init_(model)
    model.eval()
    torch.save(model.state_dict(), out_dir / "alexnet_tv.pth")
    torch.save(model.state_dict(), out_dir / "alexnet_tv_legacy.pth",
               _use_new_zipfile_serialization=False)

    rng = np.random.default_rng(args.seed)
    with torch.no_grad():
        for size in INPUT_SIZES:
            x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
            logits = forward(model, torch.from_numpy(x)).numpy()
            np.save(out_dir / f"input_{size}.npy", x)
            np.save(out_dir / f"logits_{size}.npy", logits)


if __name__ == "__main__":
    main()
