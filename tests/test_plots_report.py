"""utils/hashing/plots.save_metric_plots and scripts/report.py on small synthetic run folders."""
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
from PIL import Image

from utils.hashing.plots import load_epochs, precision_at_n_points, save_metric_plots

REPO = Path(__file__).resolve().parents[1]


def load_report_module():
    spec = importlib.util.spec_from_file_location("report_script", REPO / "scripts" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


report = load_report_module()


def fake_metrics(bits, map_value, topk=5000, num_query=100, num_database=900):
    """A metrics dict shaped like retrieval_metrics' output after a JSON round trip (string P@N keys)."""
    pr = []
    for r in range(bits + 1):
        recall = (r / bits) ** 2
        pr.append({"radius": r, "precision": round(0.9 - 0.5 * recall, 6), "recall": round(recall, 6)})
    return {
        "map": map_value, "map_nonzero": map_value + 0.01, "map_tie_aware": map_value - 0.002,
        "nonzero_queries": 95, "precision_radius2": map_value + 0.05, "radius2_empty_fraction": 0.125,
        "precision_at_n": {"100": map_value + 0.1, "500": map_value + 0.05, "1000": map_value},
        "pr_curve": pr, "topk": topk, "bits": bits, "num_query": num_query, "num_database": num_database,
        "map_random_codes": 0.3,
    }


def make_run(root, name, bits, dataset="coco", final_map=0.5, best_map=None, epochs=True, topk=5000):
    run_dir = Path(root) / name
    run_dir.mkdir(parents=True)
    doc = {"final_epoch": 150, "final": fake_metrics(bits, final_map, topk),
           "selection": "best epoch chosen on the query set"}
    if best_map is None:
        doc.update(best_epoch=150, best=doc["final"])
    else:
        doc.update(best_epoch=130, best=fake_metrics(bits, best_map, topk))
    (run_dir / "metrics.json").write_text(json.dumps(doc))
    (run_dir / "config.json").write_text(json.dumps({"bit": bits, "dataset": dataset, "run_name": name}))
    if epochs:
        rows = [{"epoch": e, "loss": 1.0 / e, "lr": 0.01, "scale": 1.0, "time": 2.0} for e in range(1, 151)]
        for row in rows:
            if row["epoch"] % 10 == 0:
                row.update(map=final_map * row["epoch"] / 150, map_random_codes=0.3)
        (run_dir / "epochs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def assert_png(path):
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 0, path
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()


# ------------------------------------------------------------------------------------------------ save_metric_plots
def colour_pixels(path, rgb, tolerance=40):
    """Number of pixels of the PNG within `tolerance` (per channel) of an RGB colour."""
    import numpy as np
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - np.array(rgb)).max(axis=-1) <= tolerance).sum())


TAB_BLUE, TAB_ORANGE, TAB_RED = (31, 119, 180), (255, 127, 14), (214, 39, 40)


def test_save_metric_plots_draws_the_metrics(tmp_path, monkeypatch):
    """The three figures plot exactly the run's numbers (line data read back from the figures), and the curves are
    in the PNGs (pixels of each curve's colour)."""
    from utils.hashing import plots
    figures = {}
    original = plots.save_figure

    def recording_save_figure(fig, path):
        figures[Path(path).name] = fig
        return original(fig, path)

    monkeypatch.setattr(plots, "save_figure", recording_save_figure)
    run_dir = make_run(tmp_path, "coco_32bits", 32, final_map=0.61, best_map=0.63)
    written = save_metric_plots(run_dir / "metrics.json")
    assert [p.name for p in written] == ["pr_curve.png", "precision_at_n.png", "training_curve.png"]
    assert all(p.parent == run_dir for p in written)
    for p in written:
        assert_png(p)
    assert not list(run_dir.glob(".*.tmp"))  # atomic writes leave no temp files
    doc = json.loads((run_dir / "metrics.json").read_text())

    # PR curve: final (blue, solid) and best (orange, dashed) over radii 0..32, radius 2 marked on each
    ax = figures["pr_curve.png"].axes[0]
    curves = [line for line in ax.get_lines() if len(line.get_xdata()) > 1]
    assert [line.get_label() for line in curves] == ["final epoch 150", "best epoch 130 (chosen on the query set)"]
    for line, metrics in zip(curves, (doc["final"], doc["best"])):
        assert list(line.get_xdata()) == [row["recall"] for row in metrics["pr_curve"]]
        assert list(line.get_ydata()) == [row["precision"] for row in metrics["pr_curve"]]
    markers = [line for line in ax.get_lines() if len(line.get_xdata()) == 1]
    assert [(m.get_xdata()[0], m.get_ydata()[0]) for m in markers] == [
        (m["pr_curve"][2]["recall"], m["pr_curve"][2]["precision"]) for m in (doc["final"], doc["best"])]
    assert "HashNet 32 bits · coco" in ax.get_title()

    # precision@N: N sorted numerically, the values of each view
    ax = figures["precision_at_n.png"].axes[0]
    for line, metrics in zip(ax.get_lines(), (doc["final"], doc["best"])):
        assert list(line.get_xdata()) == [100, 500, 1000]
        assert list(line.get_ydata()) == [metrics["precision_at_n"][n] for n in ("100", "500", "1000")]

    # training curve: loss of every epoch; mAP and random codes at the evaluated epochs; the best epoch starred
    rows = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
    loss_ax, map_ax = figures["training_curve.png"].axes
    (loss,) = loss_ax.get_lines()
    assert list(loss.get_xdata()) == list(range(1, 151)) and list(loss.get_ydata()) == [r["loss"] for r in rows]
    map_line, random_line, star = map_ax.get_lines()
    evaluated = [r for r in rows if "map" in r]
    assert list(map_line.get_xdata()) == [r["epoch"] for r in evaluated] == list(range(10, 151, 10))
    assert list(map_line.get_ydata()) == [r["map"] for r in evaluated]
    assert list(random_line.get_ydata()) == [0.3] * 15
    assert (star.get_xdata()[0], star.get_ydata()[0]) == (130, pytest.approx(0.61 * 130 / 150))

    # the curves are drawn: each one's colour covers a visible number of pixels
    assert colour_pixels(run_dir / "pr_curve.png", TAB_BLUE) > 200
    assert colour_pixels(run_dir / "pr_curve.png", TAB_ORANGE) > 200
    assert colour_pixels(run_dir / "training_curve.png", TAB_RED) > 200
    assert colour_pixels(run_dir / "training_curve.png", TAB_BLUE) > 200


def test_save_metric_plots_without_epochs_and_from_dict(tmp_path):
    run_dir = make_run(tmp_path, "toy_16", 16, dataset="toy", epochs=False)
    doc = json.loads((run_dir / "metrics.json").read_text())
    out = tmp_path / "plots"
    written = save_metric_plots(doc, out)
    assert [p.name for p in written] == ["pr_curve.png", "precision_at_n.png"]
    for p in written:
        assert_png(p)
        # one view (best = final): the final epoch's blue curve, no orange best-epoch curve
        assert colour_pixels(p, TAB_BLUE) > 200 and colour_pixels(p, TAB_ORANGE, tolerance=20) == 0
    with pytest.raises(ValueError, match="out_dir is required"):
        save_metric_plots(doc)


def test_save_metric_plots_eval_run_and_bare_metrics(tmp_path):
    out = tmp_path / "eval_run"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"checkpoint": "x/model_best_16.pdparams",
                                                  "final": fake_metrics(16, 0.4)}))
    assert [p.name for p in save_metric_plots(out)] == ["pr_curve.png", "precision_at_n.png"]
    assert len(save_metric_plots(fake_metrics(16, 0.4), tmp_path / "bare")) == 2


def test_save_metric_plots_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json not found: .*nowhere"):
        save_metric_plots(tmp_path / "nowhere" / "metrics.json")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text('{"final": {"map": 0.5}}')
    with pytest.raises(ValueError, match=r"bad/metrics.json: no 'pr_curve' list"):
        save_metric_plots(bad / "metrics.json")
    (bad / "metrics.json").write_text('{"final": \n oops}')
    with pytest.raises(ValueError, match=r"bad/metrics.json, line 2: not valid JSON"):
        save_metric_plots(bad)


def test_plots_command_draws_a_finished_runs_figures_and_names_a_folder_without_metrics(tmp_path, capsys):
    """python -m utils.hashing.plots RUN_DIR: the figures of a run trained with --plots false, drawn afterwards."""
    from utils.hashing import plots
    run = make_run(tmp_path, "coco_32bits", 32)
    plots.main([str(run)])
    names = ("pr_curve.png", "precision_at_n.png", "training_curve.png")
    for name in names:
        assert_png(run / name)
    assert capsys.readouterr().out == f"{run}: {', '.join(str(run / name) for name in names)}\n"
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    missing = rf"^python -m utils.hashing.plots: metrics.json not found: {empty}/metrics.json$"
    with pytest.raises(SystemExit) as exit_info:
        plots.main([str(empty)])
    assert exit_info.value.code == 2  # a user error (utils/runtime/failure.py)
    assert re.match(missing, capsys.readouterr().err.strip())


def test_load_epochs_last_row_of_an_epoch_wins_and_bad_lines_are_named(tmp_path):
    rows = ['{"epoch": 2, "loss": 9}', '{"epoch": 1, "loss": 1}', "", '{"epoch": 2, "loss": 2}']
    (tmp_path / "epochs.jsonl").write_text("\n".join(rows) + "\n")
    assert load_epochs(tmp_path) == [{"epoch": 1, "loss": 1}, {"epoch": 2, "loss": 2}]
    (tmp_path / "epochs.jsonl").write_text('{"epoch": 1, "loss": 1}\n{"loss": 2}\n')
    with pytest.raises(ValueError, match=r"epochs.jsonl, line 2: expected an object with an 'epoch' key"):
        load_epochs(tmp_path)


def test_precision_at_n_points_accepts_int_and_str_keys():
    assert precision_at_n_points({"precision_at_n": {"500": 0.5, 100: 0.75}}) == [(100, 0.75), (500, 0.5)]


# ---------------------------------------------------------------------------------------------------- report.py
def table_lines(text):
    """The rows of the per-run table (after the '## Runs' heading when the report has a Table 1 before it)."""
    if "\n## Runs\n" in text:
        text = text.split("\n## Runs\n", 1)[1]
    return [line for line in text.splitlines() if line.startswith("|")]


def paper_table_lines(text):
    """The rows of the report's Table 1 (the paper's three datasets)."""
    section = text.split("## Table 1: the paper's three datasets\n", 1)[1].split("\n## Runs\n", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def test_report_on_coco_runs(tmp_path):
    runs = tmp_path / "output"
    make_run(runs, "coco_64bits", 64, final_map=0.70123, best_map=0.71234)
    make_run(runs, "coco_16bits", 16, final_map=0.61234, best_map=0.62)
    make_run(runs, "coco_32bits", 32, final_map=0.65)
    out = tmp_path / "report"
    path = report.main(["--runs", str(runs / "coco_64bits"), str(runs / "coco_16bits"), str(runs / "coco_32bits"),
                        "--out", str(out)])
    assert path == out / "report.md"
    text = path.read_text()
    lines = table_lines(text)
    assert lines[0] == "|  | 16 bits | 32 bits | 64 bits |"
    assert "| **mAP@K, final epoch** (no selection: the honest number) | 0.6123 (epoch 150) | 0.6500 (epoch 150) " \
           "| 0.7012 (epoch 150) |" in lines
    assert "| mAP@K, best epoch (chosen on the query set: optimistic) | 0.6200 (epoch 130) | 0.6500 (epoch 150) " \
           "| 0.7123 (epoch 130) |" in lines
    assert "| mAP@K, queries with no relevant item in the top K excluded (final) | 0.6223 | 0.6600 | 0.7112 |" in lines
    assert "| tie-aware mAP@K (final) | 0.6103 | 0.6480 | 0.6992 |" in lines
    assert "| precision within Hamming radius 2 (final) | 0.6623 | 0.7000 | 0.7512 |" in lines
    assert "| queries with nothing within radius 2, counted as precision 0 (final) | 12.5% | 12.5% | 12.5% |" in lines
    assert "| reference: HashNet paper (ICCV 2017, Table 1) | 0.6873 | 0.7184 | 0.7362 |" in lines
    assert "| reference: seed README, \"Paper results\" row | 0.622 | 0.682 | 0.727 |" in lines
    assert "| reference: seed's PaddlePaddle reproduction (best checkpoint) | 0.619 | 0.682 | 0.734 |" in lines
    assert "0.7301" not in "\n".join(lines)  # no 48-bit run, so no 48-bit reference in the per-run table
    assert "final epoch 150; best epoch 130 by mAP@5000 (best epoch chosen on the query set)." in text
    assert "**Final-epoch numbers involve no selection and are the honest ones.**" in text
    for name in report.FIGURES.values():
        assert f"]({name})" in text
        assert_png(out / name)


def test_report_finds_runs_in_a_parent_folder(tmp_path):
    runs = tmp_path / "output"
    for bits in (48, 16):
        make_run(runs, f"coco_{bits}bits", bits, final_map=0.6)
    out = runs / "report"  # the report folder inside the parent must not be taken for a run
    text = report.main(["--runs", str(runs), "--out", str(out)]).read_text()
    assert table_lines(text)[0] == "|  | 16 bits | 48 bits |"
    assert "| reference: HashNet paper (ICCV 2017, Table 1) | 0.6873 | 0.7301 |" in table_lines(text)
    assert report.main(["--runs", str(runs), "--out", str(out)]).is_file()  # a second report over the same parent


def test_report_on_toy_runs_has_no_reference_rows(tmp_path):
    make_run(tmp_path, "toy_a", 32, dataset="toy", final_map=0.51552)
    make_run(tmp_path, "toy_b", 32, dataset="toy", final_map=0.4)
    text = report.main(["--runs", str(tmp_path / "toy_a"), str(tmp_path / "toy_b"),
                        "--out", str(tmp_path / "r")]).read_text()
    lines = table_lines(text)
    assert lines[0] == "|  | 32 bits (`toy_a`) | 32 bits (`toy_b`) |"
    assert "| **mAP@K, final epoch** (no selection: the honest number) | 0.5155 (epoch 150) | 0.4000 (epoch 150) |" \
        in lines
    assert "reference:" not in text and "0.7184" not in text
    assert "are for MS-COCO (mAP@5000); these runs are on `toy`, so they are not shown." in text


def test_report_mixed_datasets_and_k_warning(tmp_path):
    make_run(tmp_path, "coco_16bits", 16, topk=1000)
    make_run(tmp_path, "toy_16", 16, dataset="toy")
    text = report.main(["--runs", str(tmp_path), "--out", str(tmp_path / "r")]).read_text()
    assert "| reference: HashNet paper (ICCV 2017, Table 1) | 0.6873 | n/a (not in the paper) |" in table_lines(text)
    assert "| reference: seed README, \"Paper results\" row | 0.622 | n/a (not COCO) |" in table_lines(text)
    assert "uses mAP@1000, not mAP@5000: not comparable with the reference rows" in text


def test_report_eval_run_column(tmp_path):
    run_dir = tmp_path / "coco_64bits_eval"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps({"checkpoint": "output/coco_64bits/model_best_64.pdparams",
                                                      "final": fake_metrics(64, 0.73)}))
    (run_dir / "config.json").write_text(json.dumps({"bit": 64, "dataset": "coco", "eval": True}))
    lines = table_lines(report.main(["--runs", str(run_dir), "--out", str(tmp_path / "r")]).read_text())
    assert "| **mAP@K, final epoch** (no selection: the honest number) | 0.7300 (eval of `model_best_64.pdparams`) |" \
        in lines
    assert "| mAP@K, best epoch (chosen on the query set: optimistic) | — |" in lines


def test_report_names_a_run_folder_without_metrics(tmp_path):
    make_run(tmp_path / "output", "coco_16bits", 16)
    unfinished = tmp_path / "output" / "coco_32bits"
    unfinished.mkdir()
    (unfinished / "config.json").write_text('{"bit": 32, "dataset": "coco"}')
    with pytest.raises(FileNotFoundError, match=r"run folder without metrics.json: .*output/coco_32bits \("):
        report.main(["--runs", str(unfinished), "--out", str(tmp_path / "r")])
    with pytest.raises(FileNotFoundError, match=r"run folder without metrics.json: .*output/coco_32bits \("):
        report.main(["--runs", str(tmp_path / "output"), "--out", str(tmp_path / "r")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"--runs .*empty: no metrics.json in this folder or its subfolders"):
        report.main(["--runs", str(empty), "--out", str(tmp_path / "r")])
    with pytest.raises(FileNotFoundError, match=r"--runs .*missing: no such folder"):
        report.main(["--runs", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


def test_report_command_line_error_is_one_line(tmp_path):
    import subprocess
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "report.py"), "--runs", str(empty),
                             "--out", str(tmp_path / "r")], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("report.py: error: --runs ") and "Traceback" not in result.stderr


def test_report_warns_when_a_coco_run_is_not_at_protocol_scale(tmp_path):
    small = make_run(tmp_path, "coco_small", 64)
    full = make_run(tmp_path, "coco_full", 32)
    doc = json.loads((full / "metrics.json").read_text())
    doc["final"] = fake_metrics(32, 0.7, num_query=5000, num_database=112217)
    (full / "metrics.json").write_text(json.dumps(doc))
    text = report.main(["--runs", str(small), str(full), "--out", str(tmp_path / "r")]).read_text()
    assert f"`{small}` has 100 queries and 900 database images, not the protocol's 5000 / over 100,000" in text
    assert f"`{full}` has" not in text


# --------------------------------------------------------------------------------------- Table 1: three datasets
def make_protocol_run(root, name, bits, dataset, final_map, topk, num_train, num_database):
    """A run at the paper's protocol scale (5,000 queries), with the training-set size recorded."""
    run_dir = make_run(root, name, bits, dataset=dataset, final_map=final_map, best_map=final_map + 0.01, topk=topk)
    doc = json.loads((run_dir / "metrics.json").read_text())
    for key in ("final", "best"):
        doc[key].update(num_query=5000, num_database=num_database, num_train=num_train)
    (run_dir / "metrics.json").write_text(json.dumps(doc))
    return run_dir


def test_report_table_1_three_datasets_four_bit_widths(tmp_path):
    runs = tmp_path / "output"
    make_protocol_run(runs, "imagenet_16bits", 16, "imagenet", 0.51234, 1000, 13000, 128495)
    make_protocol_run(runs, "imagenet_64bits", 64, "imagenet", 0.68, 1000, 13000, 128495)
    make_protocol_run(runs, "imagenet_64bits_k5000", 64, "imagenet", 0.6, 5000, 13000, 128495)  # wrong K
    make_protocol_run(runs, "nuswide_81_48bits", 48, "nuswide_81", 0.55, 5000, 10000, 193734)
    make_protocol_run(runs, "coco_32bits", 32, "coco", 0.70, 5000, 10000, 112217)
    evaluated = runs / "coco_32bits_eval"
    evaluated.mkdir()
    (evaluated / "metrics.json").write_text(json.dumps({"checkpoint": "output/coco_32bits/model_best_32.pdparams",
                                                        "final": fake_metrics(32, 0.71, num_query=5000,
                                                                              num_database=112217)}))
    (evaluated / "config.json").write_text(json.dumps({"bit": 32, "dataset": "coco", "eval": True}))
    make_run(runs, "toy_32bits", 32, dataset="toy", topk=-1)  # not in the paper: in the per-run table only
    text = report.main(["--runs", str(runs), "--out", str(tmp_path / "r")]).read_text()
    assert text.index("## Table 1: the paper's three datasets") < text.index("## Runs")
    assert paper_table_lines(text) == [
        "| dataset · metric |  | 16 bits | 32 bits | 48 bits | 64 bits |",
        "|---|---|---|---|---|---|",
        "| **ImageNet-100** · mAP@1000 | HashNet paper (ICCV 2017, Table 1) | 0.5059 | 0.6306 | 0.6633 | 0.6835 |",
        "|  | **this project, final epoch** | 0.5123 | — | — | 0.6800 / 0.6000 † |",
        "|  | this project, final epoch, zero-hit queries left out (HashNet's test rule) | 0.5223 | — | — | "
        "0.6900 / 0.6100 † |",
        "|  | this project, best epoch (query-set selected) | 0.5223 | — | — | 0.6900 / 0.6100 † |",
        "| **NUS-WIDE-81** · mAP@5000 | HashNet paper (ICCV 2017, Table 1) | 0.6623 | 0.6988 | 0.7114 | 0.7163 |",
        "|  | **this project, final epoch** | — | — | 0.5500 | — |",
        "|  | this project, final epoch, zero-hit queries left out (HashNet's test rule) | — | — | 0.5600 | — |",
        "|  | this project, best epoch (query-set selected) | — | — | 0.5600 | — |",
        "| **MS-COCO** · mAP@5000 | HashNet paper (ICCV 2017, Table 1) | 0.6873 | 0.7184 | 0.7301 | 0.7362 |",
        "|  | seed README, \"Paper results\" row | 0.622 | 0.682 | 0.715 | 0.727 |",
        "|  | seed's PaddlePaddle reproduction (best checkpoint) | 0.619 | 0.682 | 0.715 | 0.734 |",
        "|  | **this project, final epoch** | — | 0.7000 | — | — |",
        "|  | this project, final epoch, zero-hit queries left out (HashNet's test rule) | — | 0.7100 | — | — |",
        "|  | this project, best epoch (query-set selected) | — | 0.7100 | — | — |",
        "|  | this project, `--eval` of a checkpoint | — | 0.7100 | — | — |",
    ]
    assert ("- ImageNet-100 (mAP@1000): 13,000 / 5,000 / 128,495 (`imagenet_16bits`, `imagenet_64bits`, "
            "`imagenet_64bits_k5000`); paper: 13,000 / 5,000 / upstream database.txt") in text
    assert ("- NUS-WIDE-81 (mAP@5000): 10,000 / 5,000 / 193,734 (`nuswide_81_48bits`); paper: 10,000 / 5,000 / "
            "upstream database.txt") in text
    assert ("- MS-COCO (mAP@5000): 10,000 / 5,000 / 112,217 (`coco_32bits`); ? / 5,000 / 112,217 "
            "(`coco_32bits_eval`); paper: 10,000 / 5,000 / over 100,000") in text
    assert f"- † `{runs / 'imagenet_64bits_k5000'}`: mAP@5000, not mAP@1000." in text
    assert f"- † `{evaluated}`" not in text  # an unknown training-set size is not held against a run


def test_report_table_1_shows_missing_datasets_as_such(tmp_path):
    make_protocol_run(tmp_path, "nuswide_81_16bits", 16, "nuswide_81", 0.6, 5000, 10000, 193734)
    text = report.main(["--runs", str(tmp_path / "nuswide_81_16bits"), "--out", str(tmp_path / "r")]).read_text()
    rows = paper_table_lines(text)
    assert "|  | **this project, final epoch** | — | — | — | — |" in rows  # ImageNet and COCO: no run
    assert "|  | **this project, final epoch** | 0.6000 | — | — | — |" in rows
    assert "- ImageNet-100 (mAP@1000): no run (paper: 13,000 / 5,000 / upstream database.txt)" in text
    assert "- MS-COCO (mAP@5000): no run (paper: 10,000 / 5,000 / over 100,000)" in text
    assert "| reference: HashNet paper (ICCV 2017, Table 1) | 0.6623 |" in table_lines(text)
    assert not [row for row in rows if "†" in row]


def test_report_shows_paper_recipe_runs_beside_the_seed_recipe(tmp_path):
    """A --recipe paper run gets its own Table 1 rows (the project's metric and the authors' evaluation rule) and a
    recipe cell in the per-run table; the seed recipe's rows keep only seed-recipe runs."""
    runs = tmp_path / "output"
    make_protocol_run(runs, "coco_48bits", 48, "coco", 0.70, 5000, 10000, 112217)
    paper = make_protocol_run(runs, "coco_48bits_paper", 48, "coco", 0.72, 5000, 10000, 112217)
    config = json.loads((paper / "config.json").read_text())
    (paper / "config.json").write_text(json.dumps(dict(config, recipe="paper", backbone="caffenet")))
    metrics = json.loads((paper / "metrics.json").read_text())
    metrics["final"]["map_paper_rule"] = 0.7312
    (paper / "metrics.json").write_text(json.dumps(metrics))
    text = report.main(["--runs", str(runs), "--out", str(tmp_path / "r")]).read_text()
    rows = paper_table_lines(text)
    assert "|  | **this project, final epoch** | — | — | 0.7000 | — |" in rows
    assert "|  | **this project, paper recipe, final iteration** | — | — | 0.7200 [caffenet] | — |" in rows
    assert ("|  | this project, paper recipe, the authors' evaluation rule (map_paper_rule) | — | — | "
            "0.7312 [caffenet] | — |") in rows
    assert "| recipe (docs/protocol.md#seed-recipe, #paper-recipe) | seed | paper |" in text


def test_the_report_and_the_metrics_are_split_into_modules_under_450_lines():
    """scripts/report.py reads runs, writes tables and draws figures in modules of their own, and the metrics keep
    mAP@K, the tie-aware AP and the authors' rule apart (no module over 450 lines)."""
    paths = [*(REPO / "scripts").glob("report*.py"), *(REPO / "utils" / "hashing").glob("*.py")]
    assert {p.name for p in paths} >= {"report.py", "report_runs.py", "report_tables.py", "report_figures.py",
                                       "metrics.py", "relevance.py", "tie_aware.py", "paper_rule.py"}
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in paths}
    assert max(sizes.values()) <= 450, sizes
