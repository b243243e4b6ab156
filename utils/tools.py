"""The seed repository's import names: re-exports of utils.codes (binary codes, Hamming search) and utils.metrics."""

from utils.codes import binarize, hamming_distances, pack_codes, pack_labels, packed_size, topk_search
from utils.metrics import CalcTopMap, CalcTopMap_reference, retrieval_metrics, tie_aware_average_precision

__all__ = [
    "binarize", "pack_codes", "pack_labels", "packed_size", "hamming_distances", "topk_search",
    "CalcTopMap", "CalcTopMap_reference", "retrieval_metrics", "tie_aware_average_precision",
]
