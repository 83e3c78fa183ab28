"""Big-model settings on CPU: LoRA keeps every frozen weight bit-identical and merges into a plain
checkpoint, the vocabulary padding can never be generated, evaluation batches fill the device, and
ZeRO-3 with uneven in-training evaluation runs on 2 processes."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

import evaluate
import rl
import sft
from conftest import CATEGORY, base_without_sids, split_path, weights
from minionerec.run.flags import parse_args
from minionerec.ranking.constrained import SIDLogitsProcessor, build_sid_trie, constrained_beam_search
from minionerec.data.formats import load_sid_index, sid_string, sid_vocabulary
from minionerec.ranking.evaluation import auto_batch_size
from minionerec.model.loading import VOCAB_MULTIPLE, add_sid_tokens

LORA_R = 4
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EMBEDDINGS = ("model.embed_tokens.weight", "lm_head.weight")


def assert_only_adapters_and_rows_changed(before, after, sid_rows: list[int]):
    """LoRA targets moved by a rank <= r update; the base's embedding rows outside `sid_rows` and
    every other tensor are bit-identical (rows added by SFT are the caller's to check)."""
    for name, old in before.items():
        new = after[name]
        if name in EMBEDDINGS:
            keep = torch.ones(old.shape[0], dtype=torch.bool)
            keep[[r for r in sid_rows if r < old.shape[0]]] = False
            assert torch.equal(old[keep], new[: old.shape[0]][keep]), f"{name}: a non-SID row changed"
        elif name.rsplit(".", 2)[-2] in LORA_TARGETS and name.endswith(".weight"):
            delta = (new - old).double()
            assert delta.abs().max() > 0, f"{name}: the adapter did not move"
            assert torch.linalg.matrix_rank(delta, atol=1e-6).item() <= LORA_R, f"{name}: update beyond rank r"
        else:
            assert torch.equal(old, new), f"{name} changed"


def sft_lora_args(demo_data, model_dir, out, **overrides):
    base = dict(base_model=str(model_dir), train_file=str(split_path(demo_data, "train")),
                eval_file="", output_dir=str(out),
                sid_index_path=str(demo_data / "index" / f"{CATEGORY}.index.json"),
                item_meta_path=str(demo_data / "index" / f"{CATEGORY}.item.json"),
                # shrunk: 8 rows, one batch per step; lr large enough to move a rank-4 adapter in 2 steps
                sample=8, batch_size=8, micro_batch_size=8, max_steps=2, learning_rate=1e-2, warmup_steps=0,
                task_item_alignment=False, task_sid_history_title=False, logging_steps=1, save_steps=1000,
                lora_r=LORA_R, lora_alpha=8, lora_dropout=0.0)
    base.update(overrides)
    return parse_args(sft.Args, base)


def test_sft_lora_trains_adapters_and_sid_rows_only_and_merges(demo_data, tmp_path):
    """Untied embeddings (as Qwen2.5-7B): both the embedding and the LM head get their SID rows trained."""
    base = tmp_path / "base"
    n_old = base_without_sids(demo_data, base, tied=False)
    sft.main(sft_lora_args(demo_data, base, tmp_path / "out"))
    final = tmp_path / "out" / "final_checkpoint"
    tokenizer = AutoTokenizer.from_pretrained(final)
    before, after = weights(base), weights(final)
    assert not any("lora" in k or "base_layer" in k or "trainable_tokens" in k for k in after)  # merged, plain keys
    n_tok, n_rows = len(tokenizer), after[EMBEDDINGS[0]].shape[0]
    assert n_tok > n_old and n_rows % VOCAB_MULTIPLE == 0 and n_rows - n_tok < VOCAB_MULTIPLE
    assert_only_adapters_and_rows_changed(before, after, sid_rows=list(range(n_old, n_tok)))
    for name in EMBEDDINGS:
        mean = before[name].mean(dim=0, dtype=torch.float32)  # how new rows start (grow_vocabulary)
        sid_rows, padding = after[name][n_old:n_tok], after[name][n_tok:]
        assert torch.equal(padding, mean.expand_as(padding)), f"{name}: padding rows trained"
        moved = (sid_rows != mean).any(dim=1)  # embedding: the SID tokens in these 8 rows; head: all of them
        assert moved.sum() > len(sid_rows) // 2 and sid_rows.std(dim=0).sum() > 0, f"{name}: SID rows did not train"

    model = AutoModelForCausalLM.from_pretrained(final)
    assert type(model).__name__ == "Qwen2ForCausalLM" and not model.config.tie_word_embeddings
    metrics = evaluate.main(evaluate.Args(base_model=str(final), test_file=str(split_path(demo_data, "test")),
                                          sid_index_path=str(demo_data / "index" / f"{CATEGORY}.index.json"),
                                          result_json=str(tmp_path / "pred.json"), num_beams=10, sample=12))
    ours = metrics["constrained beam search"]
    assert ours["users"] == 12 and ours["invalid"] == 0 and ours["duplicate"] == 0


def test_rl_lora_uses_the_disabled_adapter_as_reference_and_merges(demo_data, tiny_model_dir, tmp_path):
    """Tied embeddings (the tiny model, as Qwen2.5-0.5B): one set of SID rows serves embedding and head."""
    args = rl.Args(model_path=str(tiny_model_dir), output_dir=str(tmp_path), train_file=str(split_path(demo_data, "train")),
                   sid_index_path=str(demo_data / "index" / f"{CATEGORY}.index.json"),
                   item_meta_path=str(demo_data / "index" / f"{CATEGORY}.item.json"),
                   # shrunk: 2 groups of G=4 per step; add_gt makes rewards vary so gradients flow; 3 steps
                   # because step 1 runs at warm-up lr 0, so step 3 is the first to see moved adapters
                   batch_size=8, micro_batch_size=8, num_generations=4, max_steps=3, save_steps=100, learning_rate=1e-2,
                   title_history_sample=50, add_gt=True, reward_type="ranking", beta=0.04, gradient_checkpointing=False,
                   lora_r=LORA_R, lora_alpha=8, lora_dropout=0.0)
    trainer = rl.main(args)
    assert trainer.ref_model is None  # TRL's peft path: the reference is the policy with adapters disabled
    assert all(h["kl"] >= 0 for h in trainer.state.log_history if "kl" in h)
    assert [h["kl"] > 0 for h in trainer.state.log_history if "kl" in h] == [False, False, True]  # adapters moved
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sid_rows = tokenizer.convert_tokens_to_ids(sid_vocabulary(load_sid_index(args.sid_index_path)))
    before, after = weights(tiny_model_dir), weights(tmp_path / "final_checkpoint")
    assert_only_adapters_and_rows_changed(before, after, sid_rows)
    embed = EMBEDDINGS[0]
    assert not torch.equal(before[embed][sid_rows], after[embed][sid_rows])
    AutoModelForCausalLM.from_pretrained(tmp_path / "final_checkpoint")


@pytest.mark.parametrize("flags, message", [
    (dict(lora_r=-1), "--lora_r must be >= 0"),
    (dict(lora_r=4, train_only_new_tokens=True), "--lora_r > 0 excludes --train_only_new_tokens"),
    (dict(lora_r=4, lora_target_modules="q_proj,qq_proj"), r"--lora_target_modules: \['qq_proj'\] not in the model"),
])
def test_sft_lora_flag_errors(demo_data, tiny_model_dir, tmp_path, flags, message):
    with pytest.raises(SystemExit, match=f"error: {message}"):
        sft.main(sft_lora_args(demo_data, tiny_model_dir, tmp_path / "out", **flags))
    assert not (tmp_path / "out" / "final_checkpoint").exists()


def test_rl_lora_refuses_sync_ref_model(demo_data, tiny_model_dir, tmp_path):
    args = rl.Args(model_path=str(tiny_model_dir), train_file=str(split_path(demo_data, "train")),
                   sid_index_path=str(demo_data / "index" / f"{CATEGORY}.index.json"), lora_r=4, sync_ref_model=True)
    with pytest.raises(SystemExit, match="error: --lora_r > 0 needs --sync_ref_model false"):
        rl.main(args)


def test_vocabulary_padding_rows_are_never_generated(demo_data, tmp_path):
    """SID tokens grow the vocabulary to a multiple of 64; even with the padding rows given the
    highest logits, the constrained decoder emits only catalogue SIDs."""
    n_old = base_without_sids(demo_data, tmp_path, tied=True)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    sid_index = load_sid_index(demo_data / "index" / f"{CATEGORY}.index.json")
    add_sid_tokens(model, tokenizer, sid_vocabulary(sid_index))
    n_tok, n_rows = len(tokenizer), model.get_input_embeddings().weight.shape[0]
    assert n_tok > n_old and n_rows % VOCAB_MULTIPLE == 0 and n_tok < n_rows < n_tok + VOCAB_MULTIPLE
    embed = model.get_input_embeddings().weight.detach()
    assert torch.equal(embed[:n_old], weights(tmp_path)[EMBEDDINGS[0]])  # old rows untouched
    assert torch.equal(embed[n_old:], embed[:n_old].mean(0).expand(n_rows - n_old, -1))  # new rows: the mean
    # the worst case: the padding rows' logits beat every real token at every step
    model.lm_head.register_forward_hook(lambda module, inputs, logits: logits.index_add(
        -1, torch.arange(n_tok, n_rows), torch.full((*logits.shape[:-1], n_rows - n_tok), 1e4)))
    prompt = tokenizer("History: ", add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert model(prompt).logits[0, -1].argmax() >= n_tok  # unconstrained, a padding row is the top token
    trie = build_sid_trie(sid_index, tokenizer)
    processor = SIDLogitsProcessor(trie, prompt_len=0)
    for depth in range(trie.depth + 1):  # every prefix of every path, then past the end
        generated = trie.sequences[:, :depth]
        scores = processor(generated, torch.zeros(len(generated), n_rows))
        assert torch.isinf(scores[:, n_tok:]).all(), f"a padding row is allowed at depth {depth}"
    catalogue = {sid_string(s) for s in sid_index.values()}
    ranked = constrained_beam_search(model, tokenizer, ["History: ", "History: <a_1>"], trie, num_beams=8)
    assert all(len(r) == 8 and set(r) <= catalogue for r in ranked)


def test_freeze_llm_leaves_the_vocabulary_padding_at_its_init(demo_data, tmp_path):
    n_old = base_without_sids(demo_data, tmp_path / "base", tied=True)
    sft.main(sft_lora_args(demo_data, tmp_path / "base", tmp_path / "out", lora_r=0, train_only_new_tokens=True,
                           learning_rate=1e-1))
    n_tok = len(AutoTokenizer.from_pretrained(tmp_path / "out" / "final_checkpoint"))
    before, after = weights(tmp_path / "base")[EMBEDDINGS[0]], weights(tmp_path / "out" / "final_checkpoint")[EMBEDDINGS[0]]
    assert torch.equal(after[:n_old], before) and not torch.equal(after[n_old:n_tok], before.mean(0).expand(n_tok - n_old, -1))
    assert torch.equal(after[n_tok:], before.mean(0).expand(len(after) - n_tok, -1))  # padding: no update


@pytest.mark.parametrize("bf16, deepspeed, lora, expected", [
    (True, True, False, torch.bfloat16),  # DeepSpeed bf16 keeps bf16 weights (fp32 master copies itself)
    (True, False, True, torch.bfloat16),  # LoRA: frozen base in bf16
    (True, False, False, torch.float32),  # DDP / one GPU: autocast needs fp32 weights
    (False, True, True, torch.float32),  # no bf16 (CPU)
])
def test_training_dtype(bf16, deepspeed, lora, expected):
    from types import SimpleNamespace

    from minionerec.model.loading import training_dtype

    args = SimpleNamespace(bf16=bf16, deepspeed_plugin=object() if deepspeed else None)
    assert training_dtype(args, lora=lora) == expected


def test_auto_eval_batch_size_fills_the_budget_hand_computed():
    """Qwen2.5-0.5B shape in bf16, 50 beams, 150-token sequences, 80 GB free."""
    config = Qwen2Config(vocab_size=151_936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2)
    kv_row = 2 * 24 * 2 * 64 * 150 * 2  # K and V x layers x kv_heads x head_dim x tokens x bf16 = 1,843,200 B
    per_prompt = 50 * (2 * kv_row + 5 * 4 * 151_936)  # 336,256,000 B
    assert auto_batch_size(config, 2, 50, 150, 80 * 10**9) == 40 * 10**9 // per_prompt == 118
    assert auto_batch_size(config, 2, 50, 150, None) == 8  # CPU keeps the small default
    assert auto_batch_size(config, 2, 50, 150, 10**6) == 1  # never 0


def test_tf32_is_enabled_only_where_cuda_is(monkeypatch):
    from minionerec.model import loading

    matmul = torch.backends.cuda.matmul
    saved = matmul.allow_tf32
    try:
        matmul.allow_tf32 = False
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        loading.enable_tf32()
        assert matmul.allow_tf32 is False
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        loading.enable_tf32()
        assert matmul.allow_tf32 is True
    finally:
        matmul.allow_tf32 = saved


def test_sft_batches_are_random_by_default():
    """Length grouping is a flag, off by default: it lowered valid NDCG@10 on the demo (0.1298 vs 0.1702)."""
    assert sft.Args().group_by_length is False
