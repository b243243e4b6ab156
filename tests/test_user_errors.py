"""Every entry point and script answers a user error with one `error:` line saying what is wrong and what to do, no
traceback, exit status 2 (utils/runtime/failure.py); a bug keeps its traceback and exits 1. Each case is a fresh
process, as a user runs it."""
import os
import subprocess
import sys

import pytest

from conftest import REPO, run_cli
from utils.runtime.errors import MissingFileError, UsageError, is_user_error
from utils.runtime.failure import run_cli as run_command

MISSING = "/nonexistent/run/model_best_16.pdparams"


def one_error_line(proc):
    """The process failed with status 2 (a user error) and its stderr is one `error:` line (nothing else but
    warnings); returns it."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line
             and not line.startswith("  warnings.warn")]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("entry", ["main_single_gpu.py", "main_multi_gpu.py"])
def test_training_entry_missing_checkpoint_says_train_first(entry, tmp_path):
    line = one_error_line(run_cli([entry, "--eval", "--pretrained", MISSING, "--bit", "16", "--dataset", "toy",
                                   "--output-dir", tmp_path], check=False))
    assert line.startswith(f"error: --pretrained {MISSING}: checkpoint not found; train the model first")
    assert "WEIGHTS_DIR" in line


def test_training_entry_bad_flag_value_names_the_flag_as_typed(tmp_path):
    line = one_error_line(run_cli(["main_single_gpu.py", "--dataset", "toy", "--epochs", "0", "--output-dir",
                                   tmp_path], check=False))
    assert line == "error: --epochs must be >= 1, got 0"
    line = one_error_line(run_cli(["main_single_gpu.py", "--dataset", "toy", "--crop_size", "90", "--output-dir",
                                   tmp_path], check=False))
    assert line.startswith("error: --crop_size 90 is larger than --resize-size 72")


def test_training_missing_lists_end_in_one_line_after_the_log(tmp_path):
    """A user error met inside the run (the engine's top level, utils/runtime/failure.end_process): stderr has the one
    line, the log's last line is the FAILED line, no traceback anywhere."""
    proc = run_cli(["main_single_gpu.py", "--dataset", "nosuch", "--output-dir", tmp_path, "--run-name", "r",
                    "--device", "cpu", "--backbone-weights", "none"], check=False)
    line = one_error_line(proc)
    assert line.startswith("error: dataset 'nosuch' needs train.txt, test.txt and database.txt in ")
    assert proc.stdout.strip().splitlines()[-1].endswith("FAILED: " + line[len("error: "):])
    assert "Traceback" not in (tmp_path / "r" / "log_train_64.txt").read_text()


@pytest.mark.parametrize("argv", [
    ["predict.py", "--pretrained", MISSING, "--img", "x.jpg"],
    ["serve.py", "--pretrained", MISSING],
    ["export_model.py", "--pretrained", MISSING],
])
def test_model_entries_missing_checkpoint(argv):
    line = one_error_line(run_cli(argv, check=False))
    assert line.startswith(f"error: --pretrained {MISSING}: checkpoint not found; train the model first")


def test_predict_bad_flag_value_names_the_flag_as_typed():
    for flag in ("--num-results", "--topk"):
        line = one_error_line(run_cli(["predict.py", "--pretrained", MISSING, "--img", "x.jpg", flag, "0"],
                                      check=False))
        assert line == f"error: {flag} must be >= 1, got 0"


def test_infer_missing_export_and_missing_query(tmp_path):
    line = one_error_line(run_cli(["deploy/inference_python/infer.py", "--model-dir", tmp_path / "none", "--img",
                                   tmp_path / "q.jpg"], check=False))
    assert line == f"error: --img {tmp_path / 'q.jpg'}: query image not found"
    (tmp_path / "q.jpg").write_bytes(b"")
    line = one_error_line(run_cli(["deploy/inference_python/infer.py", "--model-dir", tmp_path / "none", "--img",
                                   tmp_path / "q.jpg"], check=False))
    assert line == f"error: --model-dir {tmp_path / 'none'}: folder not found; write it with export_model.py"


def test_test_script_before_training_says_train_first_or_weights_dir(tmp_path):
    proc = subprocess.run(["sh", "scripts/test_single_gpu.sh", "--output-dir", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WEIGHTS_DIR": str(tmp_path), "DATASET": "toy",
                               "PYTHONWARNINGS": "ignore"})
    line = one_error_line(proc)
    assert f"--pretrained {tmp_path}/toy_16bits/model_best_16.pdparams: checkpoint not found" in line
    assert "train the model first" in line and "WEIGHTS_DIR" in line


def test_run_command_sorts_user_errors_from_bugs(capsys):
    def fails_with(exc):
        def run(argv):
            raise exc
        return run

    assert run_command(fails_with(UsageError("--x must be 1"))) == 2
    assert capsys.readouterr().err == "error: --x must be 1\n"
    assert run_command(fails_with(MissingFileError("a.txt: not found"))) == 2
    assert capsys.readouterr().err == "error: a.txt: not found\n"
    # a plain ValueError is a bug: it propagates (its traceback is printed by Python)
    with pytest.raises(ValueError, match="internal"):
        run_command(fails_with(ValueError("internal")))
    assert run_command(lambda argv: None) == 0
    assert is_user_error(FileNotFoundError("x")) and not is_user_error(RuntimeError("x"))


def test_a_bug_keeps_its_traceback(tmp_path):
    script = tmp_path / "bug.py"
    script.write_text("import sys\nsys.path.insert(0, %r)\nfrom utils.runtime.failure import run_cli\n"
                      "def run(argv):\n    raise KeyError('internal')\nsys.exit(run_cli(run))\n" % str(REPO))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and proc.stderr.strip().endswith("KeyError: 'internal'")


def test_converting_a_file_of_no_backbone_names_the_keys_found(tmp_path):
    """`python -m models.pretrained --convert` reads the backbone from the file's keys; a file that fits none (CaffeNet,
    whose weights models/caffemodel.py reads, included) is a user error, not a KeyError."""
    import numpy as np
    import paddle
    paddle.save({"fc.weight": np.zeros((3, 3), np.float32)}, str(tmp_path / "other.pdparams"))
    line = one_error_line(run_cli(["-m", "models.pretrained", "--convert", tmp_path / "other.pdparams", "--out",
                                   tmp_path / "out.pdparams"], check=False))
    assert line.startswith(f"error: {tmp_path / 'other.pdparams'}: its keys and shapes match none of the backbones' "
                           "ImageNet networks (alexnet, resnet18, ")
    assert line.endswith("Found keys: fc.weight") and not (tmp_path / "out.pdparams").exists()


def test_serve_without_flask_reads_its_flags_first_then_names_flask(tmp_path):
    """serve.py where Flask is not installed (a package `flask` that fails to import stands in for it): the flags and
    the checkpoint are checked first (the README's test command runs without Flask), then Flask is named before the
    model loads."""
    (tmp_path / "flask").mkdir()
    (tmp_path / "flask" / "__init__.py").write_text("raise ImportError('Flask is not installed')\n")
    (tmp_path / "model_best_16.pdparams").touch()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    line = one_error_line(run_cli(["serve.py", "--pretrained", MISSING], check=False, env=env))
    assert line.startswith(f"error: --pretrained {MISSING}: checkpoint not found")
    line = one_error_line(run_cli(["serve.py", "--pretrained", tmp_path / "model_best_16.pdparams"], check=False,
                                  env=env))
    assert line == "error: serve.py needs Flask: pip install -r requirements-web.txt"
