#!/bin/sh
# The main job on the built-in toy set, on any CPU (32 s of CPU time; README.md has wall times): generate the toy
# images (first run only),
# train HashNet (64 bits; the frozen random backbone runs once per run, utils/train/frozen.py), print the best checkpoint's
# mAP (from its evaluation during training, on the whole database) next to random codes' mAP, and show the top 10 of
# a typical query as a contact sheet (predict.py, on the database codes the training run left in its folder).
set -e
cd "$(dirname "$0")/.."
RUN=${RUN:-toy_demo}
# --overwrite: a second demo moves the first one's folder aside (output/$RUN.old-<time>) rather than mixing with it
python main_single_gpu.py --dataset toy --bit 64 --num_workers 2 --run-name "$RUN" --overwrite "$@"
# the first 9 queries, to show the one of median precision: typical, neither the best nor the worst
QUERIES=$(head -n 9 data/toy/test.txt | sed 's|^\([^ ]*\).*|data/toy/\1|')
# shellcheck disable=SC2086  # one argument per query path
python predict.py --pretrained "output/$RUN" --num-results 10 --json --img $QUERIES > "output/$RUN/retrieval/demo.jsonl"
python - "$RUN" <<'PY'
import json, sys
run = sys.argv[1]
doc = json.load(open(f"output/{run}/metrics.json"))
m = doc["best"]  # the best checkpoint's metrics, computed when it was saved, on the whole database
bit = json.load(open(f"output/{run}/config.json"))["bit"]
entries = [json.loads(line) for line in open(f"output/{run}/retrieval/demo.jsonl")]
right = [sum(1 for item in e["results"] if item["shared_labels"]) for e in entries]
typical = sorted(range(len(entries)), key=right.__getitem__)[len(entries) // 2]
print(f"\ntoy demo, {bit} bits, {m['num_query']} queries x {m['num_database']} database images "
      f"(best checkpoint: epoch {doc['best_epoch']} of {doc['final_epoch']}, chosen on the query set):")
print(f"  HashNet codes  mAP@{m['topk']} = {m['map']:.4f}")
print(f"  random codes   mAP@{m['topk']} = {m['map_random_codes']:.4f}")
print(f"the first {len(entries)} queries: of each one's top 10, {', '.join(map(str, right))} share a label with it")
print(f"contact sheet of the median one, {entries[typical]['query']} ({right[typical]} of 10; query framed blue, "
      f"results green when they share a label with it, red when not): {entries[typical]['contact_sheet']}")
print(f"precision-recall curve: output/{run}/pr_curve.png")
print(f"run folder: output/{run} (log, config.json, epochs.jsonl, metrics.json, plots, checkpoints, retrieval)")
PY
