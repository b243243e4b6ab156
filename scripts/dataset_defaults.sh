# Sourced by the train/test scripts: the dataset and its preset's defaults.
# DATASET: coco (default), imagenet, nuswide_81, or any NAME with lists in data/NAME/.
# DATA_PATH (data root) and TOPK (K of mAP@K: 1000 for ImageNet, 5000 for NUS-WIDE and MS-COCO; docs/protocol.md#reference-numbers, #nus-wide-and-imagenet) default
# to the dataset's preset in utils/config/presets.py, the one place they are written; the environment overrides either.
# The preset also maps the paths of HashNet's own lists (--path-prefix), so they are used unchanged.
# RECIPE: seed (default; docs/protocol.md#seed-recipe) or paper (the authors' Caffe recipe, docs/protocol.md#paper-recipe:
# every value from its preset, run folders {dataset}_{bit}bits_paper).
DATASET=${DATASET:-coco}
RECIPE=${RECIPE:-seed}
case "$RECIPE" in
  seed) RUN_SUFFIX="" ;;
  paper) RUN_SUFFIX="_paper" ;;
  *) echo "error: RECIPE=$RECIPE: expected seed or paper" >&2; exit 2 ;;
esac
preset() { python -c "from utils.config.presets import preset_for; print(preset_for('$DATASET', '$RECIPE')['$1'])"; }
DATA_PATH=${DATA_PATH:-$(preset data_path)}
TOPK=${TOPK:-$(preset map_at)}
