"""The Markdown of scripts/report.py: the per-run table, the paper's Table 1 beside the runs (with each dataset's
protocol) and the notes on epoch selection, metrics and reference numbers."""
from __future__ import annotations

from pathlib import Path

from models.backbones import DEFAULT_BACKBONE  # imports no Paddle
from scripts.report_runs import (
    EMPTY_KEY,
    PAPER_BITS,
    PAPER_DATASETS,
    PAPER_LABEL,
    RADIUS_KEY,
    REFERENCE_DATABASE_MIN,
    REFERENCE_DATASET,
    REFERENCE_QUERIES,
    REFERENCE_ROWS,
    REFERENCE_TOPK,
)
from utils.hashing.plots import PR_RADIUS


# --------------------------------------------------------------------------------------------------------- table
def fmt(value):
    """A metric as a table cell: 4 decimals, — when missing."""
    return "—" if value is None else f"{value:.4f}"


def fmt_share(value):
    """A fraction as a table cell in percent, — when missing."""
    return "—" if value is None else f"{100 * value:.1f}%"


def column_header(run, runs):
    """A run's column title: its bit width, with its name when the width alone does not tell it apart."""
    same_bits = sum(1 for r in runs if r.bits == run.bits) > 1
    head = f"{run.bits} bits" if run.bits is not None else "? bits"
    return f"{head} (`{run.name}`)" if same_bits or len(runs) == 1 else head


def final_cell(run):
    """The final mAP cell, naming the epoch or checkpoint it comes from."""
    value = fmt(run.final.get("map"))
    if run.doc.get("final_epoch") is not None:
        return f"{value} (epoch {run.doc['final_epoch']})"
    if run.doc.get("checkpoint"):
        return f"{value} (eval of `{Path(str(run.doc['checkpoint'])).name}`)"
    return value


def best_cell(run):
    """The best-epoch mAP cell with its epoch, — when no best epoch is recorded."""
    if run.best is None or run.doc.get("best_epoch") is None:
        return "—"
    return f"{fmt(run.best.get('map'))} (epoch {run.doc['best_epoch']})"


def _row(label, cells):
    """One Markdown table row."""
    return "| " + " | ".join([label] + list(cells)) + " |"


def reference_cell(run, values, label):
    """A run's cell in a reference row: the published number for its dataset and bits, or why none."""
    if label == PAPER_LABEL and run.protocol is not None:  # the paper row holds each dataset's own number
        return run.protocol["paper"].get(run.bits, "—")
    if not run.is_reference_setting:
        return "n/a (not in the paper)" if label == PAPER_LABEL else "n/a (not COCO)"
    return values.get(run.bits, "—")


def build_table(runs):
    """The per-run Markdown table: this project's metrics, then the reference rows for paper datasets."""
    lines = [_row("", [column_header(r, runs) for r in runs]), "|" + "---|" * (len(runs) + 1)]
    ours = [
        ("dataset", [r.dataset for r in runs]),
        ("recipe (docs/protocol.md#seed-recipe, #paper-recipe)", [r.recipe for r in runs]),
        ("backbone", [r.backbone for r in runs]),
        ("K of mAP@K · queries / database",
         [f"{r.topk} · {r.final.get('num_query', '?')} / {r.final.get('num_database', '?')}" for r in runs]),
        ("**mAP@K, final epoch** (no selection: the honest number)", [final_cell(r) for r in runs]),
        ("mAP@K, best epoch (chosen on the query set: optimistic)", [best_cell(r) for r in runs]),
        ("mAP@K, queries with no relevant item in the top K excluded (final)",
         [fmt(r.final.get("map_nonzero")) for r in runs]),
        ("tie-aware mAP@K (final)", [fmt(r.final.get("map_tie_aware")) for r in runs]),
        (f"precision within Hamming radius {PR_RADIUS} (final)", [fmt(r.final.get(RADIUS_KEY)) for r in runs]),
        (f"queries with nothing within radius {PR_RADIUS}, counted as precision 0 (final)",
         [fmt_share(r.final.get(EMPTY_KEY)) for r in runs]),
        ("mAP@K of random codes, chance level (final)", [fmt(r.final.get("map_random_codes")) for r in runs]),
    ]
    lines += [_row(label, cells) for label, cells in ours]
    if any(r.protocol is not None for r in runs):
        lines.append(_row("*Reference numbers from elsewhere, not produced by this project "
                          "(docs/protocol.md#reference-numbers, #nus-wide-and-imagenet: AlexNet; each run's dataset "
                          "and metric):*", [""] * len(runs)))
        lines += [_row(f"reference: {label}", [reference_cell(r, values, label) for r in runs])
                  for label, values in REFERENCE_ROWS]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- Table 1 (paper)
def _paper_cell(runs, value_of):
    """One Table 1 cell: the value of each run (several runs: all, in run-name order), marked when off-protocol."""
    values = []
    for r in sorted(runs, key=lambda r: r.name):
        value = value_of(r)
        if value is not None:
            other = f" [{r.backbone}]" if r.backbone != DEFAULT_BACKBONE else ""  # the paper's numbers are AlexNet's
            values.append(fmt(value) + other + (" †" if r.protocol_mismatch() else ""))
    return " / ".join(values) if values else "—"


def build_paper_table(runs):
    """The paper's Table 1 layout: one block of rows per dataset (its metric named), one column per bit width."""
    lines = [_row("dataset · metric", ["", *(f"{b} bits" for b in PAPER_BITS)]),
             "|" + "---|" * (len(PAPER_BITS) + 2)]
    for key, spec in PAPER_DATASETS.items():
        mine = [r for r in runs if r.dataset == key and r.bits in PAPER_BITS]
        trained = [r for r in mine if not r.is_eval_only]
        evaluated = [r for r in mine if r.is_eval_only]
        head = f"**{spec['title']}** · mAP@{spec['topk']}"
        rows = [(PAPER_LABEL, [spec["paper"][b] for b in PAPER_BITS])]
        if key == REFERENCE_DATASET:
            rows += [(label, [values[b] for b in PAPER_BITS]) for label, values in REFERENCE_ROWS[1:]]
        paper_runs = [r for r in trained if r.recipe == "paper"]
        trained = [r for r in trained if r.recipe == "seed"]  # the rows below are the seed recipe's (the default)
        rows.append(("**this project, final epoch**", [
            _paper_cell([r for r in trained if r.bits == b], lambda r: r.final.get("map")) for b in PAPER_BITS]))
        rows.append(("this project, final epoch, zero-hit queries left out (HashNet's test rule)", [
            _paper_cell([r for r in trained if r.bits == b], lambda r: r.final.get("map_nonzero"))
            for b in PAPER_BITS]))
        rows.append(("this project, best epoch (query-set selected)", [
            _paper_cell([r for r in trained if r.bits == b and r.best is not None], lambda r: r.best.get("map"))
            for b in PAPER_BITS]))
        if paper_runs:  # the authors' Caffe recipe, evaluated as the project does and by the authors' own rule
            rows.append(("**this project, paper recipe, final iteration**", [
                _paper_cell([r for r in paper_runs if r.bits == b], lambda r: r.final.get("map")) for b in PAPER_BITS]))
            rows.append(("this project, paper recipe, the authors' evaluation rule (map_paper_rule)", [
                _paper_cell([r for r in paper_runs if r.bits == b], lambda r: r.final.get("map_paper_rule"))
                for b in PAPER_BITS]))
        if evaluated:
            rows.append(("this project, `--eval` of a checkpoint", [
                _paper_cell([r for r in evaluated if r.bits == b], lambda r: r.final.get("map"))
                for b in PAPER_BITS]))
        lines += [_row(head if i == 0 else "", [label, *cells]) for i, (label, cells) in enumerate(rows)]
    return "\n".join(lines)


def _fmt_count(value):
    """An image count with thousands separators, ? when not recorded."""
    return "?" if value is None else f"{value:,}"


def protocol_lines(runs):
    """Per dataset: train / query / database sizes read from the lists the runs used, beside the paper's protocol."""
    lines = []
    for key, spec in PAPER_DATASETS.items():
        paper = (f"paper: {spec['train']:,} / {spec['queries']:,} / "
                 + (f"over {spec['database_min']:,}" if spec["database_min"] else "upstream database.txt"))
        groups = {}
        for r in sorted((r for r in runs if r.dataset == key), key=lambda r: r.name):
            groups.setdefault(r.sizes(), []).append(f"`{r.name}`")
        if not groups:
            lines.append(f"- {spec['title']} (mAP@{spec['topk']}): no run ({paper})")
            continue
        used = "; ".join(" / ".join(_fmt_count(v) for v in sizes) + f" ({', '.join(names)})"
                         for sizes, names in groups.items())
        lines.append(f"- {spec['title']} (mAP@{spec['topk']}): {used}; {paper}")
    return lines


def build_paper_section(runs):
    """The "Table 1" section: the paper's numbers beside the runs', protocols, off-protocol runs (†)."""
    marked = [(r, r.protocol_mismatch()) for r in runs if r.protocol is not None]
    marked = [(r, problems) for r, problems in marked if problems]
    lines = [
        "## Table 1: the paper's three datasets",
        "",
        "HashNet's published mAP (AlexNet) beside this project's runs. Each dataset is scored with its own metric: "
        "mAP@1000 on ImageNet-100, mAP@5000 on NUS-WIDE-81 and MS-COCO. — = no run of this project at that "
        "width; several runs of one cell are listed in run-name order; † = the run does not follow the "
        "paper's protocol (listed below), so its number is not comparable with the paper's. HashNet's own test "
        "code leaves out queries with no relevant item in the top K; on NUS-WIDE-81 that matters: 1,131 of the "
        "5,000 upstream queries have no label at all, so mAP@5000 counting them as 0 (docs/protocol.md#metric, the "
        "first row) cannot exceed 0.7738, and the zero-hit row is the one to compare with the paper's.",
        "",
        build_paper_table(runs),
        "",
        "**Protocol**, train / queries / database images, as read from the lists each run used (run folders in "
        "brackets), next to the paper's:",
        "",
        *protocol_lines(runs),
    ]
    if any(r.protocol is not None and r.sizes()[0] is None for r in runs):
        lines += ["", "? = not recorded (metrics.json before `num_train` was written, and the run's list is gone)."]
    if marked:
        order = list(PAPER_DATASETS)
        marked.sort(key=lambda item: (order.index(item[0].dataset), item[0].name))
        lines += ["", *[f"- † `{r.path}`: " + "; ".join(problems) + "." for r, problems in marked]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- notes
def selection_note(run):
    """One note line: which epoch a run's numbers come from and how its best epoch was chosen."""
    doc = run.doc
    if doc.get("final_epoch") is None:
        what = f"checkpoint `{doc['checkpoint']}`" if doc.get("checkpoint") else "one evaluation"
        return (f"- `{run.path}`: an evaluation of {what} (no training epochs recorded, so no best/final "
                "distinction; a `model_best_*` checkpoint was itself chosen on the query set).")
    if doc.get("best_epoch") is None:
        best = "no best epoch recorded"
    elif doc.get("selection"):  # the engine's own words, in case its rule ever changes
        best = f"best epoch {doc['best_epoch']} by mAP@{run.topk} ({doc['selection']})"
    else:
        best = f"best epoch {doc['best_epoch']} by mAP@{run.topk} on the query set"
    return f"- `{run.path}`: final epoch {doc['final_epoch']}; {best}."


def build_notes(runs):
    """The notes: epoch selection, metric definitions, and where the reference numbers come from and fit."""
    notes = ["## Which epoch", ""]
    notes += [selection_note(r) for r in runs]
    notes += [
        "",
        "The seed (and this project's engine, which follows it) keeps the checkpoint with the highest mAP on "
        "the **query set** (`test.txt`), which is also the set the mAP is reported on; there is no separate "
        "validation set. Best-epoch numbers are therefore selected on the test data and optimistic. "
        "**Final-epoch numbers involve no selection and are the honest ones.** The seed's reproduction row "
        "is a best-checkpoint number (its test scripts evaluate `model_best_{bit}.pdparams`), so compare it "
        "with the best-epoch row, and read the final-epoch row as what the method delivers.",
        "",
        "## Metrics",
        "",
        "- mAP@K: Hamming ranking, ties broken by database order; a query with no relevant item in its top K "
        "has AP 0 and still counts (the seed's `CalcTopMap`, docs/protocol.md#metric).",
        "- mAP with zero-hit queries excluded: mean AP over only the queries with at least one relevant item in "
        "their top K (the rule of HashNet's official test code).",
        "- tie-aware mAP: the expected mAP@K over all orders of equal-distance items instead of database order.",
        f"- precision within Hamming radius {PR_RADIUS}: per query, the share of relevant items among those at "
        f"distance ≤ {PR_RADIUS}, averaged over queries; a query with no item inside counts 0 (its share is the "
        "row below it).",
        "",
        "## Reference numbers",
        "",
    ]
    if any(r.protocol is not None for r in runs):
        notes += [
            f"The reference rows are copied from docs/protocol.md#reference-numbers (MS-COCO, mAP@{REFERENCE_TOPK}, "
            f"AlexNet) and #nus-wide-and-imagenet (ImageNet-100, mAP@1000; NUS-WIDE-81, mAP@5000); they were "
            "produced elsewhere, not by these runs. "
            "The paper's 48-bit values are confirmed by DeepHash-pytorch's README; the other bit widths are the "
            "paper's table as commonly quoted. DeepHash-pytorch reports, with its own recipe, 0.724 (COCO), "
            "0.644 (ImageNet) and 0.764 (its NUS-WIDE-m, 223,496 images) at 48 bits.",
        ]
        notes += [f"- Warning: `{r.path}` ({r.dataset}) uses mAP@{r.topk}, not mAP@{r.protocol['topk']}: not "
                  "comparable with the reference rows." for r in runs
                  if r.protocol is not None and not r.is_reference_setting and r.topk != r.protocol["topk"]]
        notes += [f"- Warning: `{r.path}` uses mAP@{r.topk}, not mAP@{REFERENCE_TOPK}: not comparable with "
                  "the reference rows." for r in runs if r.is_reference_setting and r.topk != REFERENCE_TOPK]
        notes += [f"- Warning: `{r.path}` has {r.final.get('num_query')} queries and {r.final.get('num_database')} "
                  f"database images, not the protocol's {REFERENCE_QUERIES} / over {REFERENCE_DATABASE_MIN:,} "
                  "(docs/protocol.md#ms-coco-protocol): "
                  "not comparable with the reference rows."
                  for r in runs if r.is_reference_setting
                  and (r.final.get("num_query") != REFERENCE_QUERIES
                       or (r.final.get("num_database") or 0) < REFERENCE_DATABASE_MIN)]
        notes += [f"- `{r.path}` is on dataset `{r.dataset}`: the paper has no number for it." for r in runs
                  if r.protocol is None]
        notes += [f"- `{r.path}` trains on {r.backbone}: the reference rows are AlexNet's (docs/backbones.md), so its "
                  f"cells in Table 1 carry [{r.backbone}]." for r in runs if r.backbone != DEFAULT_BACKBONE]
    else:
        datasets = ", ".join(sorted({f"`{r.dataset}`" for r in runs}))
        notes.append(f"The reference numbers (docs/protocol.md#reference-numbers: HashNet paper and the seed "
                     f"repository) are for MS-COCO (mAP@{REFERENCE_TOPK}); these runs are on {datasets}, so they are "
                     f"not shown.")
    return "\n".join(notes)

