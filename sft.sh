#!/usr/bin/env bash
# Stage 2: supervised fine-tuning with torchrun (one process per GPU; CPU works with NPROC=1 or 2).
#
# Needs: `make install` (or the packages of requirements.txt), a local base model directory (a Qwen2
# checkpoint or `python -m minionerec.tiny_model` output), and MiniOneRec-format data.
# Override any variable from the environment, e.g.
#   BASE_MODEL=/models/Qwen2.5-1.5B DATA_DIR=/data/Amazon CATEGORY=Office_Products bash sft.sh
# and pass extra sft.py flags after the script: bash sft.sh --max_steps 100 --freeze_LLM true
set -euo pipefail
cd "$(dirname "$0")"

BASE_MODEL=${BASE_MODEL:-./models/Qwen2.5-1.5B}
DATA_DIR=${DATA_DIR:-../shared/data/Amazon}
CATEGORY=${CATEGORY:-Industrial_and_Scientific}
OUTPUT_DIR=${OUTPUT_DIR:-output/sft_${CATEGORY}}
BATCH_SIZE=${BATCH_SIZE:-1024}          # global batch
MICRO_BATCH_SIZE=${MICRO_BATCH_SIZE:-16} # per process
NUM_EPOCHS=${NUM_EPOCHS:-10}
LEARNING_RATE=${LEARNING_RATE:-3e-4}
CUTOFF_LEN=${CUTOFF_LEN:-512}
SEED=${SEED:-42}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
if [ -z "${NPROC:-}" ]; then  # one process per visible GPU, or 1 on CPU
  NPROC=$($PYTHON -c "import torch; print(max(torch.cuda.device_count(), 1))")
fi
PORT=${PORT:-$($PYTHON -m minionerec.free_port)}  # a free one unless given

train_file=$(ls "$DATA_DIR"/train/"$CATEGORY"*.csv)
eval_file=$(ls "$DATA_DIR"/valid/"$CATEGORY"*.csv)

$PYTHON -m torch.distributed.run --nproc_per_node "$NPROC" --master_port "$PORT" sft.py \
    --base_model "$BASE_MODEL" \
    --train_file "$train_file" \
    --eval_file "$eval_file" \
    --sid_index_path "$DATA_DIR/index/$CATEGORY.index.json" \
    --item_meta_path "$DATA_DIR/index/$CATEGORY.item.json" \
    --output_dir "$OUTPUT_DIR" \
    --category "$CATEGORY" \
    --batch_size "$BATCH_SIZE" \
    --micro_batch_size "$MICRO_BATCH_SIZE" \
    --num_epochs "$NUM_EPOCHS" \
    --learning_rate "$LEARNING_RATE" \
    --cutoff_len "$CUTOFF_LEN" \
    --seed "$SEED" \
    "$@"
