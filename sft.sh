#!/usr/bin/env bash
# Stage 2: supervised fine-tuning with torchrun, one process per GPU, on one node or several.
#
# Hyperparameters come from the recipe (RECIPE, section sft:); this script passes only paths and topology.
#   bash sft.sh                                                     # all GPUs of this node, the paper recipe
#   RECIPE=recipes/qwen2.5_1.5b_1gpu.yaml NPROC=1 bash sft.sh       # one GPU
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash sft.sh           # node 0 of 2 (run with NODE_RANK=1 on the other)
# Extra sft.py flags after the script override the recipe: bash sft.sh --max_steps 100 --dry_run true
# PRECHECK=0 skips the one-process check of the flags and data before the launch.
set -euo pipefail
cd "$(dirname "$0")"

RECIPE=${RECIPE:-recipes/paper_qwen2.5_1.5b_8gpu.yaml}
BASE_MODEL=${BASE_MODEL:-./models/Qwen2.5-1.5B}
DATA_DIR=${DATA_DIR:-../shared/data/Amazon}
CATEGORY=${CATEGORY:-Industrial_and_Scientific}
OUTPUT_DIR=${OUTPUT_DIR:-output/sft_${CATEGORY}}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
# topology: processes per node (default: visible GPUs, or 1 on CPU), nodes, this node's rank, rendezvous
NPROC=${NPROC:-${GPUS_PER_NODE:-}}  # processes per node, as every launcher takes it (GPUS_PER_NODE: the same)
if [ -z "${NPROC:-}" ]; then
  NPROC=$($PYTHON -c "import torch; print(max(torch.cuda.device_count(), 1))")
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-${PORT:-}}
if [ -z "$MASTER_PORT" ]; then  # one node: any free port; several: one port every node knows
  if [ "$NNODES" = 1 ]; then MASTER_PORT=$($PYTHON -m minionerec.run.distributed); else MASTER_PORT=29501; fi
fi

train_file=$(ls "$DATA_DIR"/train/"$CATEGORY"*.csv)
eval_file=$(ls "$DATA_DIR"/valid/"$CATEGORY"*.csv)

args=(--config "$RECIPE" --base_model "$BASE_MODEL" --train_file "$train_file" --eval_file "$eval_file"
      --sid_index_path "$DATA_DIR/index/$CATEGORY.index.json" --item_meta_path "$DATA_DIR/index/$CATEGORY.item.json"
      --output_dir "$OUTPUT_DIR" --category "$CATEGORY" "$@")
# one process checks the topology variables and runs sft.py's own checks for the world about to start
# (flags, recipe, data, batch sizes): bad input is one line, exit 2, before torchrun starts anything
[ "${PRECHECK:-1}" = 0 ] || $PYTHON -m minionerec.run.prelaunch --nproc "$NPROC" --nnodes "$NNODES" \
    --node_rank "$NODE_RANK" -- sft.py "${args[@]}"
$PYTHON -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" sft.py "${args[@]}"
