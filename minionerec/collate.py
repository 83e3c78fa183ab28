"""SFT batches whose logits cover only the answer window.

SFT learns only the answer (a SID is 3 tokens + "\\n" + EOS) after a ~90-token prompt, yet a causal LM
head computes logits at every position: [B, L, V] floats, with Qwen's V = 151,936 most of the step's
memory and, on small models, most of its FLOPs. Left padding puts every row's answer at the end of
the batch, so `logits_to_keep=k` (transformers' "last k positions") covers all answers, and the
labels are cut to the same k positions. The loss and gradients equal the right-padded full-logits
reference (tests/test_collate.py); `bench/sft_step.py` times both.
"""
from __future__ import annotations

import torch


class AnswerWindowCollator:
    """Left-pads `input_ids` / `labels` rows and adds `logits_to_keep` and `position_ids`.

    Output tensors: input_ids, attention_mask, position_ids [B, L]; labels [B, k], where k - 1 is
    the longest answer (first labelled token to the end) in the batch. The logit at window position
    j predicts the label at j + 1, so the window starts one token before the earliest answer.
    `position_ids` count from 0 at each row's first real token, as with right padding.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 8):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict:
        lengths = [len(f["input_ids"]) for f in features]
        width = -(-max(lengths) // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        answer = 1
        for row, (f, n) in enumerate(zip(features, lengths)):
            input_ids[row, width - n:] = torch.as_tensor(f["input_ids"])
            labels[row, width - n:] = torch.as_tensor(f["labels"])
            attention_mask[row, width - n:] = 1
            labelled = [i for i, y in enumerate(f["labels"]) if y != -100]
            if labelled:
                answer = max(answer, n - labelled[0])
        keep = min(answer + 1, width)  # one more logit: the prompt's last token predicts the answer's first
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                "labels": labels[:, -keep:], "logits_to_keep": keep}
