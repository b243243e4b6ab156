"""The backbones HashNet stands on (--backbone): one registry entry per name, saying how to build the ImageNet network,
which of its layers HashNet keeps, how many features the hash layer reads and where its ImageNet weights come from.

AlexNet is the seed repository's and DeepHash-pytorch's backbone (docs/protocol.md#network); ResNet-18/34/50/101/152 and
VGG-11/13/16/19 with and without BatchNorm are those of the authors' PyTorch code (docs/protocol.md#other-backbones).
Every network is built by an existing class (paddle.vision.models, or models/alexnet.py for AlexNet's torchvision
layout) and keeps that class's parameter names, which are torchvision's state-dict keys, so ImageNet weights load by
name. HashNet runs `pooled` in order, flattens, then runs `head` (the classifier's first `head_layers` children, when
there is one): that is the feature vector the hash layer reads (docs/backbones.md has the table).

Adding a backbone is one BACKBONES entry (and, for a new weight-file layout, one key-map family in
models/pretrained.py).
This module imports no Paddle: utils/config/flags.py takes the names for --backbone from it.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

TORCHVISION_HOST = "https://download.pytorch.org/models/"
PADDLE_ZOO_HOST = "https://paddle-hapi.bj.bcebos.com/models/"
PRETRAINED_DIR = "pretrained"
DEFAULT_BACKBONE = "alexnet"
CAFFEMODEL_NAME = "bvlc_reference_caffenet.caffemodel"  # the BVLC model zoo's CaffeNet, read by models/caffemodel.py
CAFFEMODEL_URL = f"http://dl.caffe.berkeleyvision.org/{CAFFEMODEL_NAME}"


@dataclass(frozen=True)
class Backbone:
    name: str
    title: str  # as papers write it: AlexNet, ResNet-50, VGG-16-BN
    family: str  # the weight-file key maps of models/pretrained.py: "alexnet", "resnet", "vgg"
    builder: str  # "module:callable" building the whole ImageNet network, randomly initialised
    builder_kwargs: tuple  # (name, value) pairs for the builder
    pooled: tuple  # top-level layers, in forward order, up to the global average pool
    head: str | None  # the top-level layer after the flatten (AlexNet's and VGG's classifier), or None
    head_layers: int  # how many of the head's children are kept (fc6 and fc7 with their ReLU and Dropout)
    imagenet_classifier: str  # the 1000-way layer's prefix, replaced by the hash layer
    feature_dim: int
    torchvision_files: tuple  # the current release first, then older ones (all on TORCHVISION_HOST)
    paddle_zoo_file: str | None  # paddle.vision's own ImageNet file, when it publishes one
    paddle_zoo_url: str | None = None  # when not PADDLE_ZOO_HOST + paddle_zoo_file
    extra_files: tuple = ()  # other names `--backbone-weights auto` looks for in pretrained/
    whole: bool = False  # HashNet keeps the whole network under its name, whose forward gives the features
    own_input: bool = False  # the network turns the uint8 batch into its input itself (CaffeNet: BGR minus the mean)
    weights_source: str | None = None  # where the weights come from, when not torchvision

    @property
    def converted_file(self):
        """What `python -m models.pretrained --convert` writes by default: our layout, readable without torch."""
        return f"{self.name}_imagenet.pdparams"

    @property
    def candidates(self):
        """The pretrained/ paths `--backbone-weights auto` tries, in order."""
        names = (self.converted_file, *self.torchvision_files, *((self.paddle_zoo_file,) if self.paddle_zoo_file
                                                                 else ()), *self.extra_files)
        return tuple(f"{PRETRAINED_DIR}/{name}" for name in dict.fromkeys(names))

    def torchvision_url(self, file_name=None):
        return TORCHVISION_HOST + (file_name or self.torchvision_files[0])

    @property
    def source(self):
        """Where a user gets the ImageNet weights, for the messages."""
        return self.weights_source or f"torchvision: {self.torchvision_url()}"

    @property
    def paddle_url(self):
        if self.paddle_zoo_url:
            return self.paddle_zoo_url
        return PADDLE_ZOO_HOST + self.paddle_zoo_file if self.paddle_zoo_file else None


RESNET_POOLED = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")
VGG_POOLED = ("features", "avgpool")


def _resnet(name, feature_dim, torchvision_files):
    return Backbone(name, f"ResNet-{name[6:]}", "resnet", f"paddle.vision.models:{name}", (), RESNET_POOLED, None, 0,
                    "fc.", feature_dim, torchvision_files, f"{name}.pdparams")


def _vgg(depth, batch_norm, torchvision_files):
    name = f"vgg{depth}" + ("_bn" if batch_norm else "")
    # paddle.vision publishes ImageNet files for VGG-16 and VGG-19 without BatchNorm only
    zoo = f"vgg{depth}.pdparams" if depth in (16, 19) and not batch_norm else None
    title = f"VGG-{depth}" + ("-BN" if batch_norm else "")
    return Backbone(name, title, "vgg", f"paddle.vision.models:vgg{depth}", (("batch_norm", batch_norm),), VGG_POOLED,
                    "classifier", 6, "classifier.6.", 4096, torchvision_files, zoo)


# torchvision's file names: the current release first, the one torchvision < 0.10 downloaded (the authors' PyTorch code,
# written for PyTorch 0.3, used those) after it; ResNet-50/101/152 also have the newer-recipe IMAGENET1K_V2 files
BACKBONES = {b.name: b for b in (
    Backbone("alexnet", "AlexNet", "alexnet", "models.alexnet:AlexNet", (), ("features", "avgpool"), "classifier", 6,
             "classifier.6.", 4096, ("alexnet-owt-7be5be79.pth", "alexnet-owt-4df8aa71.pth"),
             "AlexNet_pretrained.pdparams",
             "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/AlexNet_pretrained.pdparams",
             extra_files=("alexnet.pdparams",)),
    _resnet("resnet18", 512, ("resnet18-f37072fd.pth", "resnet18-5c106cde.pth")),
    _resnet("resnet34", 512, ("resnet34-b627a593.pth", "resnet34-333f7ec4.pth")),
    _resnet("resnet50", 2048, ("resnet50-0676ba61.pth", "resnet50-19c8e357.pth", "resnet50-11ad3fa6.pth")),
    _resnet("resnet101", 2048, ("resnet101-63fe2227.pth", "resnet101-5d3b4d8f.pth", "resnet101-cd907fc2.pth")),
    _resnet("resnet152", 2048, ("resnet152-394f9c45.pth", "resnet152-b121ed2d.pth", "resnet152-f82ba261.pth")),
    _vgg(11, False, ("vgg11-8a719046.pth", "vgg11-bbd30ac9.pth")),
    _vgg(13, False, ("vgg13-19584684.pth", "vgg13-c768596a.pth")),
    _vgg(16, False, ("vgg16-397923af.pth",)),
    _vgg(19, False, ("vgg19-dcbb9e9d.pth",)),
    _vgg(11, True, ("vgg11_bn-6002323d.pth",)),
    _vgg(13, True, ("vgg13_bn-abd245e5.pth",)),
    _vgg(16, True, ("vgg16_bn-6c64b313.pth",)),
    _vgg(19, True, ("vgg19_bn-c79401a0.pth",)),
    # The authors' Caffe network (docs/protocol.md#paper-recipe), the paper recipe's backbone: its weights come from
    # a .caffemodel, read by models/caffemodel.py
    Backbone("caffenet", "CaffeNet", "caffenet", "models.caffenet:CaffeNet", (), ("caffenet",), None, 0, "fc8.", 4096,
             (), None, extra_files=(CAFFEMODEL_NAME,), whole=True, own_input=True,
             weights_source=f"the BVLC model zoo, {CAFFEMODEL_URL}, converted once with `python -m models.caffemodel "
                            f"--convert {CAFFEMODEL_NAME} --out {PRETRAINED_DIR}/caffenet_imagenet.pdparams`"),
)}
BACKBONE_NAMES = tuple(BACKBONES)


def backbone_spec(name):
    """The registry entry of a --backbone name; a UsageError naming the choices otherwise."""
    if name is None:
        name = DEFAULT_BACKBONE
    spec = BACKBONES.get(str(name).lower())
    if spec is None:
        from utils.runtime.errors import UsageError
        raise UsageError(f"--backbone {name!r} is not one of {', '.join(BACKBONE_NAMES)}")
    return spec


def build_network(spec):
    """The whole ImageNet network of a registry entry (1000 classes), randomly initialised by its own layers."""
    module_name, _, attr = spec.builder.partition(":")
    return getattr(importlib.import_module(module_name), attr)(**dict(spec.builder_kwargs))


@functools.cache
def network_shapes(spec):
    """{our name: shape} of the whole ImageNet network's state (parameters and BatchNorm statistics), read from the
    network built without allocating or initialising anything (paddle.LazyGuard) and under its own name counter, so
    the caller's random state and parameter names are untouched. Cached: callers must not change it."""
    import paddle
    with paddle.utils.unique_name.guard(), paddle.LazyGuard():
        network = build_network(spec)
    return {name: tuple(int(s) for s in value.shape) for name, value in network.state_dict().items()}
