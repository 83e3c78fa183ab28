#!/bin/bash
# Stage 3 — GRPO from the SFT checkpoint: constrained beam-search rollouts, rewards, KL to the reference.
#
# Hyperparameters come from the recipe (RECIPE, section rl:); topology from the accelerate launch YAML
# (CONFIG). This script passes paths, and topology overrides only when asked:
#   bash rl.sh                                          # every visible GPU, ZeRO-2, bf16 (the YAML's)
#   NPROC=1 RECIPE=recipes/qwen2.5_1.5b_1gpu.yaml bash rl.sh                      # one GPU
#   CONFIG=config/zero2_two_nodes.yaml NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash rl.sh  # node 1 of the YAML's 2
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash rl.sh                          # any YAML on 2 nodes, all GPUs of each
#   CONFIG=config/zero2_cpu.yaml RECIPE=recipes/demo.yaml bash rl.sh --max_steps 2  # CPU smoke run
#   REHEARSE=1 RECIPE=recipes/qwen2.5_7b_lora_24gb.yaml NPROC=1 bash rl.sh        # the same run rehearsed on CPU
# Process counts follow the convention of every launcher here: NPROC processes per node (GPUS_PER_NODE is
# the same; default: the visible GPUs, as sft.sh), NNODES nodes (default: the YAML's num_machines); rl.sh
# passes accelerate NNODES x NPROC. NUM_PROCESSES, accelerate's own total, may replace NPROC. A box without
# GPUs keeps the YAML's num_processes (the CPU YAMLs name theirs). torchrun's PET_* variables are honoured
# (python -m minionerec.run.topology). The launch YAML and the DeepSpeed JSON it names are checked first, then
# rl.py's own checks run once in one process (PRECHECK=0 skips that). Several nodes share one OUTPUT_DIR.
set -euo pipefail
cd "$(dirname "$0")"

RECIPE=${RECIPE:-recipes/paper_qwen2.5_1.5b_8gpu.yaml}
CATEGORY=${CATEGORY:-Industrial_and_Scientific}
DATA_DIR=${DATA_DIR:-../shared/data/Amazon}
MODEL_PATH=${MODEL_PATH:-output/sft_${CATEGORY}/final_checkpoint}   # sft.sh output (model + tokenizer)
OUTPUT_DIR=${OUTPUT_DIR:-output/rl_${CATEGORY}}
CONFIG=${CONFIG:-config/zero2_opt.yaml}
ACCELERATE=${ACCELERATE:-accelerate}                    # e.g. .venv/bin/accelerate
PYTHON=${PYTHON:-$(dirname "$(command -v "$ACCELERATE" || echo python)")/python}
[ -x "$PYTHON" ] || PYTHON=python

# one line and no launch if the YAML, or the DeepSpeed JSON it names, is missing or has an unknown key
$PYTHON -m minionerec.run.launch_config "$CONFIG"
rehearse=${REHEARSE:-0}; [[ " $* " == *" --rehearse "* ]] && rehearse=1
[ "$rehearse" = 1 ] && export MINIONEREC_REHEARSAL_GPUS=${REHEARSE_GPUS:-1}  # the GPUs per node a rehearsal pretends
# NPROC NNODES NODE_RANK MASTER_ADDR MASTER_PORT WORLD from the variables and the YAML, checked against each other:
# one count for the pre-check and the launch
topology=$($PYTHON -m minionerec.run.topology rl "$CONFIG") || exit $?
eval "$topology"
$PYTHON -m minionerec.run.ds_lock  # one line, no silent hang, if an interrupted DeepSpeed JIT build left its lock

args=(--recipe "$RECIPE" --model_path "$MODEL_PATH" --train_file "$(ls "$DATA_DIR"/train/"$CATEGORY"*.csv)"
      --eval_file "$(ls "$DATA_DIR"/valid/"$CATEGORY"*.csv)" --info_file "$(ls "$DATA_DIR"/info/"$CATEGORY"*.txt)"
      --sid_index_path "$DATA_DIR/index/$CATEGORY.index.json" --item_meta_path "$DATA_DIR/index/$CATEGORY.item.json"
      --category "$CATEGORY" --output_dir "$OUTPUT_DIR" "$@")
# accelerate's flags override the YAML: every value resolved above, so accelerate starts what was checked
launch=(env MINIONEREC_LAUNCH_CONFIG="$CONFIG" $ACCELERATE launch --config_file "$CONFIG" --num_machines "$NNODES"
        --machine_rank "$NODE_RANK" --num_processes "$WORLD" --main_process_port "$MASTER_PORT")
[ "$NNODES" -gt 1 ] && launch+=(--main_process_ip "$MASTER_ADDR")
if [ "$rehearse" = 1 ]; then
  export RECIPE DATA_DIR CATEGORY NPROC NNODES NODE_RANK MASTER_ADDR MASTER_PORT PYTHON CONFIG
  exec $PYTHON -m minionerec.launch.rehearsal rl.py "${launch[@]}" -- "${args[@]}"
fi
# one process checks the flags, recipe, data, tokenizer SIDs, rewards and batch sizes for the world about to start:
# bad input is one line, exit 2, before accelerate starts anything
[ "${PRECHECK:-1}" = 0 ] || $PYTHON -m minionerec.run.prelaunch --nproc "$NPROC" --nnodes "$NNODES" \
    --node_rank "$NODE_RANK" -- rl.py "${args[@]}"
"${launch[@]}" rl.py "${args[@]}"
