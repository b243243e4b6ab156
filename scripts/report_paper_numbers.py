"""The paper's numbers the comparison is set beside (docs/methods.md#the-papers-numbers): Table 1's rows of every
method, and the ablation table of HashNet's variants, each cell as published (a string keeps its digits) with where
it was read. A cell that could not be read is absent, and the report leaves it blank: never estimated.
"""
from __future__ import annotations

from scripts.report_runs import PAPER_DATASETS

# Hindawi, Advances in Multimedia 2017, article 8961091, Table 3 (hindawi.com/journals/am/2017/8961091/tab3): ImageNet
# mAP@1000 of the methods of HashNet's Table 1, copied from an arXiv version of HashNet (its HashNet row differs from
# the ICCV paper's at 16 and 32 bits: docs/methods.md#the-papers-numbers).
HINDAWI = "Hindawi am/2017/8961091 Table 3 (a copy of an arXiv version of HashNet's Table 1)"
_IMAGENET_ROWS = {
    "lsh": ("0.101", "0.235", "0.312", "0.360"), "sh": ("0.207", "0.328", "0.395", "0.419"),
    "itq": ("0.326", "0.462", "0.517", "0.552"), "itq-cca": ("0.266", "0.436", "0.548", "0.576"),
    "bre": ("0.063", "0.253", "0.330", "0.358"), "ksh": ("0.160", "0.298", "0.342", "0.394"),
    "cnnh": ("0.281", "0.450", "0.525", "0.554"), "dnnh": ("0.290", "0.461", "0.530", "0.565"),
    "dhn": ("0.311", "0.472", "0.542", "0.573"),
}
BITS = (16, 32, 48, 64)

# {dataset: {method: ({bits: value}, source)}}
ICCV = "HashNet, ICCV 2017, Table 1 (docs/protocol.md#reference-numbers)"
TABLE1 = {dataset: {"hashnet": (dict(spec["paper"]), ICCV)} for dataset, spec in PAPER_DATASETS.items()}
TABLE1["imagenet"].update({method: (dict(zip(BITS, values)), HINDAWI) for method, values in _IMAGENET_ROWS.items()})

# {dataset: {method: ({bits: value}, source)}}: the ablation table of HashNet's variants
ABLATION = {}


def paper_cell(table, dataset, method, bits):
    """(value, source) of a published cell, or (None, None)."""
    entry = table.get(dataset, {}).get(method)
    if entry is None or bits not in entry[0]:
        return None, None
    return entry[0][bits], entry[1]
