"""Markdown report over several runs (one column per bit width) with paper-style figures.

    python scripts/report.py --runs output/coco_16bits output/coco_32bits output/coco_48bits output/coco_64bits
    python scripts/report.py --runs output --out output/report      # a parent folder: every run inside it

Runs on the paper's datasets (imagenet, nuswide_81, coco) also fill "Table 1": the paper's three datasets x four
bit widths, HashNet's published mAP beside this project's, each dataset under its own metric (mAP@1000 for
ImageNet, mAP@5000 for NUS-WIDE and MS-COCO), cells without a run shown as such, and each dataset's protocol line
(train / query / database sizes of the lists the runs used).

Writes <out>/report.md and, next to it, precision_radius2_vs_bits.png, map_vs_bits.png,
precision_at_n_curves.png and pr_curves.png. Reads each run folder's metrics.json and config.json (and
nothing else), so it runs without Paddle.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python scripts/report.py` from anywhere

from models.backbones import DEFAULT_BACKBONE  # noqa: E402  (imports no Paddle)
from utils.hashing.plots import (  # noqa: E402
    PR_RADIUS,
    atomic_write_bytes,
    draw_pr_curve,
    finish_pr_axes,
    load_config,
    load_metrics,
    new_figure,
    precision_at_n_points,
    run_bits,
    save_figure,
)

# docs/protocol.md#reference-numbers: mAP@5000 on MS-COCO with AlexNet. Strings keep the digits exactly as published.
REFERENCE_DATASET = "coco"
REFERENCE_TOPK = 5000
# docs/protocol.md#ms-coco-protocol: 5,000 queries; the database is the rest of 122,218 images (the seed's log suggests
# ~112,000 listed)
REFERENCE_QUERIES, REFERENCE_DATABASE_MIN = 5000, 100_000
PAPER_LABEL = "HashNet paper (ICCV 2017, Table 1)"
# docs/protocol.md#reference-numbers, #nus-wide-and-imagenet: the paper's Table 1 (AlexNet), in its column order, with
# each dataset's protocol. The 48-bit values are confirmed by DeepHash-pytorch's README; the others are the paper's
# table as commonly quoted.
PAPER_DATASETS = {
    "imagenet": dict(title="ImageNet-100", topk=1000, train=13000, queries=5000, database_min=None,
                     paper={16: "0.5059", 32: "0.6306", 48: "0.6633", 64: "0.6835"}),
    "nuswide_81": dict(title="NUS-WIDE-81", topk=5000, train=10000, queries=5000, database_min=None,
                       paper={16: "0.6623", 32: "0.6988", 48: "0.7114", 64: "0.7163"}),
    "coco": dict(title="MS-COCO", topk=REFERENCE_TOPK, train=10000, queries=REFERENCE_QUERIES,
                 database_min=REFERENCE_DATABASE_MIN,
                 paper={16: "0.6873", 32: "0.7184", 48: "0.7301", 64: "0.7362"}),
}
PAPER_BITS = (16, 32, 48, 64)
REFERENCE_ROWS = [
    (PAPER_LABEL, PAPER_DATASETS["coco"]["paper"]),
    ("seed README, \"Paper results\" row", {16: "0.622", 32: "0.682", 48: "0.715", 64: "0.727"}),
    ("seed's PaddlePaddle reproduction (best checkpoint)", {16: "0.619", 32: "0.682", 48: "0.715", 64: "0.734"}),
]
REFERENCE_STYLES = [("black", "x"), ("tab:purple", "^"), ("tab:brown", "s")]
RADIUS_KEY = f"precision_radius{PR_RADIUS}"
EMPTY_KEY = f"radius{PR_RADIUS}_empty_fraction"
FIGURES = {
    "precision_radius": "precision_radius2_vs_bits.png",
    "map": "map_vs_bits.png",
    "precision_at_n": "precision_at_n_curves.png",
    "pr": "pr_curves.png",
}


@dataclass
class Run:
    path: Path
    config: dict
    doc: dict

    @property
    def name(self):
        """The run folder's name: the run's label in tables and figures."""
        return self.path.name

    @property
    def final(self):
        """The metrics of the run's last evaluation (metrics.json's "final")."""
        return self.doc["final"]

    @property
    def best(self):
        """The metrics of the best epoch, or None when metrics.json records none."""
        best = self.doc.get("best")
        return best if isinstance(best, dict) else None

    @property
    def bits(self):
        """The run's code length (config.json, else its metrics), or None."""
        return run_bits(self.config, self.final)

    @property
    def dataset(self):
        """The run's dataset from config.json (a placeholder when the run has none)."""
        return str(self.config.get("dataset", "unknown (no config.json)"))

    @property
    def recipe(self):
        """The run's --recipe from config.json: 'seed' (also for runs from before the flag) or 'paper'."""
        return str(self.config.get("recipe") or "seed")

    @property
    def backbone(self):
        """The run's --backbone from config.json; runs from before the flag (or without config.json) are AlexNet's."""
        return str(self.config.get("backbone") or DEFAULT_BACKBONE)

    @property
    def topk(self):
        """K of the run's mAP@K."""
        return self.final.get("topk")

    @property
    def is_reference_setting(self):
        """Whether the run is on the dataset of the reference rows (MS-COCO)."""
        return self.dataset == REFERENCE_DATASET

    @property
    def protocol(self):
        """The paper's protocol of this run's dataset (PAPER_DATASETS), or None."""
        return PAPER_DATASETS.get(self.dataset)

    @property
    def is_eval_only(self):
        """Whether the run only evaluated a checkpoint (no training epoch recorded)."""
        return self.doc.get("final_epoch") is None

    def sizes(self):
        """(train, queries, database) of the lists the run used; train from metrics.json (older runs: the list)."""
        train = self.final.get("num_train")
        if train is None:
            train = _count_list_lines(self.config, "train")
        return train, self.final.get("num_query"), self.final.get("num_database")

    def protocol_mismatch(self):
        """What differs from the paper's protocol of the run's dataset: [] when comparable with the paper."""
        spec = self.protocol
        if spec is None:
            return []
        train, queries, database = self.sizes()
        problems = []
        if self.topk != spec["topk"]:
            problems.append(f"mAP@{self.topk}, not mAP@{spec['topk']}")
        if queries != spec["queries"]:
            problems.append(f"{queries} queries, not {spec['queries']}")
        if train is not None and train != spec["train"]:
            problems.append(f"{train} training images, not {spec['train']}")
        if spec["database_min"] and (database or 0) < spec["database_min"]:
            problems.append(f"{database} database images, not over {spec['database_min']:,}")
        return problems


def _count_list_lines(config, split):
    """Non-empty lines of the run's <split>.txt (config.json's list_dir, else data/<dataset>/), or None."""
    if not config.get("dataset"):
        return None
    list_dir = Path(config["list_dir"]) if config.get("list_dir") else REPO / "data" / str(config["dataset"])
    path = list_dir / f"{split}.txt"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


# ---------------------------------------------------------------------------------------------------- find runs
def _load_run(run_dir):
    """The Run of one run folder (its config.json and metrics.json)."""
    return Run(run_dir, load_config(run_dir), load_metrics(run_dir / "metrics.json"))


def _missing_metrics_error(folders):
    """The error for run folders without metrics.json, saying how to get one."""
    names = ", ".join(str(f) for f in folders)
    return FileNotFoundError(
        f"run folder without metrics.json: {names} (metrics.json is written after a run's first evaluation; "
        "wait for it, run --eval on its checkpoint, or leave the folder out of --runs)")


def find_runs(paths):
    """Run folders from --runs: each path is a run folder (has metrics.json) or a parent of run folders."""
    found = {}
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.name == "metrics.json":
            path = path.parent
        if not path.is_dir():
            raise FileNotFoundError(f"--runs {raw}: no such folder")
        if (path / "metrics.json").is_file():
            run_dirs = [path]
        elif (path / "config.json").is_file():  # a run folder whose run has not evaluated yet
            raise _missing_metrics_error([path])
        else:
            run_dirs = sorted(m.parent for m in path.rglob("metrics.json"))
            unfinished = sorted(c.parent for c in path.rglob("config.json")
                                if not (c.parent / "metrics.json").is_file())
            if unfinished:
                raise _missing_metrics_error(unfinished)
            if not run_dirs:
                raise FileNotFoundError(f"--runs {raw}: no metrics.json in this folder or its subfolders; pass run "
                                        "folders (e.g. output/coco_64bits) or a folder that contains them")
        for run_dir in run_dirs:
            found.setdefault(run_dir.resolve(), run_dir)
    runs = [_load_run(d) for d in found.values()]
    return sorted(runs, key=lambda r: (r.bits if r.bits is not None else 10 ** 9, r.dataset, r.name))


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


# ----------------------------------------------------------------------------------------------------------- main
def build_report(runs):
    """The text of report.md."""
    figures = "\n".join([
        f"![precision within Hamming radius {PR_RADIUS} vs bits]({FIGURES['precision_radius']})",
        f"![mAP@K vs bits]({FIGURES['map']})",
        f"![precision@N, one line per bit width]({FIGURES['precision_at_n']})",
        f"![precision-recall over Hamming radii, one line per bit width]({FIGURES['pr']})",
    ])
    return "\n".join([
        "# HashNet (PaddlePaddle) retrieval results",
        "",
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
    write_figures(runs, out_dir)
    text = build_report(runs)
    report = atomic_write_bytes(out_dir / "report.md", text.encode("utf-8"))
    print(text)
    print(f"written: {report}")
    return report


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"report.py: error: {e}")
