"""The figures of scripts/report.py: precision within the Hamming radius and mAP against bits (with the reference
lines), and every run's precision@N and precision-recall curves."""
from __future__ import annotations

from models.backbones import DEFAULT_BACKBONE  # imports no Paddle
from scripts.report_runs import PAPER_BITS, PAPER_DATASETS, RADIUS_KEY, REFERENCE_DATASET, REFERENCE_ROWS
from utils.hashing.plots import (
    PR_RADIUS,
    draw_pr_curve,
    finish_pr_axes,
    new_figure,
    precision_at_n_points,
    save_figure,
)

REFERENCE_STYLES = [("black", "x"), ("tab:purple", "^"), ("tab:brown", "s")]
FIGURES = {
    "precision_radius": "precision_radius2_vs_bits.png",
    "map": "map_vs_bits.png",
    "precision_at_n": "precision_at_n_curves.png",
    "pr": "pr_curves.png",
}


# -------------------------------------------------------------------------------------------------------- figures
def _group_name(run):
    """What tells a run's line apart in the versus-bits plots: its dataset, and its backbone unless AlexNet."""
    name = run.dataset if run.backbone == DEFAULT_BACKBONE else f"{run.dataset}, {run.backbone}"
    return name if run.recipe == "seed" else f"{name}, paper recipe"


def _by_dataset(runs):
    """Runs with a known bit width grouped by dataset and backbone (one line per group in the versus-bits plots)."""
    groups = {}
    for r in runs:
        if r.bits is not None:
            groups.setdefault(_group_name(r), []).append(r)
    return groups


def _versus_bits_plot(runs, key, ylabel, title, path, with_reference=False):
    """Plot one metric against bits (final and best epoch, optionally references); returns the file."""
    fig, ax = new_figure()
    groups = _by_dataset(runs)
    for i, (dataset, group) in enumerate(sorted(groups.items())):
        suffix = f" ({dataset})" if len(groups) > 1 else ""
        color = f"C{i}"
        final = [(r.bits, r.final[key]) for r in group if r.final.get(key) is not None]
        best = [(r.bits, r.best[key]) for r in group if r.best is not None and r.best.get(key) is not None]
        for points, label, style in ((final, "final epoch", "-"), (best, "best epoch (query-set selected)", "--")):
            if points:
                points.sort()
                ax.plot([b for b, _ in points], [v for _, v in points], marker="o", linestyle=style, color=color,
                        label=label + suffix)
    if with_reference and any(r.is_reference_setting for r in runs):
        for (label, values), (color, marker) in zip(REFERENCE_ROWS, REFERENCE_STYLES):
            bits = sorted(values)
            ax.plot(bits, [float(values[b]) for b in bits], color=color, linestyle=":", marker=marker,
                    label=f"reference: {label}" + (" (coco)" if len(groups) > 1 else ""))
    if with_reference:  # the paper's line of every other dataset of Table 1, in that dataset's colour
        drawn = set()
        for i, (name, group) in enumerate(sorted(groups.items())):
            dataset = group[0].dataset
            spec = PAPER_DATASETS.get(dataset)
            if spec is not None and dataset != REFERENCE_DATASET and dataset not in drawn:
                drawn.add(dataset)
                ax.plot(PAPER_BITS, [float(spec["paper"][b]) for b in PAPER_BITS], color=f"C{i}", linestyle=":",
                        marker="x", label=f"reference: HashNet paper ({dataset}, mAP@{spec['topk']})")
    all_bits = sorted({r.bits for r in runs if r.bits is not None})
    ax.set_xticks(all_bits)
    ax.set_xlabel("bits")
    ax.set_ylabel(ylabel)
    # zoomed to the data (as in the papers' figures): on a 0..1 axis the bit widths are indistinguishable
    low, high = ax.get_ylim()
    ax.set_ylim(max(0.0, low - 0.05), min(1.0, high + 0.05))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def _run_label(run, runs):
    """A run's legend label: bits, plus the dataset when datasets mix and the name when bits repeat."""
    same_bits = sum(1 for r in runs if r.bits == run.bits) > 1
    mixed = len({r.dataset for r in runs}) > 1
    label = f"{run.bits} bits"
    if mixed:
        label += f" {run.dataset}"
    if len({r.backbone for r in runs}) > 1:
        label += f" {run.backbone}"
    return f"{label} ({run.name})" if same_bits else label


def _datasets_title(runs):
    """The runs' datasets, for figure titles."""
    return ", ".join(sorted({r.dataset for r in runs}))


def _pn_curves(runs, path):
    """Plot every run's final-epoch precision@N curve; returns the file."""
    fig, ax = new_figure()
    for i, r in enumerate(runs):
        points = precision_at_n_points(r.final, f"{r.path / 'metrics.json'}")
        ax.plot([n for n, _ in points], [p for _, p in points], marker="o", markersize=4, color=f"C{i % 10}",
                label=_run_label(r, runs))
    ax.set_xlabel("N (top N of the Hamming ranking)")
    ax.set_ylabel("precision@N")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"Precision@N, final epoch · HashNet · {_datasets_title(runs)}", fontsize=10)
    return save_figure(fig, path)


def _pr_curves(runs, path):
    """Plot every run's final-epoch precision-recall curve over Hamming radii; returns the file."""
    fig, ax = new_figure()
    for i, r in enumerate(runs):
        draw_pr_curve(ax, r.final, _run_label(r, runs), {"color": f"C{i % 10}", "linestyle": "-"},
                      f"{r.path / 'metrics.json'}", mark_label=False, annotate=False)
    ax.plot([], [], marker="o", markersize=9, markerfacecolor="none", markeredgewidth=2, color="black",
            linestyle="none", label=f"Hamming radius {PR_RADIUS}")
    finish_pr_axes(ax, f"Precision-recall over Hamming radii, final epoch · HashNet · {_datasets_title(runs)}")
    return save_figure(fig, path)


def write_figures(runs, out_dir):
    """Write the report's four figures into out_dir; returns their paths."""
    title_tail = f"HashNet · {_datasets_title(runs)}"
    return [
        _versus_bits_plot(runs, RADIUS_KEY, f"precision within Hamming radius {PR_RADIUS}",
                          f"Precision within Hamming radius {PR_RADIUS} vs bits · {title_tail}",
                          out_dir / FIGURES["precision_radius"]),
        _versus_bits_plot(runs, "map", "mAP@K", f"mAP@K vs bits · {title_tail}", out_dir / FIGURES["map"],
                          with_reference=True),
        _pn_curves(runs, out_dir / FIGURES["precision_at_n"]),
        _pr_curves(runs, out_dir / FIGURES["pr"]),
    ]

