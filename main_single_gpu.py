"""Train or evaluate HashNet on one device (GPU when available, else CPU).

    python main_single_gpu.py --dataset toy                       # the built-in toy set, any CPU
    python main_single_gpu.py --bit 64 --data-path ./datasets/COCO2014/
    python main_single_gpu.py --eval --pretrained output/coco_64bits     # bit, data, sizes, mAP@K: the run's
"""
import utils.before_paddle  # noqa: F401  (first, before anything imports paddle: see that module)
from utils import engine
from utils.config import parse_args

if __name__ == "__main__":
    engine.run(parse_args(description=__doc__))
