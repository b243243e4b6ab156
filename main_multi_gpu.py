"""Train or evaluate HashNet on several GPUs (or CPU processes) with paddle.distributed; same flags as
main_single_gpu.py, and --batch-size is per process.

    python -m paddle.distributed.launch --gpus 0,1 main_multi_gpu.py --bit 64 --batch-size 64
    python main_multi_gpu.py --bit 64 --batch-size 64      # spawns one process per visible GPU
    python -m paddle.distributed.launch --nproc_per_node 2 main_multi_gpu.py --dataset toy --device cpu
"""
import utils.runtime.before_paddle  # noqa: F401  (first, before anything imports paddle: see that module)

import sys

import paddle
import paddle.distributed as dist

from utils.runtime.dist import get_world_size, launched_by_paddle
from utils.runtime.failure import abort_without_paddle_report, run_cli
from utils.train import engine
from utils.train.options import parse_args


def worker(cfg):
    dist.init_parallel_env()
    if get_world_size() > 1:
        abort_without_paddle_report()  # a peer's stop can abort a collective in C++: its cause in one line, no block
    engine.run(cfg, wrap_model=paddle.DataParallel if get_world_size() > 1 else None)


def main(cfg):
    """A launcher's child (even a world of one, `--gpus 0`) is one worker; a bare start spawns one per visible GPU."""
    if launched_by_paddle():
        return worker(cfg)
    num_gpus = paddle.device.cuda.device_count() if paddle.device.is_compiled_with_cuda() else 0
    if num_gpus > 1:
        return dist.spawn(worker, args=(cfg,), nprocs=num_gpus)
    print(f"{num_gpus} GPU visible: running a single process. For several CPU processes use "
          "`python -m paddle.distributed.launch --nproc_per_node N main_multi_gpu.py --device cpu ...`")
    return engine.run(cfg)


if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: main(parse_args(argv, description=__doc__))))
