#!/bin/sh
# Evaluate the four trained HashNet models on one GPU: DATASET=coco (default, mAP@5000) | imagenet (mAP@1000) |
# nuswide_81 (mAP@5000). WEIGHTS_DIR holds ${DATASET}_{bit}bits/model_best_{bit}.pdparams (what the train scripts
# write; RECIPE=paper: ${DATASET}_{bit}bits_paper); DATA_PATH defaults to the dataset's preset.
set -e
cd "$(dirname "$0")/.."
. scripts/dataset_defaults.sh
WEIGHTS_DIR=${WEIGHTS_DIR:-output}
for pair in 16:0 32:2000 48:200 64:2000; do
  bit=${pair%%:*}; seed=${pair##*:}
  python main_single_gpu.py --eval --dataset "$DATASET" --data-path "$DATA_PATH" --bit "$bit" --seed "$seed" \
    --batch-size 128 --topK "$TOPK" --pretrained "$WEIGHTS_DIR/${DATASET}_${bit}bits${RUN_SUFFIX}/model_best_${bit}.pdparams" \
    --output-dir output --run-name "${DATASET}_${bit}bits${RUN_SUFFIX}_eval" "$@"
done
