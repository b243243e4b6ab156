"""The methods of the paper's comparison by their --method names (docs/methods.md): HashNet and the variants of its
ablation, the deep baselines (trained by the engine, one recipe each) and the shallow ones (fitted on fixed features).
Names only: what each method does lives in utils/train/recipes (deep), utils/shallow (shallow) and the losses.
"""
HASHNET_VARIANTS = ("hashnet", "hashnet-w", "hashnet-sgn", "hashnet+c")
DEEP_BASELINES = ("dhn", "dnnh", "cnnh")
SHALLOW_BASELINES = ("lsh", "sh", "itq", "itq-cca", "bre", "ksh", "sdh")
METHODS = HASHNET_VARIANTS + DEEP_BASELINES + SHALLOW_BASELINES

# as the paper's tables spell them
TITLES = {"hashnet": "HashNet", "hashnet-w": "HashNet-W", "hashnet-sgn": "HashNet-sgn", "hashnet+c": "HashNet+C",
          "dhn": "DHN", "dnnh": "DNNH", "cnnh": "CNNH", "lsh": "LSH", "sh": "SH", "itq": "ITQ", "itq-cca": "ITQ-CCA",
          "bre": "BRE", "ksh": "KSH", "sdh": "SDH"}
# Table 1's row order (shallow, then deep, then HashNet), and the ablation table's
TABLE1_ORDER = ("lsh", "sh", "itq", "itq-cca", "bre", "ksh", "sdh", "cnnh", "dnnh", "dhn", "hashnet")
ABLATION_ORDER = ("hashnet+c", "hashnet-w", "hashnet-sgn", "hashnet")


def is_shallow(method):
    return method in SHALLOW_BASELINES


def method_title(method):
    """The paper's name of a --method value (runs from before the flag are HashNet's)."""
    return TITLES.get(method or "hashnet", str(method))
