"""The run folders scripts/report.py reads (Run: config.json and metrics.json, nothing else, so no Paddle) and the
published numbers and protocols they are compared with (docs/protocol.md#reference-numbers, #nus-wide-and-imagenet).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.backbones import DEFAULT_BACKBONE  # imports no Paddle
from utils.hashing.plots import PR_RADIUS, load_config, load_metrics, run_bits

REPO = Path(__file__).resolve().parents[1]
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
RADIUS_KEY = f"precision_radius{PR_RADIUS}"
EMPTY_KEY = f"radius{PR_RADIUS}_empty_fraction"


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
    def method(self):
        """The run's --method from config.json ('hashnet' for runs from before the flag)."""
        return str(self.config.get("method") or "hashnet")

    @property
    def train_time(self):
        """Seconds the run spent training (its epochs) or fitting (a shallow method), None when not recorded."""
        return self.doc.get("train_time")

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

