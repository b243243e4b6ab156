"""scripts/report.py over runs of several methods (docs/methods.md): Table 1 with every method of the paper as a row,
the paper's cells beside this project's (blank where not published), the ablation table, the times and the
comparison's figures, on synthetic run folders."""
import json

import numpy as np
import pytest

from test_plots_report import assert_png, make_run, report


def make_method_run(root, dataset, method, bits, final_map, train_time=12.5, outputs=True):
    run_dir = make_run(root, f"{dataset}_{bits}bits_{method}", bits, dataset=dataset, final_map=final_map,
                       topk=1000 if dataset == "imagenet" else 5000, epochs=False)
    config = json.loads((run_dir / "config.json").read_text())
    config.update(method=method, recipe="seed")
    (run_dir / "config.json").write_text(json.dumps(config))
    doc = json.loads((run_dir / "metrics.json").read_text())
    doc.update(method=method, train_time=train_time, scale=2.0)
    (run_dir / "metrics.json").write_text(json.dumps(doc))
    if outputs:
        rng = np.random.default_rng(bits)
        labels = np.eye(5, dtype=np.uint8)[rng.integers(0, 5, 60)]
        np.savez(run_dir / f"query_outputs_{bits}.npz", outputs=rng.standard_normal((60, bits)).astype(np.float32),
                 labels=labels)
    return run_dir


def section(text, heading):
    start = text.index(heading)
    end = text.find("\n**", start + len(heading))
    return text[start:end]


def test_table_1_has_every_method_with_the_papers_cells_beside_ours(tmp_path):
    runs = tmp_path / "output"
    make_method_run(runs, "imagenet", "itq", 16, 0.4)
    make_method_run(runs, "imagenet", "itq", 64, 0.55)
    make_method_run(runs, "imagenet", "hashnet", 64, 0.66, train_time=300.0)
    make_method_run(runs, "imagenet", "dhn", 64, 0.6)
    make_method_run(runs, "imagenet", "hashnet-w", 64, 0.61)
    text = report.main(["--runs", str(runs), "--out", str(tmp_path / "report")]).read_text()
    table = section(text, "**Table 1**")
    assert "| method | 16 bits | 64 bits |" in table
    assert "| LSH | (0.101) | (0.360) |" in table  # not run here: the paper's number alone
    assert "| ITQ | 0.4000 (0.326) | 0.5500 (0.552) |" in table
    assert "| SDH |  |  |" in table  # neither run nor read: blank, never estimated
    assert "| DHN | (0.311) | 0.6000 (0.573) |" in table
    assert "| HashNet | (0.5059) | 0.6600 (0.6835) |" in table
    assert [line.split(" |")[0] for line in table.splitlines() if line.startswith("| ") and "bits" not in line] == [
        "| LSH", "| SH", "| ITQ", "| ITQ-CCA", "| BRE", "| KSH", "| SDH", "| CNNH", "| DNNH", "| DHN", "| HashNet"]
    ablation = section(text, "**The ablation**")
    assert "| HashNet-W |  | 0.6100 |" in ablation and "| HashNet-sgn |  |  |" in ablation
    times = section(text, "**Seconds**")
    assert "| HashNet |  | 300.0 |" in times and "| ITQ | 12.5 | 12.5 |" in times
    assert "Hindawi am/2017/8961091 Table 3" in text
    # HashNet's own runs still get the sections of before, and only they
    assert "# HashNet's runs" in text and "`imagenet_64bits_dhn`" not in text.split("# HashNet's runs")[1]
    for stem in ("radius", "pr", "precision_at_n", "hist"):
        assert f"(imagenet_seed_{stem}.png)" in text
        assert_png(tmp_path / "report" / f"imagenet_seed_{stem}.png")


def test_a_dataset_outside_the_paper_has_no_published_cells(tmp_path):
    runs = tmp_path / "output"
    make_method_run(runs, "toy", "itq", 16, 0.4, outputs=False)
    make_method_run(runs, "toy", "hashnet", 16, 0.5, outputs=False)
    text = report.main(["--runs", str(runs), "--out", str(tmp_path / "report")]).read_text()
    assert "### toy · seed recipe · mAP@5000 (not a dataset of the paper: no published numbers)" in text
    table = section(text, "**Table 1**")
    assert "| ITQ | 0.4000 |" in table and "| LSH |  |" in table and "(" not in table.replace("(no", "")
    assert "_hist.png" not in text  # no saved outputs: no histogram, rather than an empty one


def test_the_tsne_maps_of_hashnet_and_dhn(tmp_path):
    """With scikit-learn (requirements-report.txt) the comparison maps the queries' codes of HashNet and DHN."""
    pytest.importorskip("sklearn", reason="scikit-learn (requirements-report.txt) draws the t-SNE maps")
    runs = tmp_path / "output"
    for method in ("hashnet", "dhn", "itq"):
        make_method_run(runs, "coco", method, 32, 0.5)
    text = report.main(["--runs", str(runs), "--out", str(tmp_path / "report")]).read_text()
    assert "![t-SNE of the binary codes at 32 bits](coco_seed_tsne.png)" in text
    assert_png(tmp_path / "report" / "coco_seed_tsne.png")
