"""The seed repository's import names: re-exports of utils.hashing.codes (binary codes, Hamming search) and
utils.hashing.metrics."""

from utils.hashing.codes import (
    binarize,
    hamming_distances,
    pack_codes,
    pack_labels,
    packed_size,
    sign_codes,
    topk_search,
)
from utils.hashing.metrics import (
    CalcTopMap,
    CalcTopMap_reference,
    map_paper_rule,
    retrieval_metrics,
    tie_aware_average_precision,
)

__all__ = [
    "binarize", "sign_codes", "pack_codes", "pack_labels", "packed_size", "hamming_distances", "topk_search",
    "CalcTopMap", "CalcTopMap_reference", "map_paper_rule", "retrieval_metrics", "tie_aware_average_precision",
]
