"""SFT step time: right-padded full logits (reference), the answer-window collator (padded) and packing.

    python -m bench.sft_step [--threads 1] [--steps 3]      (~5 minutes on 2 cores)

Times forward + backward of one micro-batch on randomly initialised Qwen2 models (the cpu-preset tiny
width, a 4x wider one, and the tiny width with Qwen2.5's 151,936-token vocabulary) for two kinds of
rows: "sid", SID-history rows (a ~90-token prompt, a 5-token answer: little padding), and "mix",
lengths spread as in the five-task mix (40-300-token prompts, 5-25-token answers: much padding).
Prints ms per step, pad tokens per real token of the padded batch, the window's speed-up over the
reference, and packed vs padded (window ms / packed ms: > 1 means packing is faster), all measured in
the same run. Packing saves the padding's matmuls but its attention covers the whole packed row
(minionerec/data/packing.py), so it wins on wide models and short packed rows and loses otherwise.
"""
from __future__ import annotations

import torch

from bench.step_timing import mean_ms, parse_args, random_qwen2
from minionerec.data.packing import PackedCollator
from minionerec.data.sft_tasks import AnswerWindowCollator

# name -> (vocab, hidden, layers)
SHAPES = {"cpu preset (tiny)": (4_560, 128, 2), "4x wider": (4_560, 512, 2), "Qwen2.5 vocab": (151_936, 128, 2)}
# rows -> (prompt tokens low, high, answer tokens low, high), uniform; "sid": the SID-history template with
# 3-10 history SIDs, then SID + "\n" + EOS
ROWS = {"sid": (86, 94, 5, 5), "mix": (40, 300, 5, 25)}
# (shape, rows, micro batch): packed rows of ~400 to ~6,000 tokens
CELLS = [("cpu preset (tiny)", "sid", 4), ("cpu preset (tiny)", "sid", 64), ("cpu preset (tiny)", "mix", 4),
         ("cpu preset (tiny)", "mix", 16), ("4x wider", "mix", 4), ("4x wider", "mix", 16),
         ("Qwen2.5 vocab", "sid", 8), ("Qwen2.5 vocab", "mix", 8)]


def rows(kind: str, batch: int, vocab: int, gen: torch.Generator) -> list[dict]:
    """`batch` rows of random tokens: an unlabelled prompt, then the labelled answer."""
    low, high, answer_low, answer_high = ROWS[kind]
    out = []
    for _ in range(batch):
        n = int(torch.randint(low, high + 1, (1,), generator=gen))
        answer = int(torch.randint(answer_low, answer_high + 1, (1,), generator=gen))
        ids = torch.randint(1, vocab, (n + answer,), generator=gen).tolist()
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
    args = parse_args(__doc__, steps=3)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"{'model':<18} {'rows':<4} {'batch':>5} {'tokens':>6} {'pad/real':>8} {'reference ms':>12} "
          f"{'window ms':>9} {'packed ms':>9} {'window vs ref':>13} {'packed vs padded':>16}")
    models = {}
    for shape, kind, batch in CELLS:
        vocab, hidden, layers = SHAPES[shape]
        model = models.setdefault(shape, random_qwen2(vocab, hidden, layers, args.seed))
        features = rows(kind, batch, vocab, gen)
        window, packed = AnswerWindowCollator(pad_token_id=0)(features), PackedCollator()(features)
        real = packed["input_ids"].shape[1]
        ref_ms, win_ms, packed_ms = (step_ms(model, b, args.steps) for b in (right_pad(features), window, packed))
        print(f"{shape:<18} {kind:<4} {batch:>5} {real:>6} {window['input_ids'].numel() / real - 1:>8.2f} "
              f"{ref_ms:>12.1f} {win_ms:>9.1f} {packed_ms:>9.1f} {ref_ms / win_ms:>12.2f}x {win_ms / packed_ms:>15.2f}x")


if __name__ == "__main__":
    main()
