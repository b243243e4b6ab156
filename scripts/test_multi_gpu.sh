#!/bin/sh
# Evaluate the four trained models on MS-COCO with several GPUs (each encodes its shard of the images).
set -e
cd "$(dirname "$0")/.."
DATA_PATH=${DATA_PATH:-./datasets/COCO2014/}
WEIGHTS_DIR=${WEIGHTS_DIR:-output}
. scripts/launch_devices.sh
for pair in 16:0 32:2000 48:200 64:2000; do
  bit=${pair%%:*}; seed=${pair##*:}
  python -m paddle.distributed.launch $DEVICES --log_dir "output/launch_logs/coco_${bit}bits_eval" \
    main_multi_gpu.py $DEVICE_FLAG --eval --dataset coco --data-path "$DATA_PATH" --bit "$bit" --seed "$seed" \
    --batch-size 64 --topK 5000 --pretrained "$WEIGHTS_DIR/coco_${bit}bits/model_best_${bit}.pdparams" \
    --output-dir output --run-name "coco_${bit}bits_eval" "$@"
done
