"""GRPO log-prob step time: TRL's fused LM head (reference) vs ours over the completion window only.

    python -m bench.rl_logps [--threads 1] [--steps 3]

Times what one GRPO loss step spends on the policy (forward + log-probs + entropies + backward) for a
batch of real-shaped rollouts: ~110-token SID-history prompts (left-padded) and 5-token completions
(SID tokens, "\\n", EOS), on randomly initialised Qwen2 models. Off Triton devices TRL's fused head
scores every position; `MiniOneRecGRPOTrainer._get_per_token_logps_and_entropies` scores the 5.
Prints ms per step, the ratio, and the largest log-prob difference between the two.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
from accelerate import Accelerator
from trl import GRPOTrainer
from trl.trainer.utils import add_fused_lm_head

from bench.step_timing import mean_ms, parse_args, random_qwen2
from minionerec.rl.trainer import MiniOneRecGRPOTrainer

# (name, vocab, hidden, layers, rollouts per step)
SHAPES = [("cpu preset (tiny)", 4_560, 128, 2, 128), ("Qwen2.5 vocab", 151_936, 128, 2, 16)]
PROMPT, COMPLETION = 110, 5


def step_ms(hook, trainer, model, input_ids, attention_mask, steps: int) -> tuple[float, torch.Tensor]:
    def once():
        model.zero_grad(set_to_none=True)
        logps, entropies, _ = hook(trainer, model, input_ids, attention_mask, COMPLETION, compute_entropy=True)
        (logps.sum() + entropies.sum()).backward()
        return logps.detach()

    return mean_ms(once, steps)


def main() -> None:
    args = parse_args(__doc__, steps=3)
    # the two hooks read only these trainer attributes
    trainer = SimpleNamespace(accelerator=Accelerator(cpu=True), temperature=1.0)
    print(f"{'model':<20} {'vocab':>8} {'rollouts':>8} {'TRL fused ms':>12} {'window ms':>9} {'speed-up':>8} "
          f"{'max |dlogp|':>11}")
    for name, vocab, hidden, layers, batch in SHAPES:
        model = random_qwen2(vocab, hidden, layers, args.seed)
        add_fused_lm_head(model, outputs=("log_probs", "entropy"))  # what GRPOTrainer.__init__ does
        input_ids = torch.randint(1, vocab, (batch, PROMPT + COMPLETION))
        attention_mask = torch.ones_like(input_ids)
        for row in range(batch):  # prompts of PROMPT-8 .. PROMPT tokens, left-padded
            attention_mask[row, : row % 9] = 0
        ref_ms, ref = step_ms(GRPOTrainer._get_per_token_logps_and_entropies, trainer, model, input_ids,
                              attention_mask, args.steps)
        win_ms, ours = step_ms(MiniOneRecGRPOTrainer._get_per_token_logps_and_entropies, trainer, model, input_ids,
                               attention_mask, args.steps)
        print(f"{name:<20} {vocab:>8,} {batch:>8} {ref_ms:>12.1f} {win_ms:>9.1f} {ref_ms / win_ms:>7.2f}x "
              f"{(ref - ours).abs().max().item():>11.1e}")


if __name__ == "__main__":
    main()
