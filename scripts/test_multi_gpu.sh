#!/bin/sh
# Evaluate the four trained models with several GPUs (each encodes its shard of the images).
# DATASET=coco (default) | imagenet | nuswide_81, as in test_single_gpu.sh.
set -e
cd "$(dirname "$0")/.."
. scripts/dataset_defaults.sh
WEIGHTS_DIR=${WEIGHTS_DIR:-output}
. scripts/launch_devices.sh
# the launcher's logs (workerlog.*) under the output folder, named by the dataset the runs really use
LOGS="$(flag_value --output-dir output "$@")/launch_logs/$(flag_value --dataset "$DATASET" "$@")"
for pair in 16:0 32:2000 48:200 64:2000; do
  bit=${pair%%:*}; seed=${pair##*:}
  launch "${LOGS}_${bit}bits${RUN_SUFFIX}_eval" \
    main_multi_gpu.py $DEVICE_FLAG --eval --dataset "$DATASET" --data-path "$DATA_PATH" --bit "$bit" --seed "$seed" \
    --batch-size 64 --topK "$TOPK" --pretrained "$WEIGHTS_DIR/${DATASET}_${bit}bits${RUN_SUFFIX}/model_best_${bit}.pdparams" \
    --output-dir output --run-name "${DATASET}_${bit}bits${RUN_SUFFIX}_eval" "$@"
done
