#!/bin/sh
# Train HashNet on several GPUs (the seed: 2 GPUs x 64 images), four code lengths with the seed's per-bit seeds.
# DATASET=coco (default) | imagenet | nuswide_81; data root and K of mAP@K default to the dataset's preset.
# GPUS=0,1,2,3 DATA_PATH=/path/to/COCO2014 sh scripts/train_multi_gpu.sh
# DATASET=nuswide_81 DATA_PATH=/path/to/nuswide_81 sh scripts/train_multi_gpu.sh
# RECIPE=paper sh scripts/train_multi_gpu.sh     # the authors' recipe: each iteration's 2 x 256 images split over the GPUs
set -e
cd "$(dirname "$0")/.."
. scripts/dataset_defaults.sh
. scripts/launch_devices.sh
# the launcher's logs (workerlog.*) under the output folder, named by the dataset the runs really use
LOGS="$(flag_value --output-dir output "$@")/launch_logs/$(flag_value --dataset "$DATASET" "$@")"
for pair in 16:0 32:2000 48:200 64:2000; do
  bit=${pair%%:*}; seed=${pair##*:}
  if [ "$RECIPE" = paper ]; then
    launch "${LOGS}_${bit}bits_paper" \
      main_multi_gpu.py $DEVICE_FLAG --recipe paper --dataset "$DATASET" --data-path "$DATA_PATH" --bit "$bit" \
      --seed "$seed" --topK "$TOPK" --output-dir output --run-name "{dataset}_{bit}bits_paper" --resume auto "$@"
  else
    launch "${LOGS}_${bit}bits" \
      main_multi_gpu.py $DEVICE_FLAG --dataset "$DATASET" --data-path "$DATA_PATH" --bit "$bit" --seed "$seed" \
      --batch-size 64 --learning_rate 0.001 --sampling replicated --epoch 150 --eval_epoch 10 --topK "$TOPK" \
      --output-dir output --run-name "{dataset}_{bit}bits" --resume auto "$@"
  fi
done
