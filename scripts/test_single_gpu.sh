#!/bin/sh
# Evaluate the four trained HashNet models on MS-COCO (mAP@5000) on one GPU.
# WEIGHTS_DIR holds coco_{bit}bits/model_best_{bit}.pdparams (what train_single_gpu.sh writes).
set -e
cd "$(dirname "$0")/.."
DATA_PATH=${DATA_PATH:-./datasets/COCO2014/}
WEIGHTS_DIR=${WEIGHTS_DIR:-output}
for pair in 16:0 32:2000 48:200 64:2000; do
  bit=${pair%%:*}; seed=${pair##*:}
  python main_single_gpu.py --eval --dataset coco --data-path "$DATA_PATH" --bit "$bit" --seed "$seed" \
    --batch-size 128 --topK 5000 --pretrained "$WEIGHTS_DIR/coco_${bit}bits/model_best_${bit}.pdparams" \
    --output-dir output --run-name "coco_${bit}bits_eval" "$@"
done
