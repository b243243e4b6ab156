"""Rank / world size and collectives in one place; a single process is simply world size 1."""
from utils.runtime.before_paddle import LAUNCHER_VARIABLES, USER_OMP_NUM_THREADS

import os
import random
from pathlib import Path

import numpy as np
import paddle
import paddle.distributed as dist

from utils.runtime.errors import SetupError, UsageError


def get_world_size():
    return dist.get_world_size()


def get_rank():
    return dist.get_rank()


def is_main_process():
    return get_rank() == 0


def launched_by_paddle():
    """True in a process started by `python -m paddle.distributed.launch` or `paddle.distributed.spawn`, even a
    world of one (`--gpus 0`): both set the trainer id and this trainer's endpoint; a bare start sets neither."""
    return all(name in os.environ for name in LAUNCHER_VARIABLES)


def echo_to_launcher_console(line):
    """Rank 0 under `paddle.distributed.launch`: write `line` to the launcher's own stderr as well, where its
    "Terminating with signal 15" and "Exit with signal 15" lines go (the launcher sends our stdout to workerlog.0 and
    stops echoing it once it is told to terminate), so the console's last lines carry it. Best effort: nothing when
    the parent is not the launcher or its stderr cannot be opened (/proc missing)."""
    if not launched_by_paddle() or get_rank() != 0:
        return
    parent = os.getppid()
    try:
        if b"paddle.distributed.launch" not in Path(f"/proc/{parent}/cmdline").read_bytes():
            return
        with open(f"/proc/{parent}/fd/2", "a", encoding="utf-8") as console:
            console.write(line + "\n")
    except OSError:
        pass


def launcher_gpu():
    """The GPU the launcher gave this process (FLAGS_selected_gpus, an id among the visible GPUs; the first when it
    lists several, as with one process per node)."""
    return int(os.environ.get("FLAGS_selected_gpus", "0").split(",")[0])


def local_process_count():
    """Processes of this run on this machine: the launcher's PADDLE_LOCAL_SIZE, else the world size (spawn starts
    them all here), else 1."""
    return max(1, int(os.environ.get("PADDLE_LOCAL_SIZE") or get_world_size()))


def available_cpus():
    """CPUs this process may run on (its affinity mask: taskset, cgroup cpusets, batch schedulers), else the count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_share():
    """This process's share of the available CPUs (several processes under the launcher share the machine), >= 1."""
    return max(1, available_cpus() // local_process_count())


def cpu_threads():
    """Math threads of this process's CPU kernels (the dynamic graph's and the Paddle Inference predictor's):
    OMP_NUM_THREADS when the user set it (utils/runtime/before_paddle.py tells it from the 1 Paddle's import writes),
    else this process's share of the CPUs."""
    if USER_OMP_NUM_THREADS is not None:
        try:
            return max(1, int(USER_OMP_NUM_THREADS))
        except ValueError:
            return 1  # what Paddle's import makes of a value that is not a number
    return cpu_share()


def use_cpu_threads(threads=None):
    """Run the dynamic graph's CPU kernels on `threads` (default cpu_threads()) OpenMP/MKL threads; returns the number.

    Paddle starts its kernels on one thread (its import sets OMP_NUM_THREADS=1 when unset); set_num_threads sets
    the OpenMP and MKL thread counts of the calling thread, the one that runs the dynamic graph's kernels."""
    threads = threads or cpu_threads()
    paddle.base.core.set_num_threads(threads)
    return threads


MAX_DEFAULT_WORKERS = 8  # past ~8 decoding workers per GPU the GPU is the limit, and each worker holds memory


def default_num_workers():
    """Loader workers per process when --num_workers is not given: this process's share of the available CPUs
    (several processes under the launcher share the machine), at least 1, at most MAX_DEFAULT_WORKERS."""
    return min(MAX_DEFAULT_WORKERS, cpu_share())


def all_gather_cat(tensor):
    """Concatenate a tensor from every rank along axis 0, in rank order (identity for one process)."""
    if get_world_size() == 1:
        return tensor
    parts = []
    dist.all_gather(parts, tensor)
    return paddle.concat(parts, axis=0)


def all_reduce_mean(value):
    """Mean of a python float over ranks (the logged loss is the mean over ranks)."""
    if get_world_size() == 1:
        return float(value)
    t = paddle.to_tensor([float(value)], dtype="float32")
    dist.all_reduce(t)
    return float(t.numpy()[0]) / get_world_size()


def broadcast_object(obj, src=0):
    """Send a small picklable object from `src` to every rank."""
    if get_world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def broadcast_layer(layer, src=0, suffixes=None):
    """Every rank takes rank src's parameters and buffers of `layer`, in place (what DataParallel does to the layer it
    wraps); only those whose names end with one of `suffixes` when given. utils/train/build.build_model gives every
    rank rank 0's new network this way."""
    if get_world_size() == 1:
        return
    for name, tensor in layer.state_dict().items():
        if suffixes is None or name.endswith(tuple(suffixes)):
            dist.broadcast(tensor, src=src)


def barrier():
    if get_world_size() > 1:
        dist.barrier()


def seed_everything(seed, epoch=0):
    """Seed paddle, numpy and python from (seed + rank, epoch).

    Reseeding at every epoch start makes the dropout masks of epoch e a function of (seed, rank, e) alone, so a run
    resumed at epoch e continues bit-for-bit like an uninterrupted one.
    """
    value = (seed + get_rank()) * 100003 + epoch
    paddle.seed(value)
    np.random.seed(value % (2 ** 32))
    random.seed(value)


def select_device(device="auto"):
    """The only place a device is chosen: 'auto' is a GPU when Paddle has CUDA and sees one, else the CPU, whose
    kernels then run on cpu_threads() threads."""
    if device == "auto":
        has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
        device = "gpu" if has_gpu else "cpu"
    if device.startswith("gpu") and not paddle.device.is_compiled_with_cuda():
        raise SetupError(f"--device {device} asked for a GPU but this Paddle is the CPU build; "
                           f"install paddlepaddle-gpu (and uninstall paddlepaddle) or use --device cpu")
    if device.startswith("gpu") and launched_by_paddle():
        # under the launcher each rank has its own GPU; `gpu:N` naming another would put every rank on GPU N
        assigned = f"gpu:{launcher_gpu()}"
        if device not in ("gpu", assigned):
            raise UsageError(
                f"--device {device} under paddle.distributed.launch: the launcher gave rank {get_rank()} {assigned} "
                f"(FLAGS_selected_gpus). Choose the GPUs with the launcher's own flag, e.g. `python -m "
                f"paddle.distributed.launch --gpus {device.split(':')[-1]} main_multi_gpu.py ...`, and pass "
                f"--device gpu (or auto)")
        device = assigned
    place = paddle.set_device(device)
    if device == "cpu":
        use_cpu_threads()
    return place
