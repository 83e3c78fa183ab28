#!/usr/bin/env bash
# Stage 4: evaluation with torchrun, one process per GPU, on one node or several. Every process
# decodes a disjoint share of the test batches; rank 0 gathers, writes one JSON and prints one table.
# N processes give exactly the 1-process predictions.
#
# Hyperparameters come from the recipe (RECIPE, section evaluate:); this script passes only paths and topology.
#   MODEL=output/sft_Office_Products/final_checkpoint CATEGORY=Office_Products bash evaluate.sh
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash evaluate.sh     # second of two nodes
# Extra evaluate.py flags after the script override the recipe: bash evaluate.sh --sample 200 --num_beams 20
# On a CPU box shared with other jobs, OMP_NUM_THREADS=1 NPROC=<free cores> is much faster than
# one multi-threaded process (small ops stall on busy cores).
set -euo pipefail
cd "$(dirname "$0")"

RECIPE=${RECIPE:-recipes/paper_qwen2.5_1.5b_8gpu.yaml}
CATEGORY=${CATEGORY:-Industrial_and_Scientific}
DATA_DIR=${DATA_DIR:-../shared/data/Amazon}
MODEL=${MODEL:-output/sft_${CATEGORY}/final_checkpoint}
RESULT_JSON=${RESULT_JSON:-output/eval_${CATEGORY}/predictions.json}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
NPROC=${NPROC:-${GPUS_PER_NODE:-}}  # processes per node, as every launcher takes it (GPUS_PER_NODE: the same)
if [ -z "${NPROC:-}" ]; then  # processes per node: one per visible GPU, or 1 on CPU
  NPROC=$($PYTHON -c "import torch; print(max(torch.cuda.device_count(), 1))")
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-${PORT:-}}
if [ -z "$MASTER_PORT" ]; then  # one node: any free port; several: one port every node knows
  if [ "$NNODES" = 1 ]; then MASTER_PORT=$($PYTHON -m minionerec.run.distributed); else MASTER_PORT=29502; fi
fi

test_file=$(ls "$DATA_DIR"/test/"$CATEGORY"*.csv)
train_file=$(ls "$DATA_DIR"/train/"$CATEGORY"*.csv)

args=(--config "$RECIPE" --base_model "$MODEL" --test_file "$test_file" --train_file "$train_file"
      --sid_index_path "$DATA_DIR/index/$CATEGORY.index.json" --result_json "$RESULT_JSON" --category "$CATEGORY" "$@")
# one process checks the topology variables and runs evaluate.py's own checks (flags, recipe, data, catalogue,
# tokenizer): bad input is one line, exit 2, before torchrun starts anything
[ "${PRECHECK:-1}" = 0 ] || $PYTHON -m minionerec.run.prelaunch --nproc "$NPROC" --nnodes "$NNODES" \
    --node_rank "$NODE_RANK" --world_size 1 -- evaluate.py "${args[@]}"
$PYTHON -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" evaluate.py "${args[@]}"
