"""Quiet start: the entry points do not print Paddle's `UserWarning: No ccache found`; other warnings still show."""
import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO

CCACHE = "No ccache found"
ENTRY_POINTS = ("main_single_gpu.py", "main_multi_gpu.py", "predict.py", "export_model.py",
                "deploy/inference_python/infer.py", "serve.py")
# two of them in a subprocess (each start imports paddle: slow on a busy CPU); --help imports paddle in both
RUN = {"predict.py": ["--help"], "main_single_gpu.py": ["--help"]}


def clean_env():
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)  # the tests' run_cli silences warnings; here they must show
    return env


def start(args):
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_paddle_itself_warns_without_the_module():
    proc = start(["-c", "import paddle"])
    _, err = proc.communicate(timeout=300)
    if CCACHE not in err:
        pytest.skip("this Paddle does not warn about ccache here (ccache installed?): nothing to silence")


def test_entry_points_start_without_the_ccache_warning():
    procs = {name: start([name, *args]) for name, args in RUN.items()}  # in parallel
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name}:\n{err}"
        assert CCACHE not in err, f"{name}:\n{err}"


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_every_entry_point_imports_the_filter_first(script):
    """utils.runtime.before_paddle is the first import of the script (infer.py: the first after putting the repo on
    sys.path), so it runs before anything imports paddle."""
    tree = ast.parse((REPO / script).read_text(encoding="utf-8"))
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    imports.sort(key=lambda node: node.lineno)
    project = [node for node in imports if not (isinstance(node, ast.Import) and
                                                node.names[0].name in ("argparse", "json", "os", "sys"))
               and not (isinstance(node, ast.ImportFrom) and node.module == "pathlib")]
    first = project[0]
    assert isinstance(first, ast.Import) and first.names[0].name == "utils.runtime.before_paddle", \
        f"{script}: first import is line {first.lineno}, not utils.runtime.before_paddle"


def test_other_warnings_still_show():
    code = ("import utils.runtime.before_paddle, warnings, paddle\n"
            "warnings.warn('another warning', UserWarning)\n"
            "warnings.warn('No ccache found, but from elsewhere', DeprecationWarning)\n")
    proc = start(["-W", "always::DeprecationWarning", "-c", code])
    _, err = proc.communicate(timeout=300)
    assert CCACHE + ", but from elsewhere" in err  # only the UserWarning with that message is filtered
    assert "UserWarning: another warning" in err
    assert "UserWarning: No ccache found." not in err


PIR_OUT = "static graph(PIR) not support input out tensor"
# a layer of one Paddle operator (x + w) converted the way export_model.py and the CPU encoder do, and another warning
# written during the conversion, which must still show
CONVERT = ("import os, sys\nsys.path.insert(0, os.getcwd())\nimport utils.runtime.before_paddle, tempfile, paddle\n"
           "from utils.retrieval import fast_encoder\n"
           "class Add(paddle.nn.Layer):\n"
           "    def __init__(self):\n"
           "        super().__init__()\n"
           "        self.w = self.create_parameter([1])\n"
           "    def forward(self, x):\n"
           "        import warnings\n"
           "        warnings.warn('a warning written during the conversion')\n"
           "        return x.astype('float32') + self.w\n"
           "{call}\n")
SAVE = "fast_encoder.save_program(Add(), sys.argv[1], 8)"
UNFILTERED = ("spec = [paddle.static.InputSpec([None, 3, 8, 8], 'uint8', 'x')]\n"
              "static = paddle.jit.to_static(Add(), input_spec=spec, full_graph=True)\n"
              "paddle.jit.save(static, sys.argv[1] + '/m')")


def test_program_conversion_drops_paddles_pir_out_warning_only(tmp_path):
    procs = {}
    for name, call in (("plain", UNFILTERED), ("ours", SAVE)):  # to_static reads the layer's source: a file
        (tmp_path / f"{name}.py").write_text(CONVERT.format(call=call), encoding="utf-8")
        (tmp_path / f"{name}_program").mkdir()
        procs[name] = start([str(tmp_path / f"{name}.py"), str(tmp_path / f"{name}_program")])
    errs = {name: proc.communicate(timeout=600)[1] for name, proc in procs.items()}
    assert procs["ours"].returncode == 0, errs["ours"]
    if PIR_OUT not in errs["plain"]:
        pytest.skip(f"this Paddle does not print the PIR out-tensor warning: nothing to drop\n{errs['plain']}")
    assert PIR_OUT not in errs["ours"], errs["ours"]
    assert "UserWarning: a warning written during the conversion" in errs["ours"]  # other lines still show


def test_export_entry_point_does_not_print_the_pir_warning(tmp_path):
    code = ("import sys, paddle\nsys.path.insert(0, '.')\nfrom models import HashNet\n"
            "from utils.train import checkpoint\n"
            f"checkpoint.save(HashNet(16, init='none').state_dict(), {str(tmp_path / 'm_16.pdparams')!r})\n")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean_env(), timeout=300).returncode == 0
    proc = start(["export_model.py", "--dataset", "toy", "--bit", "16", "--pretrained", str(tmp_path / "m_16.pdparams"),
                  "--save-inference-dir", str(tmp_path / "inference")])
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert (tmp_path / "inference" / "export_meta.json").is_file()
    assert PIR_OUT not in err, err
