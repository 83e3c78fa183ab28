#!/usr/bin/env bash
# The whole pipeline on generated demo data, on CPU, offline:
#   data (balanced RQ-Kmeans SIDs) -> tiny Qwen2 -> SFT -> evaluate -> RL (GRPO) -> evaluate.
# Usage: bash demo.sh [OUT_DIR]   (make demo)
# Hyperparameters: recipes/demo.yaml (sections sft / rl / evaluate; edit it, or copy it and set RECIPE).
# Other knobs: HIDDEN, LAYERS (the tiny model's shape), PYTHON, ACCELERATE.
set -euo pipefail
cd "$(dirname "$0")"
OUT=${1:-demo_run}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
ACCELERATE=${ACCELERATE:-$( [ -x .venv/bin/accelerate ] && echo .venv/bin/accelerate || echo accelerate )}
HIDDEN=${HIDDEN:-128}
LAYERS=${LAYERS:-2}
CATEGORY=Demo
export RECIPE=${RECIPE:-recipes/demo.yaml} TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled

echo "== 1/6 demo data -> $OUT/data"
$PYTHON -m minionerec.prep.make_demo_data --output_dir "$OUT/data" --category "$CATEGORY"

echo "== 2/6 tiny Qwen2 base model -> $OUT/base_model"
$PYTHON -m minionerec.model.tiny --output_dir "$OUT/base_model" \
    --sid_index_path "$OUT/data/index/$CATEGORY.index.json" \
    --item_meta_path "$OUT/data/index/$CATEGORY.item.json" \
    --hidden_size "$HIDDEN" --num_layers "$LAYERS"

echo "== 3/6 SFT -> $OUT/sft"
NPROC=1 PORT=29660 BASE_MODEL="$OUT/base_model" DATA_DIR="$OUT/data" CATEGORY="$CATEGORY" OUTPUT_DIR="$OUT/sft" \
    PYTHON="$PYTHON" bash sft.sh

echo "== 4/6 evaluate SFT -> $OUT/eval_sft"
MODEL="$OUT/sft/final_checkpoint" DATA_DIR="$OUT/data" CATEGORY="$CATEGORY" NPROC=1 PORT=29661 PYTHON="$PYTHON" \
    RESULT_JSON="$OUT/eval_sft/predictions.json" bash evaluate.sh | tee "$OUT/eval_sft.txt"

echo "== 5/6 RL (GRPO, constrained beam-search rollouts, CPU DeepSpeed ZeRO-2) -> $OUT/rl"
ACCELERATE="$ACCELERATE" PYTHON="$PYTHON" CONFIG=config/zero2_cpu.yaml NPROC=1 PORT=29650 \
    DATA_DIR="$OUT/data" CATEGORY="$CATEGORY" MODEL_PATH="$OUT/sft/final_checkpoint" OUTPUT_DIR="$OUT/rl" \
    bash rl.sh

echo "== 6/6 evaluate RL -> $OUT/eval_rl"
MODEL="$OUT/rl/final_checkpoint" DATA_DIR="$OUT/data" CATEGORY="$CATEGORY" NPROC=1 PORT=29662 PYTHON="$PYTHON" \
    RESULT_JSON="$OUT/eval_rl/predictions.json" bash evaluate.sh | tee "$OUT/eval_rl.txt"

echo "== SFT vs RL (demo test split, 20 constrained beams)"
grep -h -m1 "^method" "$OUT/eval_sft.txt"
grep -h '^popularity (train)' "$OUT/eval_sft.txt"
sed -n 's/^constrained beam search/SFT                    /p' "$OUT/eval_sft.txt"
sed -n 's/^constrained beam search/SFT + RL               /p' "$OUT/eval_rl.txt"
