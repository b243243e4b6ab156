"""Reference for tests/test_backbones.py, run in its own process (torch only, never Paddle; torchvision is not needed).

Minimal torch ResNet and VGG whose state-dict keys are torchvision's (conv1, bn1, layer1.0.conv1, ..., fc;
features.N, classifier.N), randomly initialised with scale-preserving weights and random BatchNorm statistics, saved
with torch.save, and their eval-mode logits on fixed inputs:

    python tests/torch_reference_backbones.py --out-dir DIR resnet18 resnet50 vgg11_bn   # or any of the 13

writes DIR/<name>.pth, DIR/input.npy (2 x 3 x 64 x 64) and DIR/<name>_logits.npy.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

RESNETS = {"resnet18": (False, (2, 2, 2, 2)), "resnet34": (False, (3, 4, 6, 3)), "resnet50": (True, (3, 4, 6, 3)),
           "resnet101": (True, (3, 4, 23, 3)), "resnet152": (True, (3, 8, 36, 3))}
VGG_CONFIGS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}  # convs per stage
VGG_LAYERS = {depth: tuple(v for width, n in zip((64, 128, 256, 512, 512), convs) for v in [width] * n + ["M"])
              for depth, convs in VGG_CONFIGS.items()}
VGGS = {f"vgg{depth}{suffix}": (VGG_LAYERS[depth], bool(suffix)) for depth in VGG_CONFIGS for suffix in ("", "_bn")}
INPUT_SIZE = 64


class Block(nn.Module):
    """torchvision's BasicBlock (two 3x3) or Bottleneck (1x1, 3x3 with the stride, 1x1 x4), by their key names."""

    def __init__(self, inplanes, planes, stride, bottleneck):
        super().__init__()
        width, out = planes, planes * (4 if bottleneck else 1)
        shapes = [(inplanes, width, 1, 1), (width, width, 3, stride), (width, out, 1, 1)] if bottleneck else \
            [(inplanes, width, 3, stride), (width, out, 3, 1)]
        self.depth = len(shapes)
        for i, (cin, cout, k, s) in enumerate(shapes, 1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, k, stride=s, padding=k // 2, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(cout))
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x):
        y = x
        for i in range(1, self.depth + 1):
            y = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(y))
            y = torch.relu(y) if i < self.depth else y
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, bottleneck, blocks):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks), 1):
            layers = []
            for j in range(count):
                layers.append(Block(inplanes, planes, 2 if j == 0 and i > 1 else 1, bottleneck))
                inplanes = planes * (4 if bottleneck else 1)
            setattr(self, f"layer{i}", nn.Sequential(*layers))
        self.fc = nn.Linear(inplanes, 1000)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class VGG(nn.Module):
    def __init__(self, config, batch_norm):
        super().__init__()
        layers, cin = [], 3
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers += [nn.Conv2d(cin, v, 3, padding=1)] + ([nn.BatchNorm2d(v)] if batch_norm else []) + [nn.ReLU()]
            cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096),
                                        nn.ReLU(), nn.Dropout(), nn.Linear(4096, 1000))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 7)
        return self.classifier(torch.flatten(x, 1))


def randomize_(model):
    # He-normal weights keep the logits O(1), so that 1e-4 of the largest proves something; non-zero biases and
    # BatchNorm statistics away from (0, 1) make a wrong mapping of either visible
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(module.weight, 0.0, (2.0 / module.weight[0].numel()) ** 0.5)
            if module.bias is not None:
                nn.init.uniform_(module.bias, -0.1, 0.1)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)


def build(name):
    if name in RESNETS:
        return ResNet(*RESNETS[name])
    return VGG(*VGGS[name])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("names", nargs="+", choices=sorted({**RESNETS, **VGGS}))
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).standard_normal((2, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
    np.save(out / "input.npy", x)
    for seed, name in enumerate(args.names):
        torch.manual_seed(seed)
        model = build(name)
        randomize_(model)
        model.eval()
        torch.save(model.state_dict(), out / f"{name}.pth")
        with torch.no_grad():
            np.save(out / f"{name}_logits.npy", model(torch.from_numpy(x)).numpy())


if __name__ == "__main__":
    main()
