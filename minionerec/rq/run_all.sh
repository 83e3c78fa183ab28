#!/usr/bin/env bash
# All four SID methods on one catalogue, side by side, with the report tables collected in one file.
# Usage: bash minionerec/rq/run_all.sh ITEM_JSON OUT_DIR [RELEASE_INDEX_JSON]
#   ITEM_JSON           <Category>.item.json (item id -> title, description, ...)
#   OUT_DIR             gets <method>/<Category>.index.json, the embeddings and report.txt
#   RELEASE_INDEX_JSON  optional existing index.json to report next to ours (e.g. the public release's)
# Embeddings are offline TF-IDF/SVD; set MODEL_PATH to a local sentence-transformers model to use it instead.
set -euo pipefail
ITEM_JSON=${1:?item.json}
OUT=${2:?output dir}
RELEASE=${3:-}
PY=${PY:-.venv/bin/python}
LEVELS=${LEVELS:-3}
CODEBOOK=${CODEBOOK:-256}
RQVAE_EPOCHS=${RQVAE_EPOCHS:-50}        # CPU-friendly; upstream trains for thousands
PLUS_EPOCHS=${PLUS_EPOCHS:-30}
DEVICE=${DEVICE:-cpu}
CATEGORY=$(basename "$ITEM_JSON" .item.json)
EMB=$OUT/$CATEGORY.emb.npy
REPORT=$OUT/report.txt

mkdir -p "$OUT"
if [ -n "${MODEL_PATH:-}" ]; then
  $PY -m minionerec.rq.text2emb --item_meta_path "$ITEM_JSON" --output_path "$EMB" --model_path "$MODEL_PATH" --device "$DEVICE"
else
  $PY -m minionerec.rq.text2emb --item_meta_path "$ITEM_JSON" --output_path "$EMB" --method tfidf --dim 256
fi

{
  echo "# $CATEGORY: embeddings $( [ -n "${MODEL_PATH:-}" ] && echo "$MODEL_PATH" || echo "TF-IDF/SVD-256" ),"\
       "$LEVELS levels x $CODEBOOK codes, collision mode reassign; $(date -u +%F), $(nproc) CPU cores"
  if [ -n "$RELEASE" ]; then
    $PY -m minionerec.rq.report --index_path "$RELEASE" --codebook_size "$CODEBOOK" --name "release index.json"
  fi
} > "$REPORT"

COMMON=(--embedding_path "$EMB" --levels "$LEVELS" --codebook_size "$CODEBOOK" --seed 0)
run() {  # run <method> <extra flags...>: report table (stdout) appended, bars and logs to <method>.log
  local method=$1; shift
  local start=$SECONDS
  $PY -m "rq.$method" "${COMMON[@]}" --output_path "$OUT/$method/$CATEGORY.index.json" "$@" \
    2> "$OUT/$method.log" | grep -v '^wrote ' | tee -a "$REPORT"
  echo "($method: $((SECONDS - start)) s)" | tee -a "$REPORT"
}
run rqkmeans
run balanced_rqkmeans
run rqvae --epochs "$RQVAE_EPOCHS" --device "$DEVICE" --ckpt_dir "$OUT/rqvae/ckpt"
run rqkmeans_plus --epochs "$PLUS_EPOCHS" --device "$DEVICE" --ckpt_dir "$OUT/rqkmeans_plus/ckpt"
echo "report: $REPORT"
