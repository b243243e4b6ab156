#!/bin/sh
# The paper's comparison in one command (docs/methods.md): every method of Table 1 and of the ablation at every code
# length, trained or fitted into run folders $OUT/{dataset}_{bit}bits_{method}, then scripts/report.py writes the
# whole Table 1 (the paper's numbers beside this project's), the ablation table, the time of each run and the
# figures into $OUT/report.
#   sh scripts/compare_methods.sh                                   # the toy set (generated), every method, 4 widths
#   DATASET=coco DATA_PATH=/path/to/COCO2014 sh scripts/compare_methods.sh
#   BITS="16 64" METHODS="hashnet dhn itq ksh" sh scripts/compare_methods.sh
#   RECIPE=paper METHODS="hashnet hashnet-w hashnet-sgn hashnet+c" sh scripts/compare_methods.sh  # the ablation, Caffe
# A run folder that already holds a finished run is not trained again (--resume auto), so an interrupted comparison
# is finished by the same command; a shallow method is fitted again (seconds; its fc7 features are cached once per
# backbone under $OUT/features). Extra arguments go to every run (e.g. --num-workers 4).
set -e
cd "$(dirname "$0")/.."
DATASET=${DATASET:-toy}
. scripts/dataset_defaults.sh
BITS=${BITS:-16 32 48 64}
METHODS=${METHODS:-lsh sh itq itq-cca bre ksh sdh cnnh dnnh dhn hashnet hashnet-w hashnet-sgn hashnet+c}
OUT=${OUT:-output/compare_${DATASET}${RUN_SUFFIX}}
for bit in $BITS; do
  for method in $METHODS; do
    # the seeds are the seed recipe's per-bit ones (--seed unset), the same for every method of a width
    python main_single_gpu.py --recipe "$RECIPE" --method "$method" --dataset "$DATASET" --data-path "$DATA_PATH" \
      --bit "$bit" --map-at "$TOPK" --output-dir "$OUT" --run-name "{dataset}_{bit}bits_$method" --resume auto \
      --plots false "$@"
  done
done
python scripts/report.py --runs "$OUT" --out "$OUT/report"
