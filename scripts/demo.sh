#!/bin/sh
# The main job on the built-in toy set, on any CPU in about 7–8 minutes (2 cores): generate the toy images (first run
# only), train HashNet (64 bits), evaluate the best checkpoint, and print its mAP next to random codes' mAP.
set -e
cd "$(dirname "$0")/.."
RUN=${RUN:-toy_demo}
python main_single_gpu.py --dataset toy --bit 64 --num_workers 2 --run-name "$RUN" "$@"
python main_single_gpu.py --dataset toy --bit 64 --num_workers 2 --eval \
  --pretrained "output/$RUN/model_best_64.pdparams" --run-name "${RUN}_eval"
python - "$RUN" <<'PY'
import json, sys
run = sys.argv[1]
m = json.load(open(f"output/{run}_eval/metrics.json"))["final"]
print(f"\ntoy demo, 64 bits, {m['num_query']} queries x {m['num_database']} database images:")
print(f"  HashNet codes  mAP@{m['topk']} = {m['map']:.4f}")
print(f"  random codes   mAP@{m['topk']} = {m['map_random_codes']:.4f}")
print(f"run folder: output/{run} (log, config.json, epochs.jsonl, metrics.json, plots, checkpoints)")
PY
