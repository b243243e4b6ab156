#!/usr/bin/env bash
# The whole chain on a small slice of the toy set, in the spirit of TIPC's lite_train_lite_infer:
# train 2 epochs -> evaluate -> export -> Paddle Inference (codes, retrieval) -> predict.py -> the two agree.
# Stops at the first failing step (set -e), each step printing the command it runs. ~30 s on a 2-core CPU.
#
#   bash scripts/lite_chain.sh                # writes output/lite_chain/
#   OUT=/tmp/chain BIT=32 bash scripts/lite_chain.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
OUT=${OUT:-output/lite_chain}
BIT=${BIT:-64}
DATA=data/toy
LISTS="$OUT/lists"
DATASET=(--dataset toy --data-path "$DATA" --list-dir "$LISTS")
COMMON=("${DATASET[@]}" --bit "$BIT" --num_workers 2)

step() { echo; echo "=== $1"; }
run() { echo "+ $*" >&2; "$@"; }

step "toy data and a small list slice (200 train, 40 queries, 300 database images)"
run "$PY" -m utils.datasets.toy --root "$DATA"
# only this script's own outputs are removed, so OUT may point at a folder holding other things
run rm -rf "$LISTS" "$OUT/train" "$OUT/eval" "$OUT/inference" "$OUT/infer" "$OUT/predict" \
    "$OUT/infer_codes.txt" "$OUT/infer.jsonl" "$OUT/predict.jsonl" "$OUT/query_images"
run mkdir -p "$LISTS"
echo >&2 "+ head -n 200/40/300 $DATA/{train,test,database}.txt > $LISTS/"
head -n 200 "$DATA/train.txt" > "$LISTS/train.txt"
head -n 40 "$DATA/test.txt" > "$LISTS/test.txt"
head -n 300 "$DATA/database.txt" > "$LISTS/database.txt"
cp "$DATA/classes.txt" "$LISTS/classes.txt"
QUERY="$DATA/$(head -n 1 "$LISTS/database.txt" | cut -d' ' -f1)"
run mkdir -p "$OUT/query_images"  # a folder to encode: the slice's 40 queries
cut -d' ' -f1 "$LISTS/test.txt" | while read -r image; do cp "$DATA/$image" "$OUT/query_images/"; done

step "train 2 epochs"
run "$PY" main_single_gpu.py "${COMMON[@]}" --epoch 2 --eval_epoch 1 --output-dir "$OUT" --run-name train
CKPT="$OUT/train/model_best_${BIT}.pdparams"
run test -s "$CKPT"

step "evaluate the best checkpoint"
run "$PY" main_single_gpu.py "${COMMON[@]}" --eval --pretrained "$CKPT" --output-dir "$OUT" --run-name eval
run test -s "$OUT/eval/metrics.json"

step "export to a static inference model"
run "$PY" export_model.py --dataset toy --bit "$BIT" --pretrained "$CKPT" --save-inference-dir "$OUT/inference"
run test -s "$OUT/inference/export_meta.json"

step "Paddle Inference: codes of a folder, then retrieval (its own database codes)"
run "$PY" deploy/inference_python/infer.py --model-dir "$OUT/inference" --img "$OUT/query_images" --codes-only \
    > "$OUT/infer_codes.txt"
echo "$(wc -l < "$OUT/infer_codes.txt") codes in $OUT/infer_codes.txt"
run "$PY" deploy/inference_python/infer.py --model-dir "$OUT/inference" --img "$QUERY" "${DATASET[@]}" \
    --num_workers 2 --topk 5 --save_path "$OUT/infer" --json > "$OUT/infer.jsonl"

step "predict.py (dynamic graph, its own database codes)"
run "$PY" predict.py "${COMMON[@]}" --pretrained "$CKPT" --img "$QUERY" --topk 5 --save_path "$OUT/predict" --json \
    > "$OUT/predict.jsonl"

step "both engines return the same ranking, the query itself first at distance 0"
run "$PY" - "$OUT/predict.jsonl" "$OUT/infer.jsonl" "$QUERY" <<'EOF'
import json, sys
from pathlib import Path
predict, infer = ([json.loads(line) for line in open(p)] for p in sys.argv[1:3])
ranked = lambda rows: [(r["index"], r["distance"]) for q in rows for r in q["results"]]
if ranked(predict) != ranked(infer):
    sys.exit(f"predict.py and infer.py disagree:\n  {ranked(predict)}\n  {ranked(infer)}")
top = predict[0]["results"][0]
if top["distance"] != 0 or Path(top["path"]).resolve() != Path(sys.argv[3]).resolve():
    sys.exit(f"the query (a database image) is not rank 1 at distance 0: {top}")
print(f"ok: same top-{len(predict[0]['results'])} from both engines; rank 1 = the query, distance 0")
EOF
echo
echo "lite chain passed; everything is in $OUT"
