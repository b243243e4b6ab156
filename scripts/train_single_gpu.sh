#!/bin/sh
# Train HashNet on one GPU for the four code lengths, with the seed's per-bit seeds (docs/protocol.md#seed-recipe: 16->0, 32->2000,
# 48->200, 64->2000; chosen by the seed for COCO and kept for every dataset).
# DATASET=coco (default) | imagenet | nuswide_81; the data root and K of mAP@K default to the dataset's preset:
#   DATA_PATH=/path/to/COCO2014 sh scripts/train_single_gpu.sh
#   DATASET=imagenet DATA_PATH=/path/to/imagenet sh scripts/train_single_gpu.sh     # mAP@1000
#   RECIPE=paper sh scripts/train_single_gpu.sh     # the authors' Caffe recipe: 10,000 iterations of 2 x 256 images
set -e
cd "$(dirname "$0")/.."
. scripts/dataset_defaults.sh
for pair in 16:0 32:2000 48:200 64:2000; do
  bit=${pair%%:*}; seed=${pair##*:}
  if [ "$RECIPE" = paper ]; then
    python main_single_gpu.py --recipe paper --dataset "$DATASET" --data-path "$DATA_PATH" --bit "$bit" \
      --seed "$seed" --topK "$TOPK" --output-dir output --run-name "{dataset}_{bit}bits_paper" --resume auto "$@"
  else
    python main_single_gpu.py --dataset "$DATASET" --data-path "$DATA_PATH" --bit "$bit" --seed "$seed" \
      --batch-size 128 --learning_rate 0.001 --epoch 150 --eval_epoch 10 --topK "$TOPK" \
      --output-dir output --run-name "{dataset}_{bit}bits" --resume auto "$@"
  fi
done
