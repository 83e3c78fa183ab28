"""Padding-free SFT batches: a micro-batch's rows packed into one row, logits only where a label is learnt.

The padded path (sft_tasks.AnswerWindowCollator) runs every row at the micro-batch's widest length;
SFT rows range from ~40 to 512 tokens, so a randomly mixed micro-batch carries pad tokens through
every matmul. `PackedCollator` concatenates the rows into one row of T = their real tokens instead:

- attention: `position_ids` restart at 0 at each row and there is no attention_mask, so transformers
  (masking_utils.find_packed_sequence_indices) finds the rows and builds a block-causal mask: a token
  attends to the earlier tokens of its own row only, at the positions (RoPE) it has alone.
  `use_cache=False` is part of the batch: with a cache (the configs' default, also in training)
  transformers skips that detection and every row would attend to the rows packed before it.
- logits: `logits_to_keep` holds the K positions whose next token is labelled and `shift_labels`
  [1, K] their targets, so the LM head runs on K positions and ForCausalLMLoss shifts nothing. The
  Trainer counts `shift_labels` for `num_items_in_batch`: K, as the padded path's labels[..., 1:],
  so losses are normalised alike under gradient accumulation and in evaluation.

Loss, gradients and Trainer steps equal the padded path (tests/unit/test_packing.py).

Cost: sdpa gets a dense [1, 1, T, T] mask and computes every query-key pair of the packed row, the
masked cross-row pairs too: attention scores cost ~4 x T x hidden FLOPs per token and layer, against
~B times less for B padded rows. Next to the matmuls (~2 x the layer's parameters per token) that is
small for short packed rows and dominant for long ones: bench/sft_step.py measures both.
"""
from __future__ import annotations

import torch


class PackedCollator:
    """The micro-batch's rows (`input_ids`, `labels` lists) concatenated into one row, without padding.

    Output tensors: input_ids, position_ids, labels [1, T]; logits_to_keep [K], the positions p whose
    label at p + 1 is learnt; shift_labels [1, K], those labels. A row's first token is never a target:
    no token of its row precedes it (the position before it is the previous row's last token).
    """

    def __call__(self, features: list[dict]) -> dict:
        input_ids = torch.tensor([[t for f in features for t in f["input_ids"]]])
        position_ids = torch.tensor([[p for f in features for p in range(len(f["input_ids"]))]])
        labels = torch.tensor([[y for f in features for y in [-100, *f["labels"][1:]]]])
        learnt = labels[0, 1:] != -100  # [T - 1]: the logit at p predicts the label at p + 1
        return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels,
                "logits_to_keep": learnt.nonzero().squeeze(-1), "shift_labels": labels[:, 1:][:, learnt],
                "use_cache": False}
