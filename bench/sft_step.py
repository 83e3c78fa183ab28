"""SFT step time: right-padded full logits (reference) vs the answer-window collator.

    python -m bench.sft_step [--threads 1] [--steps 5]

Times forward + backward of one micro-batch of real-shaped SID-history rows (a ~90-token prompt,
a 5-token answer) on randomly initialised Qwen2 models: the cpu-preset tiny model, and the same
width with Qwen2.5's 151,936-token vocabulary. Prints ms per step, the ratio, and peak logits size.
"""
from __future__ import annotations


import torch
from step_timing import mean_ms, parse_args, random_qwen2

from minionerec.data.sft_tasks import AnswerWindowCollator

# (name, vocab, hidden, layers, micro batch)
SHAPES = [("cpu preset (tiny)", 4_560, 128, 2, 64), ("Qwen2.5 vocab", 151_936, 128, 2, 8)]
PROMPT, ANSWER = 90, 5  # tokens: the SID-history template with 3-10 history SIDs; SID + "\n" + EOS


def rows(batch: int, vocab: int, gen: torch.Generator) -> list[dict]:
    """`batch` rows of PROMPT +/- 4 tokens then ANSWER labelled tokens (varied lengths: real padding)."""
    out = []
    for _ in range(batch):
        n = PROMPT + int(torch.randint(-4, 5, (1,), generator=gen))
        ids = torch.randint(1, vocab, (n + ANSWER,), generator=gen).tolist()
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * n + ids[n:]})
    return out


def right_pad(features: list[dict], multiple: int = 8) -> dict:
    """The reference layout (what DataCollatorForSeq2Seq builds): right padding, full-length labels."""
    width = -(-max(len(f["input_ids"]) for f in features) // multiple) * multiple
    pad = lambda seq, value: seq + [value] * (width - len(seq))  # noqa: E731
    return {"input_ids": torch.tensor([pad(f["input_ids"], 0) for f in features]),
            "attention_mask": torch.tensor([pad(f["attention_mask"], 0) for f in features]),
            "labels": torch.tensor([pad(f["labels"], -100) for f in features])}


def step_ms(model, batch: dict, steps: int) -> float:
    def once():
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()

    return mean_ms(once, steps)[0]


def main() -> None:
    args = parse_args(__doc__, steps=5)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"{'model':<20} {'vocab':>8} {'batch':>5} {'reference ms':>12} {'window ms':>9} {'speed-up':>8} "
          f"{'ref logits MB':>13} {'window logits MB':>16}")
    for name, vocab, hidden, layers, batch in SHAPES:
        model = random_qwen2(vocab, hidden, layers, args.seed)
        features = rows(batch, vocab, gen)
        reference = right_pad(features)
        window = AnswerWindowCollator(pad_token_id=0)(features)
        ref_ms, win_ms = step_ms(model, reference, args.steps), step_ms(model, window, args.steps)
        mb = lambda cols: batch * cols * vocab * 4 / 2**20  # noqa: E731  fp32 logits
        print(f"{name:<20} {vocab:>8,} {batch:>5} {ref_ms:>12.1f} {win_ms:>9.1f} {ref_ms / win_ms:>7.2f}x "
              f"{mb(reference['input_ids'].shape[1]):>13.0f} {mb(window['logits_to_keep']):>16.0f}")


if __name__ == "__main__":
    main()
