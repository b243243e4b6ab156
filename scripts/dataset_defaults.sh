# Sourced by the train/test scripts: the dataset and its preset's defaults.
# DATASET: coco (default), imagenet, nuswide_81, or any NAME with lists in data/NAME/.
# DATA_PATH (data root) and TOPK (K of mAP@K: 1000 for ImageNet, 5000 for NUS-WIDE and MS-COCO; docs/protocol.md#reference-numbers, #nus-wide-and-imagenet) default
# to the dataset's preset in utils/config.py, the one place they are written; the environment overrides either.
# The preset also maps the paths of HashNet's own lists (--path-prefix), so they are used unchanged.
DATASET=${DATASET:-coco}
preset() { python -c "from utils.config import preset_for; print(preset_for('$DATASET')['$1'])"; }
DATA_PATH=${DATA_PATH:-$(preset data_path)}
TOPK=${TOPK:-$(preset topK)}
