"""The dataset presets of each training recipe: the values a flag left unset takes (utils/config/resolve.py).

COCO's seed preset is the seed repository's recipe (docs/protocol.md#seed-recipe); the toy set's a from-scratch
recipe, since no ImageNet weights are used there (docs/protocol.md#training-from-scratch); the paper presets are the
authors' Caffe recipe (docs/protocol.md#paper-recipe). Keys are the flags' names (`--map-at` -> map_at).
"""
from utils import PROJECT_ROOT

BIT_SEEDS = {16: 0, 32: 2000, 48: 200, 64: 2000}  # the seed's per-bit seeds (docs/protocol.md#seed-recipe)

# docs/protocol.md#seed-recipe: the seed's COCO recipe. The paper's three datasets use it alike and differ in K of
# mAP@K, the data root and how their upstream lists spell image paths (docs/protocol.md#nus-wide-and-imagenet).
_SEED_RECIPE = dict(
    data_path="./datasets/COCO2014/", batch_size=128, epochs=150, eval_every=10, learning_rate=1e-3,
    optimizer="sgd", weight_decay=5e-4, momentum=0.9, alpha=0.1, continuation_step=20, lr_step=50,
    map_at=5000, crop_size=224, resize_size=256, resize_mode="short", backbone_weights="auto", init="paddle",
    standardize_features=False, train_scope="all", path_prefix=[], sampling="replicated")

PRESETS = {
    # MS-COCO, and any other list-file dataset without a preset of its own.
    "default": _SEED_RECIPE,
    # HashNet's ImageNet-100 lists hold the authors' absolute paths; mapped, they are relative to a data root
    # holding image/ (training images) and val_image/ (ILSVRC 2012 val images). mAP@1000
    # (docs/protocol.md#nus-wide-and-imagenet).
    "imagenet": dict(_SEED_RECIPE, data_path="./datasets/imagenet/", map_at=1000,
                     path_prefix=["/home/caozhangjie/run-czj/dataset/imagenet/="]),
    # HashNet's NUS-WIDE-81 lists say ./data/nuswide_81/images/...: relative to a data root holding images/.
    "nuswide_81": dict(_SEED_RECIPE, data_path="./datasets/nuswide_81/", map_at=5000,
                       path_prefix=["./data/nuswide_81/="]),
    # From scratch on 64 px toy images: a random Kaiming AlexNet, fc7 standardised on the training set and only
    # the hash layer trained (docs/protocol.md#training-from-scratch). The loss and network are HashNet's; the
    # continuation runs faster because the run is short.
    "toy": dict(
        data_path=str(PROJECT_ROOT / "data" / "toy"), batch_size=64, epochs=12, eval_every=6, learning_rate=2e-3,
        optimizer="sgd", weight_decay=5e-4, momentum=0.9, alpha=0.1, continuation_step=4, lr_step=50,
        map_at=-1, crop_size=64, resize_size=72, resize_mode="short", backbone_weights="none", init="kaiming",
        standardize_features=True, train_scope="hash", path_prefix=[], sampling="sharded"),
}

# docs/protocol.md#paper-recipe: the authors' Caffe recipe (thuml/HashNet caffe/models/train/<dataset>/solver.prototxt
# and train_val.prototxt). It counts iterations: --lr-step and --continuation-step are in iterations here, and the
# loop runs in blocks of --snapshot-every iterations (Caffe's snapshot interval: a checkpoint and a log row each).
_PAPER_RECIPE = dict(
    data_path="./datasets/COCO2014/", batch_size=256, iterations=10000, snapshot_every=1000, eval_every=2000,
    learning_rate=5e-5, optimizer="caffe_sgd", weight_decay=5e-4, momentum=0.9, lr_step=2000,
    continuation_step=200, scale_gamma=0.005, scale_power=0.5, sigmoid_param=None, class_num=1.0,
    loss_threshold=15.0, continuous_similarity=True, map_at=5000, crop_size=227, resize_size=256, resize_mode="warp",
    backbone="caffenet", backbone_weights="auto", init="paddle", standardize_features=False, train_scope="all",
    path_prefix=[])
PAPER_PRESETS = {
    "default": _PAPER_RECIPE,
    "imagenet": dict(_PAPER_RECIPE, data_path=PRESETS["imagenet"]["data_path"], learning_rate=2e-4, class_num=100.0,
                     map_at=1000, path_prefix=PRESETS["imagenet"]["path_prefix"]),
    "nuswide_81": dict(_PAPER_RECIPE, data_path=PRESETS["nuswide_81"]["data_path"], class_num=5.0,
                       path_prefix=PRESETS["nuswide_81"]["path_prefix"]),
    # The recipe's structure at toy sizes (two streams, iterations, the Caffe solver), to try it in a minute: not a
    # recipe that learns much from a random backbone.
    "toy": dict(_PAPER_RECIPE, data_path=PRESETS["toy"]["data_path"], batch_size=32, iterations=60,
                snapshot_every=20, eval_every=60, learning_rate=1e-3, lr_step=40, continuation_step=20, map_at=-1,
                crop_size=64, resize_size=72, backbone="alexnet", backbone_weights="none", init="kaiming"),
}
# each recipe's presets (--recipe, utils/train/recipes); a recipe without presets of its own takes the seed's
RECIPE_PRESETS = {"seed": PRESETS, "paper": PAPER_PRESETS}
PRESET_LABELS = {"default": "COCO", "imagenet": "ImageNet", "nuswide_81": "NUS-WIDE", "toy": "toy"}


def preset_for(dataset, recipe="seed"):
    """The preset of a dataset name under a recipe (--recipe): its own, else the recipe's COCO values."""
    presets = RECIPE_PRESETS.get(recipe, PRESETS)
    return presets.get(dataset, presets["default"])


def apply_preset(args, keys=None):
    """Fill the unset flags (all preset keys, or only `keys`) from the dataset's preset."""
    preset = preset_for(args.dataset, getattr(args, "recipe", "seed"))
    for key in preset if keys is None else keys:
        if getattr(args, key, None) is None:
            value = preset[key]
            setattr(args, key, list(value) if isinstance(value, list) else value)  # never share the preset's list
    return args


def metric_name(top_k):
    """How the run's metric is written in config.json, logs and reports: mAP@1000, mAP@5000, mAP@all."""
    return "mAP@all" if top_k is None or top_k < 0 else f"mAP@{top_k}"
