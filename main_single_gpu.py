"""Train or evaluate HashNet on one device (GPU when available, else CPU).

    python main_single_gpu.py --dataset toy                       # the built-in toy set, any CPU
    python main_single_gpu.py --bit 64 --data-path ./datasets/COCO2014/
    python main_single_gpu.py --eval --pretrained output/coco_64bits     # bit, data, sizes, mAP@K: the run's
"""
import utils.runtime.before_paddle  # noqa: F401  (first, before anything imports paddle: see that module)

import sys

from utils.runtime.failure import run_cli
from utils.train import engine
from utils.train.options import parse_args

if __name__ == "__main__":
    sys.exit(run_cli(lambda argv: engine.run(parse_args(argv, description=__doc__))))
