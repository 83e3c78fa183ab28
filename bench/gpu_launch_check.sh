#!/usr/bin/env bash
# GPU check of the launch configs on ONE GPU, through the real launchers, with a tiny model:
#   SFT with --deepspeed config/sft_zero2.json and config/sft_zero3.json ("auto" bf16 / batch sizes;
#   ZeRO-3 gathers 16-bit weights on save), RL with config/zero2_opt.yaml ("auto" bf16), evaluation.
# Usage: bash bench/gpu_launch_check.sh [OUT_DIR]   (a few minutes; prints one PASS/FAIL line per stage)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/out/gpu_launch_check}
PYTHON=${PYTHON:-python3}
ACCELERATE=${ACCELERATE:-$(dirname "$(command -v "$PYTHON")")/accelerate}
export PYTHON ACCELERATE RECIPE=recipes/demo.yaml TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
mkdir -p "$OUT"
status=0
stage() {  # stage NAME COMMAND...: run, keep the log, print PASS/FAIL
  local name=$1; shift
  if "$@" > "$OUT/$name.log" 2>&1; then echo "PASS $name"; else echo "FAIL $name (see $OUT/$name.log)"; tail -5 "$OUT/$name.log"; status=1; fi
}

$PYTHON -m minionerec.prep.make_demo_data --output_dir "$OUT/data" --category Demo > /dev/null
$PYTHON -m minionerec.model.tiny --output_dir "$OUT/base" --sid_index_path "$OUT/data/index/Demo.index.json" \
    --item_meta_path "$OUT/data/index/Demo.item.json" --hidden_size 64 --num_layers 2 > /dev/null
common=(NPROC=1 BASE_MODEL="$OUT/base" DATA_DIR="$OUT/data" CATEGORY=Demo)

for zero in zero2 zero3; do
  stage "sft_$zero" env "${common[@]}" OUTPUT_DIR="$OUT/sft_$zero" MASTER_PORT=29710 \
      bash sft.sh --max_steps 6 --eval_steps 3 --save_steps 3 --deepspeed "config/sft_$zero.json"
  # final_checkpoint must be an ordinary model (ZeRO-3: gathered 16-bit weights, not shards)
  stage "load_$zero" $PYTHON -c "from transformers import AutoModelForCausalLM as M; \
m = M.from_pretrained('$OUT/sft_$zero/final_checkpoint'); print(m.dtype, sum(p.numel() for p in m.parameters()))"
  ls "$OUT/sft_$zero" > "$OUT/sft_${zero}_dir.txt"
done
grep -h -m2 -i "bfloat16_enabled\|bf16.*enabled" "$OUT"/sft_zero2.log | head -2

stage rl_zero2 env "${common[@]}" CONFIG=config/zero2_opt.yaml NUM_PROCESSES=1 MASTER_PORT=29711 \
    MODEL_PATH="$OUT/sft_zero2/final_checkpoint" OUTPUT_DIR="$OUT/rl" bash rl.sh --max_steps 2 --save_steps 1
grep -h -m2 -i "bfloat16_enabled\|bf16.*enabled" "$OUT/rl_zero2.log" | head -2
ls "$OUT/rl" > "$OUT/rl_dir.txt"

stage evaluate env "${common[@]}" MODEL="$OUT/rl/final_checkpoint" RESULT_JSON="$OUT/eval/predictions.json" \
    MASTER_PORT=29712 bash evaluate.sh --sample 64
exit $status
