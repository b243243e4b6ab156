"""The ablation's HashNet variants (docs/methods.md#hashnet-variants) as what each turns off or changes, the same
under either recipe; each recipe says how its loss does it (seed.py, paper.py).

- weighted: similar and dissimilar pairs re-weighted (HashNet); HashNet-W averages every pair alike;
- continuation: tanh(scale x) with a scale that grows (HashNet); HashNet-sgn keeps scale 1 throughout, and its
  codes are the sign of the outputs, a separate binarisation step;
- cosine_similarity: a pair's similarity is the cosine of its label vectors (HashNet+C), not 0/1.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    weighted: bool = True
    continuation: bool = True
    cosine_similarity: bool = False


VARIANTS = {
    "hashnet": Variant(),
    "hashnet-w": Variant(weighted=False),
    "hashnet-sgn": Variant(continuation=False),
    "hashnet+c": Variant(cosine_similarity=True),
}


def variant_of(cfg):
    """The variant of a configuration's --method (a deep baseline's recipe has none of its own: HashNet's)."""
    return VARIANTS.get(getattr(cfg, "method", None) or "hashnet", VARIANTS["hashnet"])
