#!/bin/sh
# Train HashNet on MS-COCO on one GPU for the four code lengths, with the seed's per-bit seeds (SPEC §3).
# Override the data root with DATA_PATH=/path/to/COCO2014 sh scripts/train_single_gpu.sh
set -e
cd "$(dirname "$0")/.."
DATA_PATH=${DATA_PATH:-./datasets/COCO2014/}
for pair in 16:0 32:2000 48:200 64:2000; do
  bit=${pair%%:*}; seed=${pair##*:}
  python main_single_gpu.py --dataset coco --data-path "$DATA_PATH" --bit "$bit" --seed "$seed" \
    --batch-size 128 --learning_rate 0.001 --epoch 150 --eval_epoch 10 --topK 5000 \
    --output-dir output --run-name "{dataset}_{bit}bits" --resume auto "$@"
done
