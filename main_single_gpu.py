"""Train or evaluate HashNet on one device (GPU when available, else CPU).

    python main_single_gpu.py --dataset toy                       # the built-in toy set, any CPU
    python main_single_gpu.py --bit 64 --data-path ./datasets/COCO2014/
    python main_single_gpu.py --eval --pretrained output/coco_64bits     # bit, data, sizes, mAP@K: the run's
"""
import utils.quiet_start  # noqa: F401  (first: silences Paddle's ccache warning)
from utils import engine
from utils.config import parse_args

if __name__ == "__main__":
    engine.run(parse_args(description=__doc__))
