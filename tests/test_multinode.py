"""Several machines, tried on one: docs/training.md's two-node command (two launcher invocations, --nnodes 2, a master
on 127.0.0.1, one CPU process each) trains and evaluates like one invocation with two processes."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import paddle

from conftest import REPO, run_cli, toy_args

FLAGS = ["--epoch", "1", "--eval_epoch", "1", "--batch-size", "16", "--sampling", "replicated"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_command(rank, port, log_dir, small_toy, run):
    """docs/training.md#several-machines: the same command on every node, --rank 0 on the master's node."""
    return [sys.executable, "-m", "paddle.distributed.launch", "--nnodes", "2", "--master", f"127.0.0.1:{port}",
            "--rank", str(rank), "--nproc_per_node", "1", "--log_dir", str(log_dir),
            "main_multi_gpu.py", "--device", "cpu", *map(str, toy_args(small_toy, run, *FLAGS))]


def test_two_nodes_of_one_process_match_one_node_of_two(small_toy, tmp_path):
    port, nodes = free_port(), tmp_path / "nodes"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen(node_command(rank, port, tmp_path / f"node{rank}_logs", small_toy, nodes), cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    try:
        outputs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"node {rank} exited {p.returncode}:\n{out[-3000:]}"
    node1_log = (tmp_path / "node1_logs" / "workerlog.0").read_text()
    assert "[rank 1]" in node1_log  # node 1's process is global rank 1 of a world of 2

    single = tmp_path / "single"
    run_cli(["-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", tmp_path / "single_logs",
             "main_multi_gpu.py", "--device", "cpu", *toy_args(small_toy, single, *FLAGS)])

    two_nodes, one_node = (paddle.load(str(run / "last_64.pdckpt")) for run in (nodes, single))
    assert json.loads((nodes / "config.json").read_text())["world_size"] == 2
    assert np.abs(two_nodes["criterion"]["U"].numpy()).sum(1).min() > 0  # every item written
    np.testing.assert_array_equal(two_nodes["criterion"]["U"].numpy(), one_node["criterion"]["U"].numpy())
    for key, value in one_node["model"].items():
        np.testing.assert_array_equal(two_nodes["model"][key].numpy(), value.numpy(), err_msg=key)
    maps = [json.loads((run / "metrics.json").read_text())["final"]["map"] for run in (nodes, single)]
    assert maps[0] == maps[1] and maps[0] > 0
