"""The comparison section of scripts/report.py (docs/methods.md): for each dataset and recipe the runs cover, Table 1
with every method of the paper as a row (this project's final mAP beside the paper's, blank where not run or not
published), the time each run took, and the ablation table of HashNet's variants.
"""
from __future__ import annotations

from scripts.report_paper_numbers import ABLATION, TABLE1, paper_cell
from scripts.report_runs import PAPER_DATASETS
from utils.config.methods import ABLATION_ORDER, METHODS, TABLE1_ORDER, method_title

BLANK = ""


def comparison_groups(runs):
    """{(dataset, recipe): runs}, in a fixed order."""
    groups = {}
    for r in sorted(runs, key=lambda r: (r.dataset, r.recipe, r.name)):
        groups.setdefault((r.dataset, r.recipe), []).append(r)
    return groups


def _bits_of(runs):
    return sorted({r.bits for r in runs if r.bits is not None})


def _cell(runs, method, bits, table, dataset, value_of):
    """This project's value(s) of a method at a width (several runs: all, by name), then the paper's in brackets."""
    mine = [value_of(r) for r in runs if r.method == method and r.bits == bits]
    ours = " / ".join(f"{v:.4f}" for v in mine if v is not None)
    published, _ = paper_cell(table, dataset, method, bits)
    if published is not None:
        return f"{ours or BLANK} ({published})".strip()
    return ours or BLANK


def _row(cells):
    return "| " + " | ".join(cells) + " |"


def _method_table(runs, dataset, order, table, value_of):
    bits = _bits_of(runs)
    lines = [_row(["method", *(f"{b} bits" for b in bits)]), "|" + "---|" * (len(bits) + 1)]
    for method in order:
        lines.append(_row([method_title(method), *(_cell(runs, method, b, table, dataset, value_of) for b in bits)]))
    return lines


def _time_table(runs):
    """Seconds each run trained or fitted, per method and width."""
    bits = _bits_of(runs)
    methods = [m for m in METHODS if any(r.method == m for r in runs)]
    lines = [_row(["method", *(f"{b} bits" for b in bits)]), "|" + "---|" * (len(bits) + 1)]
    for method in methods:
        cells = []
        for b in bits:
            times = [r.train_time for r in runs if r.method == method and r.bits == b and r.train_time is not None]
            cells.append(" / ".join(f"{t:.1f}" for t in times) or BLANK)
        lines.append(_row([method_title(method), *cells]))
    return lines


def _sources(dataset, order, table):
    """The sources of the published cells of a table, one line each."""
    seen = {}
    for method in order:
        entry = table.get(dataset, {}).get(method)
        if entry is not None:
            seen.setdefault(entry[1], []).append(method_title(method))
    return [f"- {', '.join(names)}: {source}" for source, names in seen.items()]


def build_comparison_section(runs):
    """The Markdown of the comparison: one block per (dataset, recipe) the runs cover."""
    lines = ["## The comparison: Table 1 and the ablation", "",
             "Each cell: this project's mAP@K at the run's final epoch (no selection; a shallow method is fitted "
             "once), then the paper's number in brackets where it was read (docs/methods.md#the-papers-numbers; "
             "blank = not run here, or not published / not found). Every method of a block uses the same lists, "
             "splits, metric and backbone features; nothing is tuned on the query set."]
    for (dataset, recipe), group in comparison_groups(runs).items():
        topk = {r.topk for r in group}
        spec = PAPER_DATASETS.get(dataset)
        metric = "mAP@" + "/".join(str(k) for k in sorted(topk, key=str))
        if spec is None:
            note = " (not a dataset of the paper: no published numbers)"
        elif topk != {spec["topk"]}:
            note = f" (the paper's metric is mAP@{spec['topk']}: its numbers are not comparable)"
        else:
            note = ""
        lines += ["", f"### {dataset} · {recipe} recipe · {metric}{note}", "", "**Table 1**", ""]
        lines += _method_table(group, dataset, TABLE1_ORDER, TABLE1, lambda r: r.final.get("map"))
        lines += ["", "**The ablation** (HashNet's variants, docs/methods.md#hashnet-variants)", ""]
        lines += _method_table(group, dataset, ABLATION_ORDER, ABLATION, lambda r: r.final.get("map"))
        lines += ["", "**Seconds** of training (epochs) or fitting (shallow methods; their fc7 features are computed "
                  "once per backbone and cached, not counted)", ""]
        lines += _time_table(group)
        sources = _sources(dataset, TABLE1_ORDER, TABLE1) + _sources(dataset, ABLATION_ORDER, ABLATION)
        if sources:
            lines += ["", "Published numbers read from:", "", *sources]
    return "\n".join(lines)
