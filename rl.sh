#!/bin/bash
# Stage 3 — GRPO from the SFT checkpoint: constrained beam-search rollouts, rewards, KL to the reference.
#
# Hyperparameters come from the recipe (RECIPE, section rl:); topology from the accelerate launch YAML
# (CONFIG). This script passes paths, and topology overrides only when asked:
#   bash rl.sh                                          # every visible GPU, ZeRO-2, bf16 (the YAML's)
#   NPROC=1 RECIPE=recipes/qwen2.5_1.5b_1gpu.yaml bash rl.sh                      # one GPU
#   CONFIG=config/zero2_two_nodes.yaml NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash rl.sh  # node 1 of the YAML's 2
#   NNODES=2 NPROC=8 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash rl.sh                  # any YAML on 2 nodes x 8
#   CONFIG=config/zero2_cpu.yaml RECIPE=recipes/demo.yaml bash rl.sh --max_steps 2  # CPU smoke run
# Process counts follow the convention of every launcher here: NPROC processes per node (GPUS_PER_NODE is
# the same; default: the visible GPUs, as sft.sh), NNODES nodes (default: the YAML's num_machines); rl.sh
# passes accelerate NNODES x NPROC. NUM_PROCESSES, accelerate's own TOTAL, still overrides. A box without
# GPUs keeps the YAML's num_processes (the CPU YAMLs name theirs). The launch YAML and the DeepSpeed JSON it names are checked first, then rl.py's own checks
# run once in one process (PRECHECK=0 skips that).
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

# topology overrides, each passed only when set (otherwise the launch YAML's value holds)
topology=()
[ -n "${NNODES:-}" ] && topology+=(--num_machines "$NNODES")
[ -n "${NODE_RANK:-}" ] && topology+=(--machine_rank "$NODE_RANK")
[ -n "${MASTER_ADDR:-}" ] && topology+=(--main_process_ip "$MASTER_ADDR")
PORT=${MASTER_PORT:-${PORT:-}}
if [ -z "$PORT" ] && [ -z "${NNODES:-}${NODE_RANK:-}" ] && ! grep -q '^main_process_port:' "$CONFIG" 2>/dev/null; then
  PORT=$($PYTHON -m minionerec.run.distributed)  # one node, no port named anywhere: a free one (two runs may share a box)
fi
[ -n "$PORT" ] && topology+=(--main_process_port "$PORT")
NPROC=${NPROC:-${GPUS_PER_NODE:-}}  # processes per node, as sft.sh and evaluate.sh take it
if [ -n "$NPROC" ] && ! [[ "$NPROC" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: NPROC must be a positive integer, got '$NPROC'" >&2; exit 2
fi
if [ -z "$NPROC" ] && [ -z "${NUM_PROCESSES:-}" ]; then
  gpus=$($PYTHON -c "import torch; print(torch.cuda.device_count())")  # honours CUDA_VISIBLE_DEVICES
  [ "$gpus" -gt 0 ] && NPROC=$gpus  # a 1- or 4-GPU box runs, whatever the YAML's num_processes says
fi
if [ -n "$NPROC" ]; then
  nodes=${NNODES:-$($PYTHON -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1])).get('num_machines', 1))" "$CONFIG")}
  NUM_PROCESSES=${NUM_PROCESSES:-$(( nodes * NPROC ))}
fi
[ -n "${NUM_PROCESSES:-}" ] && topology+=(--num_processes "$NUM_PROCESSES")

$PYTHON -m minionerec.run.ds_lock  # one line, no silent hang, if an interrupted DeepSpeed JIT build left its lock

TRAIN_FILE=$(ls "${DATA_DIR}"/train/"${CATEGORY}"*.csv)
EVAL_FILE=$(ls "${DATA_DIR}"/valid/"${CATEGORY}"*.csv)
INFO_FILE=$(ls "${DATA_DIR}"/info/"${CATEGORY}"*.txt)
INDEX_DIR=${DATA_DIR}/index

args=(--config "$RECIPE" --model_path "$MODEL_PATH" --train_file "$TRAIN_FILE" --eval_file "$EVAL_FILE"
      --info_file "$INFO_FILE" --sid_index_path "$INDEX_DIR/$CATEGORY.index.json"
      --item_meta_path "$INDEX_DIR/$CATEGORY.item.json" --category "$CATEGORY" --output_dir "$OUTPUT_DIR" "$@")
# one process checks the topology variables and runs rl.py's own checks for the world about to start (flags,
# recipe, data, tokenizer SIDs, rewards, batch sizes): bad input is one line, exit 2, before accelerate starts anything
if [ "${PRECHECK:-1}" != 0 ]; then
  WORLD=${NUM_PROCESSES:-$($PYTHON -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1])).get('num_processes', 1))" "$CONFIG")}
  $PYTHON -m minionerec.run.prelaunch --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}" --world_size "$WORLD" \
      -- rl.py "${args[@]}"
fi
MINIONEREC_LAUNCH_CONFIG="$CONFIG" ${ACCELERATE} launch --config_file "$CONFIG" "${topology[@]}" rl.py "${args[@]}"
