#!/usr/bin/env bash
# GPU self-check (< 10 minutes on one GPU, no downloads): random-weight Qwen2.5-0.5B- and 1.5B-shaped
# models -> bf16 SFT, padded and --packing (tokens/s, MFU, packed/padded) -> evaluation 500 users x 50
# beams -> 8 GRPO steps under accelerate + config/zero2_opt.yaml with 1 process. One table on stdout,
# JSON in OUTPUT_DIR/gpu_check.json.
#   bash bench/gpu_check.sh                  # DATA_DIR, CATEGORY, OUTPUT_DIR, PYTHON may be set
#   SMOKE=1 bash bench/gpu_check.sh          # shrunk, on CPU (seconds)
#   RECIPES=1 bash bench/gpu_check.sh        # then the 1-GPU recipes' first steps at their real shapes, peak memory
#                                            # beside the arithmetic (python -m bench.recipe_memory; ~6 min, H100)
# Further flags go to bench/gpu_check.py (python -m bench.gpu_check --help).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
args=(--output_dir "${OUTPUT_DIR:-output/gpu_check}")
[ -n "${DATA_DIR:-}" ] && args+=(--data_dir "$DATA_DIR")
[ -n "${CATEGORY:-}" ] && args+=(--category "$CATEGORY")
[ "${SMOKE:-0}" = 1 ] && args+=(--smoke true)
"$PYTHON" -m bench.gpu_check "${args[@]}" "$@"
if [ "${RECIPES:-0}" = 1 ]; then
  recipes=(--output_dir "${OUTPUT_DIR:-output/gpu_check}/recipes")
  [ -n "${DATA_DIR:-}" ] && recipes+=(--data_dir "$DATA_DIR")
  [ -n "${CATEGORY:-}" ] && recipes+=(--category "$CATEGORY")
  [ "${SMOKE:-0}" = 1 ] && recipes+=(--smoke true)
  "$PYTHON" -m bench.recipe_memory "${recipes[@]}"
fi
