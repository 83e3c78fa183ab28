#!/usr/bin/env bash
# The whole pipeline on generated demo data, on CPU, offline: data -> tiny base model -> SFT.
# Usage: bash demo.sh [OUT_DIR]   (make demo)   Knobs: SFT_STEPS, HIDDEN, LAYERS, PYTHON.
set -euo pipefail
cd "$(dirname "$0")"
OUT=${1:-demo_run}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
SFT_STEPS=${SFT_STEPS:-600}
HIDDEN=${HIDDEN:-128}
LAYERS=${LAYERS:-2}
CATEGORY=Demo
export TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled

echo "== 1/3 demo data -> $OUT/data"
$PYTHON data/make_demo_data.py --output_dir "$OUT/data" --category "$CATEGORY"

echo "== 2/3 tiny Qwen2 base model -> $OUT/base_model"
$PYTHON -m minionerec.tiny_model --output_dir "$OUT/base_model" \
    --sid_index_path "$OUT/data/index/$CATEGORY.index.json" \
    --item_meta_path "$OUT/data/index/$CATEGORY.item.json" \
    --hidden_size "$HIDDEN" --num_layers "$LAYERS"

echo "== 3/3 SFT ($SFT_STEPS steps) -> $OUT/sft"
NPROC=1 BASE_MODEL="$OUT/base_model" DATA_DIR="$OUT/data" CATEGORY="$CATEGORY" OUTPUT_DIR="$OUT/sft" \
    BATCH_SIZE=32 MICRO_BATCH_SIZE=32 LEARNING_RATE=3e-3 PYTHON="$PYTHON" \
    bash sft.sh --max_steps "$SFT_STEPS" --eval_steps 200 --save_steps 200 --logging_steps 50 \
        --warmup_steps 0.05
