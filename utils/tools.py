"""The seed repository's import names: re-exports of utils.hashing.codes (binary codes, Hamming search) and the
metrics (utils.hashing.metrics, paper_rule, tie_aware)."""

from utils.hashing.codes import (
    binarize,
    hamming_distances,
    pack_codes,
    pack_labels,
    pack_rows,
    packed_size,
    plane_distances,
    rows_to_planes,
    sign_codes,
    topk_search,
)
from utils.hashing.metrics import CalcTopMap, CalcTopMap_reference, retrieval_metrics
from utils.hashing.paper_rule import map_paper_rule
from utils.hashing.tie_aware import tie_aware_average_precision

__all__ = [
    "binarize", "sign_codes", "pack_rows", "rows_to_planes", "pack_codes", "pack_labels", "packed_size",
    "hamming_distances", "plane_distances", "topk_search",
    "CalcTopMap", "CalcTopMap_reference", "map_paper_rule", "retrieval_metrics", "tie_aware_average_precision",
]
