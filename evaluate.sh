#!/usr/bin/env bash
# Stage 4: evaluation with torchrun, one process per GPU, on one node or several. Every process
# decodes a disjoint share of the test batches; rank 0 gathers, writes one JSON and prints one table.
# N processes give exactly the 1-process predictions.
#
# Hyperparameters come from the recipe (RECIPE, section evaluate:); this script passes only paths and topology.
#   MODEL=output/sft_Office_Products/final_checkpoint CATEGORY=Office_Products bash evaluate.sh
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash evaluate.sh     # second of two nodes
#   REHEARSE=1 bash evaluate.sh                                    # rehearsed on CPU with a tiny model
# Extra evaluate.py flags after the script override the recipe: bash evaluate.sh --sample 200 --num_beams 20
# Topology: as sft.sh (python -m minionerec.run.topology).
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
rehearse=${REHEARSE:-0}; [[ " $* " == *" --rehearse "* ]] && rehearse=1
[ "$rehearse" = 1 ] && export MINIONEREC_REHEARSAL_GPUS=${REHEARSE_GPUS:-1}  # the GPUs per node a rehearsal pretends
# NPROC NNODES NODE_RANK MASTER_ADDR MASTER_PORT WORLD, checked: one count for the pre-check and the launch
topology=$($PYTHON -m minionerec.run.topology evaluate) || exit $?
eval "$topology"

args=(--recipe "$RECIPE" --base_model "$MODEL" --test_file "$(ls "$DATA_DIR"/test/"$CATEGORY"*.csv)"
      --train_file "$(ls "$DATA_DIR"/train/"$CATEGORY"*.csv)" --sid_index_path "$DATA_DIR/index/$CATEGORY.index.json"
      --result_json "$RESULT_JSON" --category "$CATEGORY" "$@")
launch=($PYTHON -m torch.distributed.run --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC"
        --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT")
if [ "$rehearse" = 1 ]; then
  export RECIPE DATA_DIR CATEGORY NPROC NNODES NODE_RANK MASTER_ADDR MASTER_PORT PYTHON
  exec $PYTHON -m minionerec.launch.rehearsal evaluate.py "${launch[@]}" -- "${args[@]}"
fi
# one process checks the flags, recipe, data, catalogue and tokenizer: bad input is one line, exit 2, before torchrun
# starts anything
[ "${PRECHECK:-1}" = 0 ] || $PYTHON -m minionerec.run.prelaunch --nproc "$NPROC" --nnodes "$NNODES" \
    --node_rank "$NODE_RANK" --world_size 1 -- evaluate.py "${args[@]}"
"${launch[@]}" evaluate.py "${args[@]}"
