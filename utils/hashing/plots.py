"""Figures of one run: PR curve over Hamming radii, precision@N, training curve (loss and mAP per epoch).

Reads what the engine writes in a run folder: ``metrics.json`` (training runs: {"final_epoch", "final",
"best_epoch", "best", ...}; ``--eval`` runs: {"checkpoint", "final"}), ``config.json`` (for the bit width and
dataset in titles) and ``epochs.jsonl`` (one row per epoch). Uses matplotlib's object API on an Agg canvas:
no pyplot, so no display is needed and the caller's matplotlib backend is left alone.
Paddle is not imported: making a report must not need the training stack.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from utils.runtime.fileio import atomic_write_bytes

__all__ = [
    "save_metric_plots", "load_metrics", "load_config", "load_epochs", "metric_views", "run_title",
    "precision_at_n_points", "new_figure", "save_figure", "atomic_write_bytes",
]

PR_RADIUS = 2
FINAL_STYLE = {"color": "tab:blue", "linestyle": "-"}
BEST_STYLE = {"color": "tab:orange", "linestyle": "--"}


# ------------------------------------------------------------------------------------------------------ reading
def _read_json(path, what):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from e


def load_metrics(path):
    """metrics.json of a run (path to the file or to its run folder) as a dict with a 'final' metrics dict."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    doc = _read_json(path, "metrics.json")
    return _normalise_metrics(doc, path)


def _normalise_metrics(doc, source):
    if not isinstance(doc, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(doc).__name__}")
    if "final" not in doc and "map" in doc:  # a bare retrieval_metrics dict
        doc = {"final": doc}
    if not isinstance(doc.get("final"), dict) or "map" not in doc["final"]:
        raise ValueError(f"{source}: expected key 'final' holding a metrics dict with 'map' (what the engine "
                         f"writes), found keys {sorted(doc)}")
    return doc


def load_config(run_dir):
    """config.json of a run folder, or {} when the folder has none (titles then omit what it would say)."""
    path = Path(run_dir) / "config.json"
    return _read_json(path, "config.json") if path.is_file() else {}


def load_epochs(run_dir):
    """Rows of epochs.jsonl sorted by epoch, [] when absent. A resumed run may repeat an epoch: the last row wins."""
    path = Path(run_dir) / "epochs.jsonl"
    if not path.is_file():
        return []
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {line_no}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict) or "epoch" not in row:
                raise ValueError(f"{path}, line {line_no}: expected an object with an 'epoch' key, "
                                 f"got {line.strip()[:80]}")
            rows[int(row["epoch"])] = row
    return [rows[e] for e in sorted(rows)]


def metric_views(doc):
    """[(label, metrics dict, epoch or None, style)] to draw: the final metrics, plus best if a different epoch."""
    final_epoch = doc.get("final_epoch")
    if final_epoch is None:
        final_label = "evaluated checkpoint" if doc.get("checkpoint") else "final"
    else:
        final_label = f"final epoch {final_epoch}"
    views = [(final_label, doc["final"], final_epoch, FINAL_STYLE)]
    best, best_epoch = doc.get("best"), doc.get("best_epoch")
    if isinstance(best, dict) and best_epoch is not None and best_epoch != final_epoch:
        views.append((f"best epoch {best_epoch} (chosen on the query set)", best, best_epoch, BEST_STYLE))
    return views


def run_bits(config, metrics):
    bits = config.get("bit", metrics.get("bits"))
    if bits is None and metrics.get("pr_curve"):
        bits = len(metrics["pr_curve"]) - 1
    return None if bits is None else int(bits)


def run_title(what, config, metrics, run_name=None):
    """'<what> · HashNet 64 bits · coco · run <name>', leaving out the parts that are unknown."""
    parts = [what]
    bits = run_bits(config, metrics)
    parts.append(f"HashNet {bits} bits" if bits is not None else "HashNet")
    if config.get("dataset"):
        parts.append(str(config["dataset"]))
    name = run_name or config.get("run_name")
    if name:
        parts.append(f"run {name}")
    return " · ".join(parts)


def precision_at_n_points(metrics, source="metrics"):
    """Sorted [(N, precision)] from metrics['precision_at_n'] (keys are str after a JSON round trip)."""
    table = metrics.get("precision_at_n")
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{source}: no 'precision_at_n' table (expected the output of retrieval_metrics)")
    try:
        return sorted((int(n), float(p)) for n, p in table.items())
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: 'precision_at_n' must map integer N to a number, got {table!r}") from e


def _pr_points(metrics, source):
    curve = metrics.get("pr_curve")
    if not isinstance(curve, list) or not curve:
        raise ValueError(f"{source}: no 'pr_curve' list (expected the output of retrieval_metrics)")
    try:
        return sorted((int(p["radius"]), float(p["precision"]), float(p["recall"])) for p in curve)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: 'pr_curve' entries must be {{radius, precision, recall}}, got {curve[0]!r}") from e


# ------------------------------------------------------------------------------------------------------ writing
def new_figure(width=6.4, height=4.4):
    # matplotlib is imported here, at the first figure, not with the module: a training process that draws nothing
    # (a rank other than 0, a run stopped before its end) then does not pay the ~0.7 s of CPU its import takes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def save_figure(fig, path):
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def draw_pr_curve(ax, metrics, label, style, source="metrics", mark_label=True, annotate=True):
    """Precision vs recall over Hamming radii 0..bits; the radius-2 point drawn as a big marker."""
    points = _pr_points(metrics, source)
    recall = [r for _, _, r in points]
    precision = [p for _, p, _ in points]
    ax.plot(recall, precision, marker=".", markersize=4, label=label, **style)
    at_radius = [(r, p) for d, p, r in points if d == PR_RADIUS]
    if at_radius:
        r, p = at_radius[0]
        ax.plot([r], [p], marker="o", markersize=9, markerfacecolor="none", markeredgewidth=2,
                color=style["color"], linestyle="none",
                label=f"Hamming radius {PR_RADIUS}" if mark_label else None)
        if annotate:
            ax.annotate(f"r ≤ {PR_RADIUS}: P = {p:.3g}, R = {r:.3g}", (r, p), xytext=(12, -4),
                        textcoords="offset points", fontsize=8, color=style["color"])


def _pr_plot(views, title, path, source):
    fig, ax = new_figure()
    for i, (label, metrics, _, style) in enumerate(views):
        draw_pr_curve(ax, metrics, label, style, source, mark_label=i == 0)
    finish_pr_axes(ax, title)
    return save_figure(fig, path)


def finish_pr_axes(ax, title):
    """Axes, limits, grid, legend and title shared by every precision-recall figure."""
    ax.set_xlabel("recall (items within Hamming radius r retrieved, r = 0 … bits)")
    ax.set_ylabel("precision")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=10)


def _pn_plot(views, title, path, source):
    fig, ax = new_figure()
    for label, metrics, _, style in views:
        points = precision_at_n_points(metrics, source)
        ax.plot([n for n, _ in points], [p for _, p in points], marker="o", markersize=4, label=label, **style)
    ax.set_xlabel("N (top N of the Hamming ranking)")
    ax.set_ylabel("precision@N")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def round_axis(rows, unit):
    """(the x value of each row, the axis label) in the run's unit: config.json's "unit" is "iteration" for the paper
    recipe, whose rows are blocks of --snapshot-every iterations (each row's "iteration" is the block's last one)."""
    if unit == "iteration" and all("iteration" in r for r in rows):
        return {r["epoch"]: r["iteration"] for r in rows}, "iteration"
    return {r["epoch"]: r["epoch"] for r in rows}, "epoch"


def _training_plot(rows, best_epoch, k, title, path, unit="epoch"):
    from matplotlib.ticker import MaxNLocator
    fig, ax = new_figure(7.0, 4.4)
    x_of, unit = round_axis(rows, unit)
    ax.plot([x_of[r["epoch"]] for r in rows], [r["loss"] for r in rows], color="tab:blue", label="training loss")
    ax.set_xlabel(unit)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole: no 1.2 epochs
    ax.set_ylabel("training loss", color="tab:blue")
    ax.tick_params(axis="y", labelcolor="tab:blue")
    ax.grid(alpha=0.3)
    handles = ax.get_lines()[:]
    evaluated = [r for r in rows if r.get("map") is not None]
    if evaluated:
        ax2 = ax.twinx()
        e = [x_of[r["epoch"]] for r in evaluated]
        handles += ax2.plot(e, [r["map"] for r in evaluated], color="tab:red", marker="o", markersize=4,
                            label=f"mAP@{k or 'K'} (query set)")
        random_rows = [r for r in evaluated if r.get("map_random_codes") is not None]
        if random_rows:
            handles += ax2.plot([x_of[r["epoch"]] for r in random_rows], [r["map_random_codes"] for r in random_rows],
                                color="grey", linestyle=":", label=f"mAP@{k or 'K'} of random codes")
        best = [r for r in evaluated if r["epoch"] == best_epoch]
        if best:
            handles += ax2.plot([x_of[best_epoch]], [best[0]["map"]], marker="*", markersize=14, color="tab:red",
                                linestyle="none", label=f"best {unit} {x_of[best_epoch]}")
        ax2.set_ylabel(f"mAP@{k or 'K'}", color="tab:red")
        ax2.tick_params(axis="y", labelcolor="tab:red")
        ax2.set_ylim(0, 1)
    # below the axes: loss and mAP curves fill the whole plot area, so any inside spot hides data
    ax.legend(handles=handles, labels=[h.get_label() for h in handles], loc="upper center",
              bbox_to_anchor=(0.5, -0.14), ncol=len(handles), fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def save_metric_plots(metrics_json_path_or_dict, out_dir=None):
    """Write pr_curve.png, precision_at_n.png and (when out_dir has epochs.jsonl) training_curve.png.

    metrics_json_path_or_dict: a metrics.json path (or its run folder), its parsed dict, or a bare
    retrieval_metrics dict. out_dir: where the PNGs go and where config.json / epochs.jsonl are looked
    for; defaults to the metrics.json folder (required when a dict is given). Returns the written paths.
    """
    source = metrics_json_path_or_dict
    if isinstance(source, dict):
        if out_dir is None:
            raise ValueError("save_metric_plots: out_dir is required when the metrics are given as a dict")
        doc, where = _normalise_metrics(source, "save_metric_plots: metrics dict"), "metrics dict"
    else:
        path = Path(source)
        doc = load_metrics(path)
        where = str(path / "metrics.json" if path.is_dir() else path)
        if out_dir is None:
            out_dir = path if path.is_dir() else path.parent
    out_dir = Path(out_dir)
    config = load_config(out_dir)
    views = metric_views(doc)
    final = doc["final"]
    k = final.get("topk")
    written = [
        _pr_plot(views, run_title("Precision-recall over Hamming radii", config, final), out_dir / "pr_curve.png",
                 where),
        _pn_plot(views, run_title("Precision@N", config, final), out_dir / "precision_at_n.png", where),
    ]
    rows = load_epochs(out_dir)
    if rows:
        written.append(_training_plot(rows, doc.get("best_epoch"), k, run_title("Training", config, final),
                                      out_dir / "training_curve.png", (config or {}).get("unit", "epoch")))
    return written


def main(argv=None):
    """python -m utils.hashing.plots RUN_DIR [RUN_DIR ...]: draw a run's figures afterwards (a run trained with --plots
    false, or drawn again)."""
    import argparse
    import sys

    from utils.runtime.failure import USER_ERROR_EXIT
    parser = argparse.ArgumentParser(prog="python -m utils.hashing.plots",
                                     description="draw a run's figures afterwards")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders holding metrics.json")
    for run in parser.parse_args(argv).runs:
        try:
            paths = save_metric_plots(run)
        except (ValueError, OSError) as err:  # a run folder or file the user named: one line
            print(f"python -m utils.hashing.plots: {err}", file=sys.stderr)
            sys.exit(USER_ERROR_EXIT)
        print(f"{run}: {', '.join(str(p) for p in paths)}")


if __name__ == "__main__":
    main()
