"""The comparison's figures (scripts/report.py, docs/methods.md#figures), as the paper draws them, for each dataset and
recipe the runs cover: precision within Hamming radius 2 against bits (one line per method), precision-recall and
precision@N curves at the widest code (64 bits in the paper), histograms of the continuous codes (HashNet beside DHN)
and t-SNE maps of the binary codes (scikit-learn, an optional extra: requirements-report.txt).

The histograms and maps read each run's query_outputs_{bit}.npz (the queries' raw outputs and labels at its last
evaluation); a run without it (from before 2026-12-06) is left out of them.
"""
from __future__ import annotations

import numpy as np

from scripts.report_runs import RADIUS_KEY
from utils.config.methods import HASHNET_VARIANTS, METHODS, SHALLOW_BASELINES, method_title
from utils.hashing.plots import PR_RADIUS, draw_pr_curve, finish_pr_axes, new_figure, precision_at_n_points, save_figure

HISTOGRAM_METHODS = ("hashnet", "dhn")  # the paper's histogram figure sets these two side by side
TSNE_MAX_POINTS = 2000  # queries per map: t-SNE's time grows with their square


def continuous_codes(run, outputs):
    """What HashNet's and DHN's networks give before the sign (the histogram's values): tanh(scale x) at the run's
    final scale (metrics.json "scale"; DHN's is 1)."""
    return np.tanh(float(run.doc.get("scale") or 1.0) * outputs)


def query_outputs(run):
    """(outputs, labels) of the run's queries at its last evaluation, or None."""
    path = run.path / f"query_outputs_{run.bits}.npz"
    if not path.is_file():
        return None
    with np.load(path) as data:
        return data["outputs"].astype(np.float64), data["labels"]


def _methods_in(runs):
    return [m for m in METHODS if any(r.method == m for r in runs)]


def _style(method):
    """One colour per method, the same in every figure: tab20's ten dark colours, then its ten light ones (ten colours
    would repeat across 14 methods); HashNet's variants dashed, the shallow baselines dotted."""
    from matplotlib import colormaps

    index = METHODS.index(method)
    if method in HASHNET_VARIANTS[1:]:
        linestyle = "--"
    elif method in SHALLOW_BASELINES:
        linestyle = ":"
    else:
        linestyle = "-"
    return {"color": colormaps["tab20"]((2 * index) % 20 + (2 * index) // 20 % 2), "linestyle": linestyle}


def _radius_vs_bits(runs, title, path):
    fig, ax = new_figure(7.0, 4.6)
    for method in _methods_in(runs):
        points = sorted((r.bits, r.final[RADIUS_KEY]) for r in runs if r.method == method
                        and r.final.get(RADIUS_KEY) is not None)
        if points:
            ax.plot([b for b, _ in points], [v for _, v in points], marker="o", label=method_title(method),
                    **_style(method))
    ax.set_xticks(sorted({r.bits for r in runs}))
    ax.set_xlabel("bits")
    ax.set_ylabel(f"precision within Hamming radius {PR_RADIUS}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def _at_widest(runs):
    widest = max(r.bits for r in runs)
    chosen = {}
    for r in sorted(runs, key=lambda r: r.name):
        if r.bits == widest:
            chosen.setdefault(r.method, r)  # one run per method: the first by name
    return widest, [chosen[m] for m in _methods_in(runs) if m in chosen]


def _pr(runs, title, path):
    fig, ax = new_figure(7.0, 4.6)
    for r in runs:
        draw_pr_curve(ax, r.final, method_title(r.method), _style(r.method), str(r.path / "metrics.json"),
                      mark_label=False, annotate=False)
    finish_pr_axes(ax, title)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def _pn(runs, title, path):
    fig, ax = new_figure(7.0, 4.6)
    for r in runs:
        points = precision_at_n_points(r.final, str(r.path / "metrics.json"))
        ax.plot([n for n, _ in points], [p for _, p in points], marker="o", markersize=3,
                label=method_title(r.method), **_style(r.method))
    ax.set_xlabel("N (top N of the Hamming ranking)")
    ax.set_ylabel("precision@N")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def _histograms(runs, title, path):
    shown = [(r, query_outputs(r)) for r in runs if r.method in HISTOGRAM_METHODS]
    shown = [(r, data) for r, data in shown if data is not None]
    if not shown:
        return None
    fig, ax = new_figure(7.0, 4.2)
    for r, (outputs, _) in shown:
        values = np.clip(continuous_codes(r, outputs).ravel(), -1.5, 1.5)  # outside the range: at its edge
        ax.hist(values, bins=100, range=(-1.5, 1.5), histtype="step", density=True, label=method_title(r.method),
                color=_style(r.method)["color"])
    ax.set_xlabel("continuous code of the queries (before the sign)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def _tsne(runs, title, path):
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        return None
    shown = [(r, query_outputs(r)) for r in runs if r.method in HISTOGRAM_METHODS]
    shown = [(r, data) for r, data in shown if data is not None]
    if not shown:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.2 * len(shown), 4.2), dpi=110)
    FigureCanvasAgg(fig)
    for i, (r, (outputs, labels)) in enumerate(shown):
        keep = np.random.default_rng(0).permutation(len(outputs))[:TSNE_MAX_POINTS]
        codes = np.where(outputs[keep] >= 0, 1.0, -1.0)
        points = TSNE(n_components=2, init="pca", random_state=0,
                      perplexity=min(30.0, max(2.0, (len(keep) - 1) / 3))).fit_transform(codes)
        ax = fig.add_subplot(1, len(shown), i + 1)
        # the first label of each query colours it (the paper's maps are of single-label ImageNet)
        ax.scatter(points[:, 0], points[:, 1], c=labels[keep].argmax(1), cmap="tab20", s=3)
        ax.set_title(f"{method_title(r.method)}, {r.bits} bits", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def write_method_figures(groups, out_dir):
    """The figures of each (dataset, recipe) group of runs; returns {group: [(caption, file name)]}."""
    written = {}
    for (dataset, recipe), runs in groups.items():
        runs = [r for r in runs if r.bits is not None]
        if not runs:
            continue
        stem, where = f"{dataset}_{recipe}", f"{dataset}, {recipe} recipe"
        widest, at_widest = _at_widest(runs)
        figures = [
            (f"precision within Hamming radius {PR_RADIUS} vs bits", _radius_vs_bits(
                runs, f"Precision within Hamming radius {PR_RADIUS} vs bits · {where}",
                out_dir / f"{stem}_radius.png")),
            (f"precision-recall over Hamming radii at {widest} bits", _pr(
                at_widest, f"Precision-recall, {widest} bits · {where}", out_dir / f"{stem}_pr.png")),
            (f"precision@N at {widest} bits", _pn(
                at_widest, f"Precision@N, {widest} bits · {where}", out_dir / f"{stem}_precision_at_n.png")),
            (f"histogram of the continuous codes at {widest} bits", _histograms(
                at_widest, f"Queries' codes before the sign, {widest} bits · {where}", out_dir / f"{stem}_hist.png")),
            (f"t-SNE of the binary codes at {widest} bits", _tsne(
                at_widest, f"t-SNE of the queries' codes · {where}", out_dir / f"{stem}_tsne.png")),
        ]
        written[(dataset, recipe)] = [(caption, path.name) for caption, path in figures if path is not None]
    return written
