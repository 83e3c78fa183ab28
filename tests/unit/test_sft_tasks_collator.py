"""The answer-window collator (left padding + logits_to_keep) gives the same loss and gradients
as the right-padded full-logits reference (transformers' DataCollatorForSeq2Seq)."""
import torch
from transformers import DataCollatorForSeq2Seq

from conftest import CATEGORY, split_path
from minionerec.data.sft_tasks import AnswerWindowCollator
from minionerec.data.formats import load_item_meta, load_sid_index, load_split
from minionerec.model.loading import load_model, load_tokenizer
from minionerec.data.sft_tasks import build_text_dataset, tokenize_dataset


def _features(demo_data, tokenizer, n=12):
    index = demo_data / "index"
    sid_index = load_sid_index(index / f"{CATEGORY}.index.json")
    meta = load_item_meta(index / f"{CATEGORY}.item.json")
    df = load_split(split_path(demo_data, "train"), sid_index, meta)
    # SID answers (5 tokens) mixed with title answers (longer, varied): windows differ per row
    ds = tokenize_dataset(build_text_dataset(["sid_history", "item_alignment", "sid_history_title"], df, sid_index,
                                             meta, seed=0), tokenizer, 512)
    # the rows carry no attention_mask (every token is real); the reference collator pads one
    return [{"input_ids": ds[i]["input_ids"], "attention_mask": [1] * len(ds[i]["input_ids"]),
             "labels": ds[i]["labels"]} for i in range(n)]


def _loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_answer_window_equals_full_logits_reference(demo_data, tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, dtype=torch.float32)
    features = _features(demo_data, tokenizer)
    reference = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, pad_to_multiple_of=8)(
        [dict(f) for f in features])
    window = AnswerWindowCollator(tokenizer.pad_token_id)(features)

    assert window["labels"].shape[1] == window["logits_to_keep"] < window["input_ids"].shape[1]
    assert (window["labels"] != -100).sum() == (reference["labels"] != -100).sum()  # every answer token kept
    ref_loss, ref_grads = _loss_and_grads(model, reference)
    loss, grads = _loss_and_grads(model, window)
    assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6), (loss, ref_loss)
    for name, g in grads.items():
        assert torch.allclose(g, ref_grads[name], rtol=1e-4, atol=1e-6), name


def test_first_token_of_a_row_is_never_a_target():
    """A whole row labelled: its first token has nothing of its row before it (the reference never predicts it;
    left-padded, the logit before it would be a pad's)."""
    batch = AnswerWindowCollator(pad_token_id=0, pad_to_multiple_of=4)(
        [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}])
    assert batch["logits_to_keep"] == 3 and batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, 9]]
    assert batch["position_ids"].tolist() == [[0, 0, 1, 2], [0, 0, 0, 1]]
    assert batch["attention_mask"].tolist() == [[0, 1, 1, 1], [0, 0, 1, 1]]
