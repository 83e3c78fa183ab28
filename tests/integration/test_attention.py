"""The padding-safe sdpa mask (minionerec/model/loading.py): no fully masked query row, and real tokens'
logits and gradients equal transformers' own sdpa mask and eager attention."""
from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

import minionerec.model.loading  # noqa: F401  (imports minionerec.model.loading, which registers the mask)
from minionerec.model.loading import padding_safe_sdpa_mask


def left_padded_batch():
    ids = torch.randint(0, 100, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # 5 pad positions
    mask[1, :1] = 0
    labels = ids.clone()
    labels[:, :6] = -100  # as in SFT: pads and each prompt's start are never predicted
    return dict(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), labels=labels)


def test_registered_for_sdpa():
    assert ALL_MASK_ATTENTION_FUNCTIONS["sdpa"] is padding_safe_sdpa_mask


def test_no_query_row_is_fully_masked():
    batch = left_padded_batch()
    plain = sdpa_mask(batch_size=3, q_length=12, kv_length=12, attention_mask=batch["attention_mask"].bool())
    safe = padding_safe_sdpa_mask(batch_size=3, q_length=12, kv_length=12, attention_mask=batch["attention_mask"].bool())
    assert not plain.any(-1).all()  # the situation being fixed: pad queries of row 0 see no key
    assert safe.any(-1).all()
    real = batch["attention_mask"].bool()[:, None, :, None]  # [B, 1, Q, 1]: real query rows
    assert torch.equal(safe & real, plain & real)  # real queries attend exactly as before


def _loss_and_grads(implementation: str, mask_fn=None):
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, attn_implementation=implementation)
    model = Qwen2ForCausalLM(config).train()
    saved = ALL_MASK_ATTENTION_FUNCTIONS["sdpa"]
    if mask_fn is not None:
        ALL_MASK_ATTENTION_FUNCTIONS._global_mapping["sdpa"] = mask_fn
    try:
        out = model(**left_padded_batch())
    finally:
        ALL_MASK_ATTENTION_FUNCTIONS._global_mapping["sdpa"] = saved
    out.loss.backward()
    return out.loss, {n: p.grad for n, p in model.named_parameters()}


def test_same_loss_and_gradients_as_plain_sdpa_and_eager():
    loss, grads = _loss_and_grads("sdpa")
    for ref_loss, ref_grads in (_loss_and_grads("sdpa", mask_fn=sdpa_mask), _loss_and_grads("eager")):
        torch.testing.assert_close(loss, ref_loss)
        for name, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[name], msg=name)
