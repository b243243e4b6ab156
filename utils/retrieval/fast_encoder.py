"""Paddle's fastest CPU encoder: an eval-mode dygraph layer run as a static program by Paddle Inference with oneDNN.

The dynamic graph's CPU kernels run HashNet several times slower than the same network as a static program under
`paddle.inference` with oneDNN (fused conv + bias + ReLU, fc kernels; benchmarks/bench_cpu.py), so on the CPU the
evaluation (utils/train/evaluation.py), predict.py / serve.py and deploy/inference_python/infer.py encode through a
predictor.
On a GPU the dynamic graph is fast and stays (--encoder auto). Making a predictor costs about 2 s on the CPU (the
conversion, a copy of the weights, oneDNN's first runs), so --encoder auto keeps the dynamic graph for a job too small
to repay it (PREDICTOR_MIN_PIXELS).

The pieces export_model.py and infer.py share live here: `save_program` (to_static + jit.save: inference.json under
PIR on Paddle 3.x, inference.pdmodel on Paddle 2.6 or with FLAGS_enable_pir_api=0, the weights in
inference.pdiparams), `create_predictor` (the Config) and `Predictor` (numpy uint8 in, numpy outputs out).
`layer_predictor` ties them together for a layer in memory: its current weights go through a temporary folder that
is removed once the predictor has loaded it. A predictor holds a copy of the weights it was made from, so the
evaluation of a network that trains makes a new one each time (about a second for HashNet; the log says how long),
and a frozen backbone's run makes one for the whole run (utils/train/build.frozen_backbone_sources).
"""
import contextlib
import copy
import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from utils.config.flags import ENCODERS
from utils.runtime.errors import NO_SPACE

MODEL_FILES = ("inference.json", "inference.pdmodel")  # PIR program / legacy ProgramDesc
# --encoder auto on the CPU: a job of fewer pixels than this (256 toy images) is encoded by the dynamic graph, which
# keeps a job of a few dozen images (a query, a small test set) off the ~2 s of making a predictor and gives every
# run the fast path. Where the predictor starts to pay depends on the machine (measured: docs/training.md#evaluate)
PREDICTOR_MIN_PIXELS = 256 * 64 * 64
PARAMS_FILE = "inference.pdiparams"
INPUT_NAME = "x"
# Paddle 3.x's glog warning (eager_utils.cc) the first time a program is built: its own Python operators (x + y,
# x - y, x / y, paddle.pow, ...) hand `out=None` to the C++ op under PIR. Nothing in this project passes out=; every
# network warns. save_program drops this one line and lets every other line through.
PIR_OUT_WARNING = "static graph(PIR) not support input out tensor"
# Less room than this left after paddle.jit.save: the disk filled while it wrote (a write that meets a full disk
# leaves a few blocks at most), so its weights file may be cut
FULL_DISK_BYTES = 1 << 20
# What to do when the temporary folder a predictor is made through is full (utils/runtime/errors.describe_os_error)
TEMP_FOLDER_ADVICE = ("free space there or point TMPDIR at a folder with room; --encoder dygraph needs no such folder "
                      "(the same codes, slower on the CPU)")


@contextlib.contextmanager
def stderr_without(fragment):
    """Hold what the process writes to its stderr (fd 2: C++ glog lines and Python alike) while the block runs, then
    write it back without the lines containing `fragment`. GLOG_minloglevel would hide every warning of the whole
    process, and glog's level cannot be changed once Paddle has started it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if fragment not in line))
            sys.stderr.flush()


def save_program(layer, folder, crop_size):
    """Write eval-mode `layer` (uint8 [N, 3, crop, crop] in, float outputs) as a static inference program into
    `folder` (inference.{json|pdmodel} + inference.pdiparams); returns the program's file name.

    A copy is converted, so `layer` stays a dynamic-graph layer: to_static replaces the forward of the layer it
    converts, and the training loop goes on with it."""
    import paddle
    from paddle.static import InputSpec

    from utils.runtime.fileio import ensure_free_space

    folder = Path(folder)
    twin = copy.deepcopy(layer)
    twin.eval()
    spec = [InputSpec([None, 3, int(crop_size), int(crop_size)], "uint8", INPUT_NAME)]
    # paddle.jit.save does not report a full disk: it leaves a cut weights file that a predictor loads without a word
    # (missing weights read as whatever the memory held) or refuses with "Cannot read tensor desc size". So the room
    # is checked before, and a disk left full after is taken for one that filled while the weights were written.
    params, needed = folder / PARAMS_FILE, weights_bytes(twin)
    ensure_free_space(params, needed)
    # full_graph=True: the AST translator, which honours input_spec (Paddle 3.x defaults to SOT, which ignores it)
    with stderr_without(PIR_OUT_WARNING):
        static_layer = paddle.jit.to_static(twin, input_spec=spec, full_graph=True)
        paddle.jit.save(static_layer, str(folder / "inference"))
    if shutil.disk_usage(folder).free < FULL_DISK_BYTES:
        err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(params))
        err.needed_bytes = needed
        raise err
    model_file = next((name for name in MODEL_FILES if (folder / name).is_file()), None)
    if model_file is None or not (folder / PARAMS_FILE).is_file():
        raise RuntimeError(f"paddle.jit.save wrote {sorted(p.name for p in folder.iterdir())}, expected {PARAMS_FILE} "
                           f"and one of {MODEL_FILES} (Paddle {paddle.__version__})")
    return model_file


def create_predictor(model_path, params_path, use_gpu=False, gpu_id=0, enable_mkldnn=True, cpu_threads=None):
    """A paddle.inference predictor of a saved program: on GPU `gpu_id`, or on the CPU with oneDNN (unless
    enable_mkldnn is False) and `cpu_threads` math threads (default utils/runtime/dist.cpu_threads())."""
    import paddle.inference as paddle_infer

    from utils.runtime.dist import cpu_threads as default_threads

    config = paddle_infer.Config(str(model_path), str(params_path))
    if use_gpu:
        config.enable_use_gpu(256, gpu_id)
    else:
        config.disable_gpu()
        # Paddle 3.x turns oneDNN on by default on CPU; make the flag decide either way
        if enable_mkldnn:
            config.enable_mkldnn()
        elif hasattr(config, "disable_mkldnn"):
            config.disable_mkldnn()
        config.set_cpu_math_library_num_threads(cpu_threads or default_threads())
    config.switch_ir_optim(True)
    config.disable_glog_info()
    return paddle_infer.create_predictor(config)


class Predictor:
    """A predictor of one uint8 image input and one output, called like the layer it came from: images (numpy, or a
    CPU tensor) -> outputs (numpy float32). Not re-entrant: one call at a time (serve.py holds a lock)."""

    def __init__(self, predictor):
        names = predictor.get_input_names()
        if len(names) != 1:
            raise RuntimeError(f"expected a program of one input, found {names}")
        self.predictor = predictor
        self.input = predictor.get_input_handle(names[0])
        self.output = predictor.get_output_handle(predictor.get_output_names()[0])

    def __call__(self, images):
        images = np.ascontiguousarray(images.numpy() if hasattr(images, "numpy") else images)
        if images.dtype != np.uint8:
            raise ValueError(f"the program takes uint8 pixels [N, 3, H, W], got {images.dtype}")
        self.input.reshape(list(images.shape))
        self.input.copy_from_cpu(images)
        self.predictor.run()
        return self.output.copy_to_cpu()


def layer_predictor(layer, crop_size, use_gpu=False, gpu_id=0, cpu_threads=None):
    """A Predictor of eval-mode `layer` with its current weights (oneDNN on the CPU); `layer` is left unchanged. The
    weights pass through a folder under TMPDIR: a full one is an OSError(ENOSPC) that says to point TMPDIR elsewhere."""
    folder = Path(tempfile.mkdtemp(prefix="hashnet_encoder_"))
    try:
        model_file = save_program(layer, folder, crop_size)
        return Predictor(create_predictor(folder / model_file, folder / PARAMS_FILE, use_gpu=use_gpu,
                                          gpu_id=gpu_id, cpu_threads=cpu_threads))
    except OSError as err:
        if err.errno in NO_SPACE:
            err.advice = TEMP_FOLDER_ADVICE
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the predictor has read both files


def weights_bytes(layer):
    """The bytes of `layer`'s parameters and buffers: about the size of its saved program's weights file."""
    return sum(int(np.prod(t.shape)) * t.element_size() for t in layer.state_dict().values())


def resolve_encoder(choice, device=None, images=None, crop_size=None):
    """--encoder as run here: 'inference' or 'dygraph'; auto = inference on the CPU, the dynamic graph on a GPU
    (`device`: a Paddle device string, default the current one) or for a job of `images` crops of `crop_size` px
    below PREDICTOR_MIN_PIXELS (unknown: the predictor)."""
    if choice not in ENCODERS:
        from utils.runtime.errors import UsageError
        raise UsageError(f"--encoder must be one of {', '.join(ENCODERS)}, got {choice!r}")
    if choice != "auto":
        return choice
    if device is None:
        import paddle
        device = paddle.get_device()
    if device.startswith("gpu"):
        return "dygraph"
    small = images is not None and images * crop_size ** 2 < PREDICTOR_MIN_PIXELS
    return "dygraph" if small else "inference"


def _method_layer(owner, name):
    """A layer whose forward is owner.<name> (HashNet.fc7, extract_features), so that part alone can be saved as a
    program. The method's name is an attribute, not a closure: dy2static re-executes forward's source without its
    closure (Paddle 2.6)."""
    import paddle

    class MethodLayer(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.owner = owner
            self.method_name = name

        def forward(self, x):
            return getattr(self.owner, self.method_name)(x)

    return MethodLayer()


def method_encoder(method, choice, crop_size, images=None):
    """What runs `method` (a bound method of an eval-mode layer, uint8 images in) under --encoder `choice` for a job
    of `images` images: the method itself (dygraph), or a Predictor of that part of the layer with its current
    weights."""
    if resolve_encoder(choice, images=images, crop_size=crop_size) == "dygraph":
        return method
    return model_encoder(_method_layer(method.__self__, method.__name__), choice, crop_size)


def model_encoder(model, choice, crop_size, images=None):
    """What encodes for eval-mode `model` under --encoder `choice` for a job of `images` images (None: unknown, or
    many): the model itself (dygraph), or a Predictor of its current weights on the current device (`crop_size`: the
    input's height and width).

    With --encoder auto a model Paddle Inference cannot take (a conversion or predictor failure) is encoded by the
    dynamic graph instead, with one warning line on stderr: the same codes, only slower. --encoder inference fails.
    """
    import paddle
    model.eval()
    if resolve_encoder(choice, images=images, crop_size=crop_size) == "dygraph":
        return model
    device = paddle.get_device()
    gpu_id = int(device.split(":")[1]) if device.startswith("gpu:") else 0
    try:
        return layer_predictor(model, crop_size, use_gpu=device.startswith("gpu"), gpu_id=gpu_id)
    except Exception as err:  # noqa: BLE001 (any failure of the conversion or the predictor: the dygraph path works)
        if choice != "auto":
            raise
        import sys

        from utils.runtime.errors import is_file_system_error, user_message
        cause = (user_message(err) if is_file_system_error(err)
                 else f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        print(f"warning: --encoder auto: Paddle Inference could not take {type(model).__name__} ({cause}); encoding "
              f"in the dynamic graph (the same codes, slower)", file=sys.stderr, flush=True)
        return model


def encoder_kind(encoder):
    """'inference' for a Predictor, else 'dygraph': what model_encoder actually gave."""
    return "inference" if isinstance(encoder, Predictor) else "dygraph"
