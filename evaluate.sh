#!/usr/bin/env bash
# Stage 4: evaluation with torchrun (one process per GPU; CPU uses 1 by default, NPROC=2 works).
# Every process decodes a disjoint share of the test batches; rank 0 gathers, writes one JSON and
# prints one table. N processes give exactly the 1-process predictions.
#
# Override any variable from the environment, e.g.
#   MODEL=output/sft_Office_Products/final_checkpoint DATA_DIR=/data/Amazon CATEGORY=Office_Products bash evaluate.sh
# and pass extra evaluate.py flags after the script: bash evaluate.sh --sample 200 --num_beams 20
# On a CPU box shared with other jobs, OMP_NUM_THREADS=1 NPROC=<free cores> is much faster than
# one multi-threaded process (small ops stall on busy cores).
set -euo pipefail
cd "$(dirname "$0")"

CATEGORY=${CATEGORY:-Industrial_and_Scientific}
DATA_DIR=${DATA_DIR:-../shared/data/Amazon}
MODEL=${MODEL:-output/sft_${CATEGORY}/final_checkpoint}
RESULT_JSON=${RESULT_JSON:-output/eval_${CATEGORY}/predictions.json}
NUM_BEAMS=${NUM_BEAMS:-50}
BATCH_SIZE=${BATCH_SIZE:-8}             # prompts per process and generate call
SEED=${SEED:-42}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
if [ -z "${NPROC:-}" ]; then  # one process per visible GPU, or 1 on CPU
  NPROC=$($PYTHON -c "import torch; print(max(torch.cuda.device_count(), 1))")
fi
PORT=${PORT:-$($PYTHON -m minionerec.free_port)}  # a free one unless given

test_file=$(ls "$DATA_DIR"/test/"$CATEGORY"*.csv)
train_file=$(ls "$DATA_DIR"/train/"$CATEGORY"*.csv)

$PYTHON -m torch.distributed.run --nproc_per_node "$NPROC" --master_port "$PORT" evaluate.py \
    --base_model "$MODEL" \
    --test_file "$test_file" \
    --train_file "$train_file" \
    --sid_index_path "$DATA_DIR/index/$CATEGORY.index.json" \
    --result_json "$RESULT_JSON" \
    --category "$CATEGORY" \
    --num_beams "$NUM_BEAMS" \
    --batch_size "$BATCH_SIZE" \
    --seed "$SEED" \
    "$@"
