"""HASHNET_REQUIRE_ALL=1 (tests/conftest.py): in CI a skipped test fails unless CI cannot have what it needs."""
import os
import subprocess
import sys

from conftest import REPO, SHARED


def test_require_all_turns_skips_into_failures_except_allowed_reasons(tmp_path):
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n"
        "def test_needs_torch():\n"
        "    pytest.skip('torch is not installed (pip install torch, CPU)')\n"
        "def test_needs_shared():\n"
        f"    pytest.skip('real COCO images not found: {SHARED / 'coco_lite'}')\n"
        "def test_needs_cuda():\n"
        "    pytest.skip('this Paddle has CUDA: --use_gpu is valid here')\n")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-c", os.devnull, "--rootdir", str(tmp_path),
               "-p", "no:cacheprovider", str(tmp_path / "test_skips.py")]
    # no plugin autoloading: the hook under test is conftest's (-p conftest), and other installed plugins (hypothesis)
    # would only slow both starts down
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]),
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    env.pop("HASHNET_REQUIRE_ALL", None)
    plain = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and "3 skipped" in plain.stdout, plain.stdout
    strict = subprocess.run(command, env=dict(env, HASHNET_REQUIRE_ALL="1"), cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert strict.returncode == 1 and "1 failed, 2 skipped" in strict.stdout, strict.stdout
    assert "FAILED test_skips.py::test_needs_torch - HASHNET_REQUIRE_ALL=1: this test was" in strict.stdout
