#!/bin/bash
# Stage 3 — GRPO from the SFT checkpoint: constrained beam-search rollouts, rewards, KL to the reference.
#
#   bash rl.sh                                   # 8 GPUs, DeepSpeed ZeRO-2, bf16 (config/zero2_opt.yaml)
#   NUM_PROCESSES=1 bash rl.sh                   # one GPU
#   CONFIG=config/zero2_cpu.yaml NUM_PROCESSES=2 MAX_STEPS=2 bash rl.sh   # CPU smoke run
#
# Every variable below can be overridden from the environment. Precedence: rl.py defaults <
# the accelerate YAML (topology only) < these flags / accelerate's own flags (--num_processes).
set -euo pipefail
cd "$(dirname "$0")"

CATEGORY=${CATEGORY:-Industrial_and_Scientific}
DATA_DIR=${DATA_DIR:-../shared/data/Amazon}
MODEL_PATH=${MODEL_PATH:-output/sft_${CATEGORY}/final_checkpoint}   # sft.sh output (model + tokenizer)
OUTPUT_DIR=${OUTPUT_DIR:-output/rl_${CATEGORY}}
CONFIG=${CONFIG:-config/zero2_opt.yaml}
NUM_PROCESSES=${NUM_PROCESSES:-8}
PORT=${PORT:-$(${PYTHON:-python3} -m minionerec.free_port)}  # free one unless given; multi-node: set PORT
ACCELERATE=${ACCELERATE:-accelerate}                    # e.g. .venv/bin/accelerate
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-64}                # completions per process per step
GRAD_ACCUM=${GRAD_ACCUM:-2}
NUM_GENERATIONS=${NUM_GENERATIONS:-16}
NUM_EPOCHS=${NUM_EPOCHS:-2}
MAX_STEPS=${MAX_STEPS:--1}                              # > 0 overrides NUM_EPOCHS
LEARNING_RATE=${LEARNING_RATE:-1e-5}
BETA=${BETA:-1e-3}
REWARD_TYPE=${REWARD_TYPE:-ranking}
TEST_DURING_TRAINING=${TEST_DURING_TRAINING:-false}
TEST_BEAM=${TEST_BEAM:-20}
SAVE_STEPS=${SAVE_STEPS:-0.1}
TITLE_HISTORY_SAMPLE=${TITLE_HISTORY_SAMPLE:-10000}

TRAIN_FILE=$(ls ${DATA_DIR}/train/${CATEGORY}*.csv)
EVAL_FILE=$(ls ${DATA_DIR}/valid/${CATEGORY}*.csv)
INFO_FILE=$(ls ${DATA_DIR}/info/${CATEGORY}*.txt)
INDEX_DIR=${DATA_DIR}/index

${ACCELERATE} launch \
    --config_file ${CONFIG} \
    --num_processes ${NUM_PROCESSES} \
    --main_process_port ${PORT} \
    rl.py \
    --model_path ${MODEL_PATH} \
    --train_file ${TRAIN_FILE} \
    --eval_file ${EVAL_FILE} \
    --info_file ${INFO_FILE} \
    --sid_index_path ${INDEX_DIR}/${CATEGORY}.index.json \
    --item_meta_path ${INDEX_DIR}/${CATEGORY}.item.json \
    --category ${CATEGORY} \
    --output_dir ${OUTPUT_DIR} \
    --train_batch_size ${TRAIN_BATCH_SIZE} \
    --eval_batch_size 32 \
    --gradient_accumulation_steps ${GRAD_ACCUM} \
    --num_generations ${NUM_GENERATIONS} \
    --num_train_epochs ${NUM_EPOCHS} \
    --max_steps ${MAX_STEPS} \
    --learning_rate ${LEARNING_RATE} \
    --beta ${BETA} \
    --reward_type ${REWARD_TYPE} \
    --beam_search true \
    --temperature 1.0 \
    --dynamic_sampling false \
    --add_gt false \
    --mask_all_zero false \
    --sync_ref_model true \
    --dapo false \
    --gspo false \
    --sample_train false \
    --title_history_sample ${TITLE_HISTORY_SAMPLE} \
    --test_during_training ${TEST_DURING_TRAINING} \
    --eval_step 0.0999 \
    --test_beam ${TEST_BEAM} \
    --save_steps ${SAVE_STEPS} \
    --report_to none \
    "$@"
