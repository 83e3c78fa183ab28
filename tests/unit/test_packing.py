"""Packed SFT batches (minionerec/data/packing.py) against the padded reference (AnswerWindowCollator): the same
loss, parameter gradients, answer logits and Trainer steps, on tiny random Qwen2 and Llama models."""
import copy

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments
from transformers.masking_utils import create_causal_mask

from minionerec.data.packing import PackedCollator
from minionerec.data.sft_tasks import AnswerWindowCollator
from minionerec.model.loading import load_tokenizer  # also registers the padding-safe sdpa mask
from minionerec.model.tiny import ARCHITECTURES
from test_sft_tasks_collator import _features

MODELS = [("qwen2", "sdpa"), ("qwen2", "eager"), ("llama", "sdpa")]  # the masks do not depend on the architecture


@pytest.fixture(scope="module")
def features(demo_data, tiny_model_dir):
    """16 tokenised SFT rows: SID answers and longer title answers after prompts of varied length."""
    return _features(demo_data, load_tokenizer(tiny_model_dir), n=16)


def random_model(architecture: str, vocab: int, attn: str = "sdpa"):
    config_cls, model_cls = ARCHITECTURES[architecture]
    torch.manual_seed(0)
    return model_cls(config_cls(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=1, intermediate_size=64, attn_implementation=attn))


def _vocab(features) -> int:
    return max(t for f in features for t in f["input_ids"]) + 1


def _loss_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_collator_layout():
    batch = PackedCollator()([{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]] and batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9]]  # a row's first token is never a target
    assert batch["logits_to_keep"].tolist() == [0, 1, 3] and batch["shift_labels"].tolist() == [[6, 7, 9]]
    assert batch["use_cache"] is False and "attention_mask" not in batch


def test_packed_row_attends_within_its_own_rows():
    """The installed transformers turns restarting position_ids (no attention mask) into a block-causal mask."""
    model = random_model("qwen2", vocab=50)
    position_ids = PackedCollator()([{"input_ids": [1, 2, 3], "labels": [1, 2, 3]},
                                     {"input_ids": [4, 5], "labels": [4, 5]}])["position_ids"]
    mask = create_causal_mask(config=model.config, inputs_embeds=torch.zeros(1, 5, 32), attention_mask=None,
                              cache=None, position_ids=position_ids)
    row = torch.tensor([0, 0, 0, 1, 1])
    expected = (row[:, None] == row[None, :]) & torch.ones(5, 5, dtype=torch.bool).tril()
    assert torch.equal(mask[0, 0], expected)


@pytest.mark.parametrize("architecture,attn", MODELS)
def test_packed_loss_and_gradients_equal_padded(features, architecture, attn):
    model = random_model(architecture, _vocab(features), attn)
    padded, packed = AnswerWindowCollator(pad_token_id=0)(features), PackedCollator()(features)
    assert packed["input_ids"].shape[1] == sum(len(f["input_ids"]) for f in features) < padded["input_ids"].numel()
    assert packed["shift_labels"].numel() == (padded["labels"][:, 1:] != -100).sum()  # Trainer's num_items_in_batch
    ref_loss, ref_grads = _loss_and_grads(model, padded)
    loss, grads = _loss_and_grads(model, packed)
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6), (loss, ref_loss)
    for name, g in grads.items():
        assert torch.allclose(g, ref_grads[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
def test_packed_logits_at_answer_positions_equal_padded(features, architecture):
    model = random_model(architecture, _vocab(features)).eval()
    padded, packed = AnswerWindowCollator(pad_token_id=0)(features), PackedCollator()(features)
    with torch.no_grad():
        window = model(**{k: v for k, v in padded.items() if k != "labels"}).logits  # [B, k, V]
        logits = model(**{k: v for k, v in packed.items() if k != "labels"}).logits  # [1, K, V]
    learnt = padded["labels"][:, 1:] != -100  # [B, k - 1]: the window logit at j predicts the label at j + 1
    assert torch.allclose(logits[0], window[:, :-1][learnt], rtol=1e-4, atol=1e-5)


def _train(model, collator, train, evaluation, out) -> tuple[Trainer, dict]:
    """2 optimizer steps of 2 x 3 rows, plain SGD: a wrongly normalised loss would change the update's size,
    which Adam would mostly hide."""
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=3, per_device_eval_batch_size=4,
                             gradient_accumulation_steps=2, max_steps=2, optim="sgd", learning_rate=0.5,
                             lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to=[],
                             use_cpu=True, seed=0, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation, data_collator=collator)
    trainer.train()
    return trainer, trainer.evaluate()


def test_trainer_steps_with_gradient_accumulation_equal_padded(features, tmp_path):
    """num_items_in_batch (labels counted over the accumulated micro-batches) and the eval loss (10 rows in
    batches of 4, 4, 2) come out the same, so packed and padded runs end with the same weights."""
    model = random_model("qwen2", _vocab(features))
    train, evaluation = Dataset.from_list(features[:12]), Dataset.from_list(features[6:])
    padded, padded_eval = _train(copy.deepcopy(model), AnswerWindowCollator(pad_token_id=0), train, evaluation,
                                 tmp_path / "padded")
    packed, packed_eval = _train(copy.deepcopy(model), PackedCollator(), train, evaluation, tmp_path / "packed")
    losses = lambda t: [h["loss"] for h in t.state.log_history if "loss" in h]  # noqa: E731
    assert losses(packed) == pytest.approx(losses(padded), rel=1e-5) and len(losses(padded)) == 2
    assert packed_eval["eval_loss"] == pytest.approx(padded_eval["eval_loss"], rel=1e-5)
    start, ref = dict(model.named_parameters()), dict(padded.model.named_parameters())
    for name, p in packed.model.named_parameters():
        assert not torch.allclose(ref[name], start[name]), name  # the steps moved every weight
        assert torch.allclose(p, ref[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("architecture", ["qwen2", "llama"])
def test_flex_attention_packed_equals_padded_sdpa(features, architecture):
    """flex_attention's block mask (the packed path's kernel on CUDA, skipping cross-row blocks) gives the padded
    sdpa loss and answer logits. Forward only: torch has no CPU backward for flex attention; on CUDA bench/gpu_check
    compares every step's loss of the packed flex run with the padded sdpa run."""
    vocab = _vocab(features)
    with torch.no_grad():
        ref = random_model(architecture, vocab, "sdpa")(**AnswerWindowCollator(pad_token_id=0)(features)).loss
        flex = random_model(architecture, vocab, "flex_attention")(**PackedCollator()(features)).loss
    assert torch.allclose(flex, ref, rtol=1e-5, atol=1e-6), (flex, ref)
