#!/usr/bin/env bash
# Stage 2: supervised fine-tuning with torchrun, one process per GPU, on one node or several.
#
# Hyperparameters come from the recipe (RECIPE, section sft:); this script passes only paths and topology.
#   bash sft.sh                                                     # all GPUs of this node, the paper recipe
#   RECIPE=recipes/qwen2.5_1.5b_1gpu.yaml NPROC=1 bash sft.sh       # one GPU
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash sft.sh           # node 0 of 2 (run with NODE_RANK=1 on the other)
#   REHEARSE=1 RECIPE=recipes/qwen2.5_7b_lora_24gb.yaml NPROC=1 bash sft.sh   # the same run rehearsed on CPU
# Extra sft.py flags after the script override the recipe: bash sft.sh --max_steps 100 --dry_run true
# Topology: NPROC (processes per node; default: the visible GPUs, 1 on CPU), NNODES, NODE_RANK, MASTER_ADDR,
# MASTER_PORT, or torchrun's PET_* variables (python -m minionerec.run.topology). Several nodes share one OUTPUT_DIR.
# PRECHECK=0 skips the one-process check of the flags and data before the launch. REHEARSE=1 (or --rehearse)
# runs the recipe end to end on CPU with a tiny model of the base model's family (docs/rehearsal.md).
set -euo pipefail
cd "$(dirname "$0")"

RECIPE=${RECIPE:-recipes/paper_qwen2.5_1.5b_8gpu.yaml}
BASE_MODEL=${BASE_MODEL:-./models/Qwen2.5-1.5B}
DATA_DIR=${DATA_DIR:-../shared/data/Amazon}
CATEGORY=${CATEGORY:-Industrial_and_Scientific}
OUTPUT_DIR=${OUTPUT_DIR:-output/sft_${CATEGORY}}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
rehearse=${REHEARSE:-0}; [[ " $* " == *" --rehearse "* ]] && rehearse=1
[ "$rehearse" = 1 ] && export MINIONEREC_REHEARSAL_GPUS=${REHEARSE_GPUS:-1}  # the GPUs per node a rehearsal pretends
# NPROC NNODES NODE_RANK MASTER_ADDR MASTER_PORT WORLD, checked: one count for the pre-check and the launch
topology=$($PYTHON -m minionerec.run.topology sft) || exit $?
eval "$topology"

args=(--recipe "$RECIPE" --base_model "$BASE_MODEL" --train_file "$(ls "$DATA_DIR"/train/"$CATEGORY"*.csv)"
      --eval_file "$(ls "$DATA_DIR"/valid/"$CATEGORY"*.csv)" --sid_index_path "$DATA_DIR/index/$CATEGORY.index.json"
      --item_meta_path "$DATA_DIR/index/$CATEGORY.item.json" --output_dir "$OUTPUT_DIR" --category "$CATEGORY" "$@")
launch=($PYTHON -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC"
        --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT")
if [ "$rehearse" = 1 ]; then
  export RECIPE DATA_DIR CATEGORY NPROC NNODES NODE_RANK MASTER_ADDR MASTER_PORT PYTHON
  exec $PYTHON -m minionerec.launch.rehearsal sft.py "${launch[@]}" -- "${args[@]}"
fi
# one process checks the flags, recipe, data and batch sizes for the world about to start: bad input is one line,
# exit 2, before torchrun starts anything
[ "${PRECHECK:-1}" = 0 ] || $PYTHON -m minionerec.run.prelaunch --nproc "$NPROC" --nnodes "$NNODES" \
    --node_rank "$NODE_RANK" -- sft.py "${args[@]}"
"${launch[@]}" sft.py "${args[@]}"
