"""The real training entry with one deliberate failure, for tests/test_failures.py: rank FAIL_RANK, at its
FAIL_STEP-th training step, after FAIL_DELAY seconds, raises (FAIL_MODE=raise) or kills itself with SIGKILL
(FAIL_MODE=sigkill).

    FAIL_RANK=1 FAIL_STEP=3 FAIL_MODE=sigkill python -m paddle.distributed.launch --nproc_per_node 2 \
        tests/failing_worker.py <main_single_gpu flags>
"""
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import main_multi_gpu  # noqa: E402  (first of the project's imports: it imports utils.runtime.before_paddle)
from utils.losses.hashnet_loss import HashNetLoss  # noqa: E402
from utils.runtime import dist  # noqa: E402
from utils.train.options import parse_args  # noqa: E402

original_forward = HashNetLoss.forward
steps = [0]


def failing_forward(self, *args):
    steps[0] += 1
    if dist.get_rank() == int(os.environ["FAIL_RANK"]) and steps[0] == int(os.environ["FAIL_STEP"]):
        time.sleep(float(os.environ.get("FAIL_DELAY", "0")))  # let the peers reach the step's collective first
        if os.environ["FAIL_MODE"] == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"deliberate failure on rank {dist.get_rank()} at step {steps[0]}")
    return original_forward(self, *args)


if __name__ == "__main__":
    HashNetLoss.forward = failing_forward
    cfg = parse_args()
    main_multi_gpu.main(cfg)  # the real entry: a launcher's child is one worker, a bare start one process on CPU
