"""ImageNet weights from local files, mapped onto a backbone's network (our names, Paddle layout): AlexNet
(models.alexnet.AlexNet) and the other backbones of models/backbones.py (paddle.vision.models' ResNet and VGG, whose
parameter names are torchvision's keys). One key map per family of weight files: AlexNet's is below; ResNet's and VGG's
differ from torchvision's `.pth` only in BatchNorm's statistics (torch `running_mean` / `running_var` /
`num_batches_tracked`, Paddle `_mean` / `_variance`) and from Paddle's zoo files not at all.

Reads, for AlexNet (nothing is ever downloaded):

* torchvision ``.pth`` (``alexnet-owt-7be5be79.pth`` or ``alexnet-owt-4df8aa71.pth``): same key names as ours,
  only Linear weights need a transpose (torch stores [out, in], Paddle [in, out]). Needs torch, imported only
  inside ``load_torchvision_state``. Convert once to avoid torch later::

      python -m models.pretrained --convert alexnet-owt-7be5be79.pth \
          --out pretrained/alexnet_imagenet.pdparams

* Paddle's ImageNet AlexNet ``.pdparams`` (keys ``_conv1._conv.*``, ..., ``_fc8.*``), renamed by the
  family's key map (``PADDLE_ZOO_KEY_MAPS["alexnet"]``).
  Paddle's zoo model uses ``Dropout(mode="downscale_in_infer")``, which multiplies the inputs
  of fc6 and fc7 by (1 - p) = 0.5 at inference; ours uses torch semantics (identity at
  inference, 1 / (1 - p) in training). Multiplying the fc6 and fc7 weights by 0.5 makes both
  networks compute exactly the same function in training and inference, so the loader does that.
* A ``.pdparams`` already in our layout (e.g. written by the converter above).

Library use (also for a HashNet that holds the backbone pieces under other names)::

    state = backbone_state_from_file(path)          # our names, Paddle layout, numpy arrays
    load_pretrained(model, path)                    # whole AlexNet
    load_pretrained(hashnet, path, skip=("classifier.6.",),
                    key_map={"classifier.1.weight": "fc6.weight", ...})  # or a callable
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import paddle
from paddle import nn

from models.alexnet import DROPOUT_P
from models.backbones import BACKBONE_NAMES, BACKBONES, DEFAULT_BACKBONE, PRETRAINED_DIR, backbone_spec, network_shapes
from utils.runtime.errors import MissingFileError, MissingPackageError, UsageError
from utils.runtime.fileio import atomic_write

# AlexNet's files and sources, as the backbone registry names them (the current torchvision release first, then the one
# the seed repository used)
_ALEXNET = BACKBONES["alexnet"]
TORCHVISION_URL = _ALEXNET.torchvision_url()
TORCHVISION_SEED_URL = _ALEXNET.torchvision_url(_ALEXNET.torchvision_files[1])
DEFAULT_PRETRAINED_PATH = f"{PRETRAINED_DIR}/{_ALEXNET.torchvision_files[0]}"
DEFAULT_CONVERTED_PATH = f"{PRETRAINED_DIR}/{_ALEXNET.converted_file}"
PRETRAINED_FLAG = "--backbone_weights"

# Paddle zoo prefix -> (our prefix, factor on the weight), one map per backbone family. The factor folds the zoo's
# downscale_in_infer dropout (x * 0.5 at inference, in front of fc6 and fc7) into the weights.
PADDLE_ZOO_TO_OURS = {
    "_conv1._conv.": ("features.0.", 1.0),
    "_conv2._conv.": ("features.3.", 1.0),
    "_conv3.": ("features.6.", 1.0),
    "_conv4.": ("features.8.", 1.0),
    "_conv5._conv.": ("features.10.", 1.0),
    "_fc6.": ("classifier.1.", 1.0 - DROPOUT_P),
    "_fc7.": ("classifier.4.", 1.0 - DROPOUT_P),
    "_fc8.": ("classifier.6.", 1.0),
}
# paddle.vision's ResNet and VGG zoo files hold paddle.vision's own names (paddle.vision loads them by name), ours
PADDLE_ZOO_KEY_MAPS = {"alexnet": PADDLE_ZOO_TO_OURS, "resnet": {}, "vgg": {}}
# torchvision .pth -> ours, per family: a key's last part renamed, or dropped (None). torch's BatchNorm counts its
# training batches (only for its momentum=None mode), a state Paddle's BatchNorm has not
TORCH_BATCHNORM_NAMES = {"running_mean": "_mean", "running_var": "_variance", "num_batches_tracked": None}
BATCHNORM_STATISTICS = ("._mean", "._variance")  # Paddle keeps them as parameters that never train
TORCH_KEY_MAPS = {"alexnet": {}, "resnet": TORCH_BATCHNORM_NAMES, "vgg": TORCH_BATCHNORM_NAMES}


def paddle_alexnet_url() -> str:
    """URL of Paddle's ImageNet AlexNet, read from Paddle itself (for messages only)."""
    try:
        # paddle.vision.models.alexnet is shadowed by the factory function of that name.
        module = importlib.import_module("paddle.vision.models.alexnet")
        return module.model_urls["alexnet"][0]
    except (ImportError, AttributeError, KeyError):
        return _ALEXNET.paddle_url


def _missing_file_message(path: Path, backbone: str = DEFAULT_BACKBONE) -> str:
    spec = backbone_spec(backbone)
    older = ", ".join(spec.torchvision_url(name) for name in spec.torchvision_files[1:])
    seed = {"alexnet": f" (the seed used {TORCHVISION_SEED_URL})"}.get(spec.name, f" (also: {older})" if older else "")
    paddle_url = paddle_alexnet_url() if spec.name == "alexnet" else spec.paddle_url
    zoo = (f"Or Paddle's own {paddle_url} (usable as is)." if paddle_url else
           f"Paddle's zoo publishes no ImageNet {spec.title}.")
    return (
        f"ImageNet {spec.title} weights not found: {path}. Nothing is downloaded at run time; put the "
        f"file at {PRETRAINED_DIR}/{spec.torchvision_files[0]} (or pass its location with {PRETRAINED_FLAG}). "
        f"Sources: torchvision {spec.torchvision_url()}{seed}; "
        f"convert a .pth once with `python -m models.pretrained --convert <file.pth> --out "
        f"{PRETRAINED_DIR}/{spec.converted_file}` so training needs no torch. {zoo}"
    )


def _require_file(path: str | os.PathLike, backbone: str = DEFAULT_BACKBONE) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(_missing_file_message(path, backbone))
    return path


def read_torch_arrays(path: str | os.PathLike, backbone: str = DEFAULT_BACKBONE) -> dict[str, np.ndarray]:
    """A torch state-dict file as float32 arrays under its own (torch) names and layout."""
    path = _require_file(path, backbone)
    try:
        import torch
    except ImportError as error:
        converter = "models.alexnet" if backbone == "alexnet" else "models.pretrained"  # AlexNet's older name kept
        raise MissingPackageError(
            f"reading {path} (a torch .pth) needs torch. Install the CPU build once "
            f"(`pip install torch`) and convert it: `python -m {converter} --convert {path} "
            f"--out {PRETRAINED_DIR}/{backbone_spec(backbone).converted_file}`; then load the .pdparams without torch."
        ) from error
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13 has no weights_only
        loaded = torch.load(str(path), map_location="cpu")
    if not isinstance(loaded, Mapping):
        raise UsageError(
            f"{path}: expected a torch state dict (name -> tensor), found {type(loaded).__name__}"
        )
    arrays: dict[str, np.ndarray] = {}
    for name, tensor in loaded.items():
        if not isinstance(tensor, torch.Tensor):
            raise UsageError(
                f"{path}: entry {name!r} is a {type(tensor).__name__}, expected a tensor"
            )
        arrays[name] = tensor.detach().cpu().float().numpy()
    return arrays


def load_torchvision_state(path: str | os.PathLike, backbone: str = DEFAULT_BACKBONE) -> dict[str, np.ndarray]:
    """Read a torchvision ``.pth`` of `backbone`; return float32 arrays under our names, 2-D weights transposed from
    torch's [out, in] to Paddle's [in, out]."""
    return from_torch_layout(read_torch_arrays(path, backbone), backbone_spec(backbone).family)


def torch_name(name: str, family: str) -> str | None:
    """Our name of a torch state-dict key under the family's key map (TORCH_KEY_MAPS), or None when it has none."""
    renames = TORCH_KEY_MAPS[family]
    stem, _, last = name.rpartition(".")
    if last not in renames:
        return name
    return None if renames[last] is None else f"{stem}.{renames[last]}"


def _is_torch_linear_weight(name: str, array: np.ndarray) -> bool:
    return name.endswith(".weight") and np.ndim(array) == 2


def from_torch_layout(arrays: Mapping[str, np.ndarray], family: str = "alexnet") -> dict[str, np.ndarray]:
    """torch state-dict arrays -> our names and Paddle layout (float32, contiguous): the family's key map
    (TORCH_KEY_MAPS: BatchNorm's statistics renamed, its batch counter dropped), Linear weights [out, in] become
    [in, out]; everything else is kept as is."""
    state: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        ours = torch_name(name, family)
        if ours is None:
            continue
        if _is_torch_linear_weight(ours, array):
            array = array.T
        state[ours] = np.ascontiguousarray(array, dtype=np.float32)
    return state


def _load_pdparams(path: Path) -> dict[str, np.ndarray]:
    try:
        loaded = paddle.load(str(path), return_numpy=True)
    except Exception as error:  # paddle raises assorted types for foreign/corrupt files
        raise UsageError(
            f"{path}: cannot be read as a Paddle .pdparams ({type(error).__name__}: {error}); "
            f"a torchvision checkpoint must end in .pth"
        ) from error
    if not isinstance(loaded, Mapping):
        raise UsageError(
            f"{path}: expected a Paddle state dict (name -> array), found {type(loaded).__name__}"
        )
    return {name: np.asarray(value, dtype=np.float32) for name, value in loaded.items()}


def load_paddle_alexnet_state(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.pdparams`` of Paddle's zoo AlexNet (``_conv1._conv.weight``, ...) or one already
    in our layout (``features.0.weight``, ...); return arrays under our names. Zoo fc6/fc7
    weights are multiplied by 0.5 (see module docstring); unknown zoo keys are kept unchanged
    so that ``load_pretrained`` reports them."""
    path = _require_file(path)
    loaded = _load_pdparams(path)
    if any(name.startswith("features.") or name.startswith("classifier.") for name in loaded):
        return loaded
    if not any(name.startswith("_conv1.") for name in loaded):
        found = ", ".join(sorted(loaded)[:8]) or "(no keys)"
        raise UsageError(
            f"{path}: neither Paddle's zoo AlexNet layout (_conv1._conv.weight, ..., _fc8.bias) "
            f"nor ours (features.0.weight, ..., classifier.6.bias); found keys: {found}"
        )
    return map_zoo_keys(loaded, PADDLE_ZOO_KEY_MAPS["alexnet"])


def map_zoo_keys(
    loaded: Mapping[str, np.ndarray], key_map: Mapping[str, tuple[str, float]]
) -> dict[str, np.ndarray]:
    """Arrays of a Paddle zoo file under our names: each key's zoo prefix is replaced by ours and its
    weight scaled by the map's factor; keys no prefix matches are kept unchanged."""
    state: dict[str, np.ndarray] = {}
    for name, array in loaded.items():
        for zoo_prefix, (our_prefix, weight_factor) in key_map.items():
            if name.startswith(zoo_prefix):
                suffix = name[len(zoo_prefix):]
                if suffix == "weight" and weight_factor != 1.0:
                    array = array * np.float32(weight_factor)
                state[our_prefix + suffix] = array
                break
        else:
            state[name] = array
    return state


def _is_torch_file(path: Path) -> bool:
    if path.suffix in (".pth", ".pt", ".bin"):
        return True
    if path.suffix == ".pdparams":
        return False
    # torch >= 1.6 writes a zip archive; paddle.save writes a plain pickle.
    return zipfile.is_zipfile(path)


def backbone_state_from_file(path: str | os.PathLike, backbone: str = DEFAULT_BACKBONE) -> dict[str, np.ndarray]:
    """Arrays of `backbone` in our names and Paddle layout from any supported file (chosen by suffix:
    .pth/.pt/.bin -> torchvision, .pdparams -> Paddle zoo or ours; other suffixes by content)."""
    path = _require_file(path, backbone)
    if _is_torch_file(path):
        return load_torchvision_state(path, backbone)
    family = backbone_spec(backbone).family
    if family == "alexnet":
        return load_paddle_alexnet_state(path)
    return map_zoo_keys(_load_pdparams(path), PADDLE_ZOO_KEY_MAPS[family])


def _shapes_in_family(raw: Mapping[str, np.ndarray], torch_file: bool, family: str) -> dict[str, tuple]:
    """{our name: shape} a file's arrays would have under the family's key map, without converting them."""
    if torch_file:
        shapes = {}
        for name, array in raw.items():
            ours = torch_name(name, family)
            if ours is not None:
                shape = tuple(np.shape(array))
                shapes[ours] = shape[::-1] if _is_torch_linear_weight(ours, array) else shape
        return shapes
    key_map = PADDLE_ZOO_KEY_MAPS[family]
    if family == "alexnet" and any(key.startswith("features.") for key in raw):
        key_map = {}  # already ours
    return {name: tuple(np.shape(array)) for name, array in map_zoo_keys(
        {name: np.broadcast_to(np.float32(0), np.shape(array)) for name, array in raw.items()}, key_map).items()}


def detect_backbone(path: str | os.PathLike) -> tuple[str, dict[str, np.ndarray]]:
    """(backbone name, its state in our names) of a weights file: the registry's backbone whose ImageNet network
    (models/backbones.network_shapes) has exactly the file's keys and shapes once read with its family's key map."""
    path = _require_file(path)
    torch_file = _is_torch_file(path)
    raw = read_torch_arrays(path) if torch_file else _load_pdparams(path)
    for name, spec in BACKBONES.items():  # but CaffeNet, whose weights models/caffemodel.py reads
        if spec.family in TORCH_KEY_MAPS and _shapes_in_family(raw, torch_file, spec.family) == network_shapes(spec):
            if torch_file:
                return name, from_torch_layout(raw, spec.family)
            return name, backbone_state_from_file(path, name)
    found = ", ".join(sorted(raw)[:8]) or "(no keys)"
    raise UsageError(f"{path}: its keys and shapes match none of the backbones' ImageNet networks "
                     f"({', '.join(BACKBONE_NAMES)}); name it with --backbone to see what differs. Found keys: "
                     f"{found}{', ...' if len(raw) > 8 else ''}")


def _format_shape(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(int(size)) for size in shape) + "]"


def check_backbone_state(
    state: Mapping[str, np.ndarray],
    expected_shapes: Mapping[str, Iterable[int]],
    source: str = "state dict",
    backbone: str = DEFAULT_BACKBONE,
) -> None:
    """Raise ValueError naming every missing key, unexpected key and wrong shape of ``state``
    against ``expected_shapes`` (both in our names)."""
    expected = {name: tuple(int(s) for s in shape) for name, shape in expected_shapes.items()}
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    wrong = [
        name
        for name in expected
        if name in state and tuple(np.shape(state[name])) != expected[name]
    ]
    if not (missing or unexpected or wrong):
        return
    spec = backbone_spec(backbone)
    lines = [f"{spec.title} weights in {source} do not match the model:"]
    if missing:
        lines.append(
            "  missing keys (expected shape): "
            + ", ".join(f"{name} {_format_shape(expected[name])}" for name in missing)
        )
    if unexpected:
        lines.append(
            "  unexpected keys (found shape): "
            + ", ".join(f"{name} {_format_shape(np.shape(state[name]))}" for name in unexpected)
        )
    if wrong:
        lines.append(
            "  wrong shapes: "
            + ", ".join(
                f"{name} expected {_format_shape(expected[name])}, "
                f"found {_format_shape(np.shape(state[name]))}"
                for name in wrong
            )
        )
    if spec.family == "alexnet":
        lines.append(
            "  (keys use torchvision's names features.{0,3,6,8,10}.*, classifier.{1,4,6}.*, "
            "Linear weights as [in, out]; pass skip=(\"classifier.6.\",) to leave out the "
            "ImageNet classifier)"
        )
    else:
        lines.append(
            f"  (keys use torchvision's names, BatchNorm statistics as _mean / _variance, Linear weights as "
            f"[in, out]; is the file another backbone's? `python -m models.pretrained --convert {source}` names "
            f"the backbone a file holds)"
        )
    raise UsageError("\n".join(lines))


def load_pretrained(
    model: nn.Layer,
    path: str | os.PathLike,
    skip: Iterable[str] = (),
    key_map: Mapping[str, str] | Callable[[str], str] | None = None,
    backbone: str = DEFAULT_BACKBONE,
) -> dict[str, list[str]]:
    """Copy ImageNet weights of `backbone` (a models/backbones.py name) from ``path`` into ``model``.

    ``skip``: prefixes in our names (e.g. ``("classifier.6.",)`` for the 1000-way fc8) that are
    neither required in the file nor loaded. ``key_map``: our name -> the model's parameter
    name (a dict or a callable), for models such as a HashNet that keep the backbone pieces
    under other names; default identity. Every other backbone key must be in the file with the
    shape of the model's parameter it maps to; the file may hold nothing else (apart from
    skipped keys). Parameters of ``model`` that no backbone key maps to are left untouched.

    Returns ``{"loaded": model keys set, "skipped": file keys left out}``.
    """
    skip = tuple(skip)
    if key_map is None:
        def to_model(name: str) -> str:
            return name
    elif callable(key_map):
        to_model = key_map
    else:
        def to_model(name: str) -> str:
            return key_map.get(name, name)

    def skipped(name: str) -> bool:
        return any(name.startswith(prefix) for prefix in skip)

    wanted = [name for name in network_shapes(backbone_spec(backbone)) if not skipped(name)]
    model_state = model.state_dict()
    absent_in_model = [f"{name} -> {to_model(name)}" for name in wanted
                       if to_model(name) not in model_state]
    if absent_in_model:
        raise UsageError(
            f"model {type(model).__name__} has no parameter for: {', '.join(absent_in_model)} "
            f"(our name -> model name; fix key_map or add the prefix to skip)"
        )
    expected = {name: tuple(model_state[to_model(name)].shape) for name in wanted}

    state = backbone_state_from_file(path, backbone)
    skipped_keys = [name for name in state if skipped(name)]
    kept = {name: array for name, array in state.items() if not skipped(name)}
    check_backbone_state(kept, expected, source=str(path), backbone=backbone)

    loaded = []
    for name, array in kept.items():
        target = model_state[to_model(name)]
        target.set_value(paddle.to_tensor(array).astype(target.dtype))
        loaded.append(to_model(name))
    return {"loaded": loaded, "skipped": skipped_keys}


def convert_to_pdparams(source: str | os.PathLike, out: str | os.PathLike | None = None,
                        backbone: str | None = None) -> dict:
    """Convert a torchvision .pth or Paddle zoo .pdparams of `backbone` (None: the one its keys and shapes fit,
    detect_backbone) into a .pdparams in our layout (default pretrained/<backbone>_imagenet.pdparams). Checked
    against the backbone's ImageNet network; written atomically. Returns a summary dict."""
    if backbone is None:
        backbone, state = detect_backbone(source)
    else:
        state = backbone_state_from_file(source, backbone)
    spec = backbone_spec(backbone)
    check_backbone_state(state, network_shapes(spec), source=str(source), backbone=backbone)
    out = Path(out if out is not None else Path(PRETRAINED_DIR) / spec.converted_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: paddle.save(state, tmp))
    statistics = [name for name in state if name.endswith(BATCHNORM_STATISTICS)]
    return {
        "out": str(out),
        "backbone": spec.name,
        "tensors": len(state),
        "parameters": int(sum(array.size for name, array in state.items() if name not in statistics)),
        "statistics": int(sum(state[name].size for name in statistics)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.pretrained",
        description="Convert ImageNet weights (torchvision .pth or Paddle zoo .pdparams) of a backbone "
        f"({', '.join(BACKBONE_NAMES)}) into a .pdparams in this project's layout, so training never needs torch.",
    )
    parser.add_argument("--convert", required=True, metavar="SOURCE",
                        help=f"local weights file, e.g. {_ALEXNET.torchvision_files[0]} ({TORCHVISION_URL})")
    parser.add_argument("--backbone", default=None, choices=BACKBONE_NAMES,
                        help="the backbone the file holds (default: the one its keys and shapes fit)")
    parser.add_argument("--out", default=None,
                        help="output .pdparams (default pretrained/<backbone>_imagenet.pdparams, e.g. "
                             f"{DEFAULT_CONVERTED_PATH})")
    args = parser.parse_args(argv)

    def convert(_argv):
        summary = convert_to_pdparams(args.convert, args.out, args.backbone)
        print(summary["out"])
        print(f"converted {args.convert} ({summary['backbone']}) -> {summary['out']}: {summary['tensors']} tensors, "
              f"{summary['parameters']:,} parameters"
              + (f" + {summary['statistics']:,} BatchNorm statistics" if summary["statistics"] else "")
              + " (our layout, Linear weights [in, out])")

    from utils.runtime.failure import run_cli
    return run_cli(convert)


if __name__ == "__main__":
    sys.exit(main())
