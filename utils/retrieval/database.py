"""The searchable database of a dataset: its list's images and labels, the class names, and the labels of every
image any of its lists names (so a query taken from the dataset shows which labels it shares with its results).

predict.py, infer.py and the search page (serve.py) search it; utils/retrieval/search.py encodes it.
"""
import os
from pathlib import Path

from utils.datasets.image_list import ImageList, dataset_lists, read_list_file
from utils.datasets.splits import LIST_NAMES

# COCO's label j is the j-th category in alphabetical order (data/make_coco_lists.py,
# docs/protocol.md#list-files): 73 = train.
COCO_CLASSES = (
    "airplane", "apple", "backpack", "banana", "baseball bat", "baseball glove", "bear", "bed", "bench", "bicycle",
    "bird", "boat", "book", "bottle", "bowl", "broccoli", "bus", "cake", "car", "carrot", "cat", "cell phone", "chair",
    "clock", "couch", "cow", "cup", "dining table", "dog", "donut", "elephant", "fire hydrant", "fork", "frisbee",
    "giraffe", "hair drier", "handbag", "horse", "hot dog", "keyboard", "kite", "knife", "laptop", "microwave",
    "motorcycle", "mouse", "orange", "oven", "parking meter", "person", "pizza", "potted plant", "refrigerator",
    "remote", "sandwich", "scissors", "sheep", "sink", "skateboard", "skis", "snowboard", "spoon", "sports ball",
    "stop sign", "suitcase", "surfboard", "teddy bear", "tennis racket", "tie", "toaster", "toilet", "toothbrush",
    "traffic light", "train", "truck", "tv", "umbrella", "vase", "wine glass", "zebra")


class Database:
    """The database list (paths, labels), the class names when known, and the labels of every listed image.

    Class names: classes.txt (one name a line) next to the lists or in the data root; else COCO's 80 names for a
    COCO dataset (its name starts with 'coco') with 80 labels; else None (labels shown as numbers)."""

    def __init__(self, dataset, data_path, list_dir=None, path_prefix=None):
        if dataset == "toy" and list_dir is None:
            from utils.datasets.toy import ensure_toy_dataset
            ensure_toy_dataset(Path(data_path))
        self.root = Path(data_path)
        self.lists = lists = dataset_lists(dataset, list_dir)
        self.list_path = lists["database"]
        self.path_prefix = path_prefix
        self.paths, self.labels = read_list_file(self.list_path, path_prefix=path_prefix)
        self.num_classes = self.labels.shape[1]
        self.class_names = self._class_names([Path(self.list_path).parent, self.root])
        if self.class_names is None and str(dataset).startswith("coco") and self.num_classes == len(COCO_CLASSES):
            self.class_names = list(COCO_CLASSES)
        # labels of every image any list names, so a query from the dataset shows which labels it shares
        self._labels_of = {}
        for split in LIST_NAMES:
            paths, labels = (self.paths, self.labels) if split == "database" else read_list_file(
                lists[split], num_classes=self.num_classes, path_prefix=path_prefix)
            for rel, row in zip(paths, labels):
                self._labels_of.setdefault(self._key(self.root / rel), row)

    def __len__(self):
        return len(self.paths)

    @staticmethod
    def _key(path):
        return os.path.normcase(os.path.abspath(path))

    def _class_names(self, folders):
        for folder in folders:
            path = folder / "classes.txt"
            if path.is_file():
                names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
                if len(names) != self.num_classes:
                    raise ValueError(f"{path} has {len(names)} class names but {self.list_path} has "
                                     f"{self.num_classes} labels per line; fix or remove {path}")
                return names
        return None

    def image_path(self, index):
        return self.root / self.paths[index]

    def listed_paths(self):
        """Absolute paths of every image any of the lists names."""
        return list(self._labels_of)

    def labels_of(self, path):
        """0/1 label row of an image named in the dataset's lists, else None."""
        return self._labels_of.get(self._key(path))

    def dataset(self, transform, cache_dir=None, resize_size=None, crop_size=None, resize_mode="short"):
        """The database images through `transform`, or from the decoded evaluation cache in cache_dir (built on
        first use; its images equal the transform's, so the codes are the same)."""
        dataset = ImageList(self.root, self.list_path, transform, self.num_classes, path_prefix=self.path_prefix)
        if cache_dir is None:
            return dataset
        from utils.datasets import cache as datacache
        return datacache.cached_eval_dataset(dataset, cache_dir, resize_size, crop_size, resize_mode=resize_mode)
