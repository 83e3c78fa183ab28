"""A run's shape before it starts: processes, global batch, steps per epoch and sequence lengths.

sft.py and rl.py print it as one `[sft] plan:` / `[rl] plan:` line in every run, dry runs included (the launchers'
pre-check passes it on), so a recipe's meaning on this cluster is visible before a GPU hour is spent; the rehearsal
(minionerec.launch.rehearsal) reads it back for its report and memory arithmetic.

Steps per epoch follow the trainers' own counts: transformers' Trainer takes ceil(batches / accumulation) steps an
epoch over a DistributedSampler's ceil(rows / processes) rows per process; TRL's GRPO sampler takes whole
generation batches only, floor(prompts / prompts per step), each `num_iterations` times.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass


@dataclass
class Plan:
    script: str  # sft | rl
    world: int  # processes
    micro: int  # rows (sft) or completions (rl) per process per forward pass
    accumulation: int  # micro-steps per optimizer step
    rows: int  # training rows (sft) or prompts (rl) of one epoch
    steps_per_epoch: int
    total_steps: int  # the run's optimizer steps (max_steps, or epochs x steps per epoch)
    mean_tokens: float  # per row (sft: prompt + answer) or per prompt (rl); of a sample (token_lengths)
    max_tokens: int
    generations: int = 0  # rl: completions per prompt (G)

    @property
    def global_batch(self) -> int:
        return self.world * self.micro * self.accumulation

    def line(self) -> str:
        unit = "rows" if self.script == "sft" else "completions"
        batch = f"{self.global_batch:,} {unit}"
        if self.script == "rl":
            batch += f" ({self.global_batch // self.generations:,} prompts x {self.generations})"
        what = "rows" if self.script == "sft" else "prompts"
        length = "tokens a row" if self.script == "sft" else "prompt tokens"
        processes = f"{self.world} process" + ("es" if self.world > 1 else "")
        return (f"[{self.script}] plan: {processes} x micro {self.micro} x accumulation {self.accumulation} = "
                f"global batch {batch} per optimizer step; {self.rows:,} {what} -> {self.steps_per_epoch:,} steps per "
                f"epoch, {self.total_steps:,} steps in all; {self.mean_tokens:.0f} {length} on average, "
                f"{self.max_tokens} at most")

    def as_dict(self) -> dict:
        return {**asdict(self), "global_batch": self.global_batch}


LINE = re.compile(r"\[(sft|rl)\] plan: (\d+) process(?:es)? x micro (\d+) x accumulation (\d+) = global batch [\d,]+ "
                  r"\w+(?: \([\d,]+ prompts x (\d+)\))? per optimizer step; ([\d,]+) \w+ -> ([\d,]+) steps per epoch, "
                  r"([\d,]+) steps in all; (\d+) [\w ]+ on average, (\d+) at most")


def parse(text: str) -> Plan | None:
    """The last plan line in `text` (a run's output), or None."""
    found = LINE.findall(text)
    if not found:
        return None
    script, world, micro, accum, generations, rows, per_epoch, total, mean, most = found[-1]
    number = lambda s: int(s.replace(",", ""))  # noqa: E731
    return Plan(script, int(world), int(micro), int(accum), number(rows), number(per_epoch), number(total),
                float(mean), int(most), int(generations or 0))


def total_steps(steps_per_epoch: int, epochs: float, max_steps: int) -> int:
    return max_steps if max_steps > 0 else math.ceil(epochs * steps_per_epoch)


def sft_plan(rows: int, micro: int, accumulation: int, world: int, epochs: float, max_steps: int,
             lengths: list[int]) -> Plan:
    batches = math.ceil(math.ceil(rows / world) / micro)  # per process: DistributedSampler pads, no drop_last
    per_epoch = max(math.ceil(batches / accumulation), 1)
    return Plan("sft", world, micro, accumulation, rows, per_epoch, total_steps(per_epoch, epochs, max_steps),
                sum(lengths) / max(len(lengths), 1), max(lengths, default=0))


def rl_plan(prompts: int, micro: int, accumulation: int, world: int, generations: int, iterations: int, epochs: float,
            max_steps: int, lengths: list[int]) -> Plan:
    per_step = world * micro * accumulation // generations  # prompts per optimizer step
    per_epoch = max(prompts // per_step, 1) * iterations
    return Plan("rl", world, micro, accumulation, prompts, per_epoch, total_steps(per_epoch, epochs, max_steps),
                sum(lengths) / max(len(lengths), 1), max(lengths, default=0), generations)


LENGTH_SAMPLE, LONGEST = 2000, 200  # rows tokenised for the mean (a seeded sample) and for the maximum


def token_lengths(tokenizer, texts: list[str], extra: int = 0, cutoff: int = 0) -> list[int]:
    """Tokens (+ `extra`, capped at `cutoff` when > 0) of a seeded sample of LENGTH_SAMPLE texts and of the LONGEST
    texts by characters: the mean and the maximum of every row's without tokenising 40,000 rows before each run."""
    import random

    if len(texts) > LENGTH_SAMPLE + LONGEST:
        by_chars = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chosen = random.Random(0).sample(by_chars[:-LONGEST], LENGTH_SAMPLE) + by_chars[-LONGEST:]
        texts = [texts[i] for i in chosen]
    lengths = [len(ids) + extra for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    return [min(n, cutoff) for n in lengths] if cutoff > 0 else lengths
