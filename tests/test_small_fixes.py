"""Issue 30's smaller things a new user met: the resume line before any evaluation, the contact sheet's legend,
the paper recipe's training curve in iterations."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import paddle

from test_plots_report import make_run
from utils.hashing import plots
from utils.retrieval import contact_sheet
from utils.train.recipes.base import Recipe
from utils.train.recipes.paper import PaperRecipe

REPO = Path(__file__).resolve().parents[1]


def test_resume_before_any_evaluation_says_so():
    recipe = Recipe(SimpleNamespace(rounds=10))
    assert recipe.describe_best({"map": -1.0, "epoch": 0}) == "no evaluation yet"
    assert recipe.describe_best({"map": 0.5401, "epoch": 3}) == "best mAP 0.5401 at epoch 3"
    paper = PaperRecipe(SimpleNamespace(rounds=10, snapshot_every=500, iterations=5000))
    assert paper.describe_best({"map": 0.25, "epoch": 2}) == "best mAP 0.2500 at iteration 1000"


def test_legend_words_survive_the_default_font():
    texts = [text for _, text in contact_sheet._legend_keys({"query_labels": [1]})]
    assert texts == ["query", "label in common with the query", "no label in common with the query"]
    assert not any(" a " in text for text in texts)  # PIL's bitmap font drew "shares a label" as "sharesa label"


def test_paper_run_training_curve_counts_iterations(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, "paper", 64)
    (run_dir / "config.json").write_text(json.dumps({"bit": 64, "dataset": "coco", "unit": "iteration"}))
    rows = [{"epoch": b, "iteration": 500 * b, "loss": 1.0 / b, **({"map": 0.1 * b} if b % 2 == 0 else {})}
            for b in range(1, 7)]
    (run_dir / "epochs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    doc = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps(dict(doc, best_epoch=4, final_epoch=6)))
    figures = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.setdefault(path.name, fig) and path)
    plots.save_metric_plots(run_dir)
    loss_ax, map_ax = figures["training_curve.png"].axes
    assert loss_ax.get_xlabel() == "iteration"
    assert list(loss_ax.get_lines()[0].get_xdata()) == [500, 1000, 1500, 2000, 2500, 3000]
    map_line, star = map_ax.get_lines()
    assert list(map_line.get_xdata()) == [1000, 2000, 3000]
    assert star.get_label() == "best iteration 2000" and list(star.get_xdata()) == [2000]
    ticks = loss_ax.get_xticks()
    assert all(float(t).is_integer() for t in ticks)


def test_an_evaluation_that_cannot_start_leaves_no_folder(tmp_path):
    run = tmp_path / "runs" / "coco_32bits"
    run.mkdir(parents=True)
    # a 32-bit checkpoint evaluated as 64 bits: refused when its weights are read, before any evaluation
    paddle.save({"hash_layer.weight": paddle.zeros([4096, 32])}, str(run / "model_best_32.pdparams"))
    proc = subprocess.run([sys.executable, str(REPO / "main_single_gpu.py"), "--eval", "--dataset", "toy", "--bit",
                           "64", "--pretrained", str(run / "model_best_32.pdparams"), "--num-workers", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert "holds a 32-bit model" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["coco_32bits"]  # no eval folder beside it
    assert not (tmp_path / "output").exists()  # nor under the folder the command ran in


def test_launch_logs_are_named_by_the_dataset_under_the_output_dir():
    script = (". scripts/launch_devices.sh; "
              'echo "$(flag_value --output-dir output "$@")/launch_logs/$(flag_value --dataset coco "$@")"')
    run = [
        (["--dataset", "toy", "--output_dir", "/tmp/runs"], "/tmp/runs/launch_logs/toy"),
        (["--output-dir=out2", "--bit", "16"], "out2/launch_logs/coco"),
        ([], "output/launch_logs/coco"),
    ]
    for args, expected in run:
        proc = subprocess.run(["sh", "-c", script, "sh", *args], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "GPUS": "cpu"}, timeout=60)
        assert proc.stdout.strip() == expected, proc.stderr
    for name in ("train_multi_gpu.sh", "test_multi_gpu.sh"):
        text = (REPO / "scripts" / name).read_text()
        assert "output/launch_logs" not in text and 'launch "${LOGS}_${bit}bits' in text


def test_an_evaluation_folder_goes_beside_the_evaluated_run(tmp_path):
    from utils.train.options import parse_args
    run = tmp_path / "runs" / "toy_32bits"
    run.mkdir(parents=True)
    paddle.save({"hash_layer.weight": paddle.zeros([4096, 32])}, str(run / "model_best_32.pdparams"))
    args = parse_args(["--eval", "--dataset", "toy", "--bit", "32", "--pretrained", str(run)])
    assert Path(args.run_dir).parent == run.parent.resolve() and Path(args.run_dir).name.startswith("toy_32bits_eval_")
    given = parse_args(["--eval", "--dataset", "toy", "--bit", "32", "--pretrained", str(run), "--output-dir",
                        str(tmp_path / "elsewhere")])
    assert Path(given.run_dir).parent == tmp_path / "elsewhere"
