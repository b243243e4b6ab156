"""The training engine and what it alone uses: checkpoints, the run's logs, preemption, frozen-backbone features."""
