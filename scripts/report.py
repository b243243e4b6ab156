"""Markdown report over several runs (one column per bit width) with paper-style figures.

    python scripts/report.py --runs output/coco_16bits output/coco_32bits output/coco_48bits output/coco_64bits
    python scripts/report.py --runs output --out output/report      # a parent folder: every run inside it

Runs on the paper's datasets (imagenet, nuswide_81, coco) also fill "Table 1": the paper's three datasets x four
bit widths, HashNet's published mAP beside this project's, each dataset under its own metric (mAP@1000 for
ImageNet, mAP@5000 for NUS-WIDE and MS-COCO), cells without a run shown as such, and each dataset's protocol line
(train / query / database sizes of the lists the runs used).

Runs of several --method values (scripts/compare_methods.sh, docs/methods.md) add the comparison first: Table 1 with
every method of the paper as a row, the ablation table, the times and the figures across methods
(scripts/report_methods.py, scripts/report_method_figures.py, the published cells in scripts/report_paper_numbers.py);
the sections below then cover HashNet's own runs.

Writes <out>/report.md and, next to it, precision_radius2_vs_bits.png, map_vs_bits.png,
precision_at_n_curves.png and pr_curves.png. Reads each run folder's metrics.json and config.json (and, for the
comparison's histograms and t-SNE maps, query_outputs_{bit}.npz), so it runs without Paddle. The pieces:
scripts/report_runs.py (the run folders and the published numbers), scripts/report_tables.py (the Markdown tables and
notes), scripts/report_figures.py (the figures).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python scripts/report.py` from anywhere
from scripts.report_figures import FIGURES, write_figures  # noqa: E402
from scripts.report_method_figures import write_method_figures  # noqa: E402
from scripts.report_methods import build_comparison_section, comparison_groups  # noqa: E402
from scripts.report_runs import find_runs  # noqa: E402
from scripts.report_tables import build_notes, build_paper_section, build_table  # noqa: E402
from utils.hashing.plots import PR_RADIUS, atomic_write_bytes  # noqa: E402
from utils.runtime.failure import USER_ERROR_EXIT  # noqa: E402


def build_report(runs, method_figures=None):
    """The text of report.md: with runs of several methods (--method), the comparison first (scripts/report_methods.py,
    its figures `method_figures` from write_method_figures), then HashNet's runs as before."""
    compared = len({r.method for r in runs}) > 1
    comparison = [build_comparison_section(runs), ""] if compared else []
    for (dataset, recipe), figures in (method_figures or {}).items():
        comparison += [f"### Figures · {dataset} · {recipe} recipe", ""]
        comparison += [f"![{caption}]({name})" for caption, name in figures] + [""]
    if compared:
        comparison += ["The t-SNE maps need scikit-learn (`pip install -r requirements-report.txt`)." if not any(
            name.endswith("_tsne.png") for figures in (method_figures or {}).values() for _, name in figures)
            else "", ""]
    runs = [r for r in runs if r.method == "hashnet"]
    if not runs:
        return "\n".join(["# HashNet (PaddlePaddle) retrieval results", "", *comparison])
    figures = "\n".join([
        f"![precision within Hamming radius {PR_RADIUS} vs bits]({FIGURES['precision_radius']})",
        f"![mAP@K vs bits]({FIGURES['map']})",
        f"![precision@N, one line per bit width]({FIGURES['precision_at_n']})",
        f"![precision-recall over Hamming radii, one line per bit width]({FIGURES['pr']})",
    ])
    return "\n".join([
        "# HashNet (PaddlePaddle) retrieval results",
        "",
        *comparison,
        *(["# HashNet's runs", ""] if compared else []),
        *([build_paper_section(runs), "", "## Runs", ""] if any(r.protocol is not None for r in runs) else []),
        "Columns: one per run, ordered by bit width. Numbers of this project use 4 decimals; reference rows "
        "keep the digits as published.",
        "",
        build_table(runs),
        "",
        build_notes(runs),
        "",
        "## Figures",
        "",
        "Lines versus bits show the final epoch (solid) and the query-set-selected best epoch (dashed); the "
        "P@N and PR curves show the final epoch.",
        "",
        figures,
        "",
    ])


def parse_args(argv=None):
    """The command line: --runs (run folders or their parents) and --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True,
                        help="run folders (holding metrics.json) and/or parent folders of run folders")
    parser.add_argument("--out", default="output/report", help="folder for report.md and the figures")
    return parser.parse_args(argv)


def main(argv=None):
    """Write <out>/report.md and its figures; returns the report path."""
    args = parse_args(argv)
    runs = find_runs(args.runs)
    out_dir = Path(args.out)
    hashnet = [r for r in runs if r.method == "hashnet"]
    if hashnet:
        write_figures(hashnet, out_dir)
    method_figures = write_method_figures(comparison_groups(runs), out_dir) if len({r.method for r in runs}) > 1 \
        else None
    text = build_report(runs, method_figures)
    report = atomic_write_bytes(out_dir / "report.md", text.encode("utf-8"))
    print(text)
    print(f"written: {report}")
    return report


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:  # a run folder or file the user named: one line
        print(f"report.py: error: {e}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
