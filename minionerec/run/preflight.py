"""Pre-flight checks shared by the entry scripts' check functions: each runs before any weights load
and, like them, raises SystemExit("error: --flag ...") (minionerec.run.cli prints it as one line, exit 2).
`checked` runs a library validator (which raises ValueError) as such a check."""
from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

# what from_pretrained loads weights from (sharded or not; LoRA adapters; GGUF)
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.gguf")
# --report_to of sft.py and rl.py: the Trainer integrations this project pins (none = no logging service)
REPORT_TO = ("none", "wandb", "tensorboard")


def checked(validate, *args, context: str = ""):
    """`validate(*args)`, its ValueError turned into the checks' SystemExit("error: [context: ]message"); the
    ValueError stays attached as the cause (MINIONEREC_TRACEBACK=1 prints both)."""
    try:
        return validate(*args)
    except ValueError as e:
        raise SystemExit(f"error: {context + ': ' if context else ''}{e}") from e


def gradient_accumulation(batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Micro-steps per optimizer step: a recipe's batch_size is global (rows for sft.py, completions for rl.py), so
    the same recipe is the same run on 1, 8 or 16 processes."""
    per_step = micro_batch_size * world_size
    if batch_size % per_step:
        raise SystemExit(f"error: --batch_size {batch_size} is not divisible by --micro_batch_size "
                         f"{micro_batch_size} x {world_size} processes")
    return batch_size // per_step


def within_catalogue(value: int, flag: str, sid_index: dict, source: str) -> None:
    """Beam search returns distinct SIDs: --num_beams / --num_generations / --rank_eval_beams `value` needs at least
    that many in the catalogue (more would give short rankings, or groups that cannot fill, silently)."""
    distinct = len({"".join(sid) for sid in sid_index.values()})
    if value > distinct:
        raise SystemExit(f"error: --{flag} {value} exceeds the {distinct} distinct SIDs of the catalogue ({source})")


def model_dir(path: str, flag: str) -> None:
    """A local Hugging Face model directory: exists and holds a config.json (an empty or wrong
    directory otherwise fails much later with a misleading tokenizer error)."""
    if not path or not Path(path).is_dir():
        raise SystemExit(f"error: --{flag} must be a local model directory, got {path!r}")
    if not Path(path, "config.json").is_file():
        raise SystemExit(f"error: --{flag} {path}: no config.json there (not a saved model directory)")


def file_problem(path) -> str | None:
    """Why `path` cannot be read as an input file (a few words), or None. Only a regular file passes: a FIFO or a
    device (a mistyped /dev/stdin, a named pipe) would block a reader, or never end."""
    path = Path(path)
    if path.is_dir():
        return "is a directory, not a file"
    if path.is_file():
        return None
    return "not a regular file (a FIFO, socket or device)" if path.exists() else "file not found"


def input_files(args, required: tuple[str, ...], files: tuple[str, ...]) -> None:
    """The `required` flags are given, and each of the `files` flags that is given names a readable regular file
    (`error: --flag file not found: PATH`, or `error: --flag PATH: not a regular file ...`)."""
    for flag in required:
        if not getattr(args, flag):
            raise SystemExit(f"error: --{flag} is required")
    for flag in files:
        path = getattr(args, flag)
        problem = file_problem(path) if path else None
        if problem == "file not found":
            raise SystemExit(f"error: --{flag} file not found: {path}")
        if problem:
            raise SystemExit(f"error: --{flag} {path}: {problem}")


def replaceable_model_dir(path: str, flag: str) -> None:
    """`path` is a model directory a writer may replace whole: writable, and empty or already a model (a
    config.json). `--output_dir models`, meant as the parent folder, would otherwise delete every model in it."""
    writable_dir(path, flag)
    out = Path(path)
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise SystemExit(f"error: --{flag} {path}: holds other files and no config.json (not a model directory), "
                         "and it would be replaced whole; name a new directory, or a model to overwrite")


def has_weights(path: str, flag: str) -> None:
    """The model directory holds weight files (a folder with config.json alone fails only at from_pretrained)."""
    if not any(any(Path(path).glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise SystemExit(f"error: --{flag} {path}: no weights there (*.safetensors, *.bin or *.gguf)")


def writable_dir(path: str, flag: str) -> None:
    """`path` is, or can be created as, a directory we can write in; creates nothing."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise SystemExit(f"error: --{flag} {path}: exists and is not a directory")
    probe = target
    while not probe.exists():  # the nearest existing ancestor is where mkdir would start
        probe = probe.parent
    if not probe.is_dir():
        raise SystemExit(f"error: --{flag} {path}: {probe} is a file, not a directory")
    try:  # a real write: os.access says yes to root even on a read-only mount
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise SystemExit(f"error: --{flag} {path}: {probe} is not writable ({e.strerror})") from None


def positive_finite(value: float, flag: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise SystemExit(f"error: --{flag} must be a finite number > 0, got {value!r}")


def sample_size(value: int, flag: str) -> None:
    """-1 (all rows) or a positive count; 0 would train or score on nothing."""
    if value == 0 or value < -1:
        raise SystemExit(f"error: --{flag} must be -1 (all rows) or >= 1, got {value}")


def trains_something(epochs: float, epochs_flag: str, max_steps: int) -> None:
    """max_steps > 0 wins; otherwise the epoch count must be > 0 (else an untrained model is saved)."""
    if max_steps <= 0 and not epochs > 0:
        raise SystemExit(f"error: --{epochs_flag} {epochs} with --max_steps {max_steps} trains nothing; "
                       f"give --{epochs_flag} > 0 or --max_steps > 0")


def ranking_eval_flags(args) -> None:
    """sft.py / rl.py's ranking-evaluation flags (minionerec.run.args.RankingEvalArgs): the evaluation needs an eval
    file; keep_best needs the evaluation; beams, batch and interval are positive (0 would evaluate at every step)."""
    if args.rank_eval_on_valid and not args.eval_file:
        raise SystemExit("error: --rank_eval_on_valid needs --eval_file")
    if args.keep_best and not args.rank_eval_on_valid:
        raise SystemExit("error: --keep_best needs --rank_eval_on_valid true (and --eval_file): it keeps the best "
                         "evaluated weights")
    if args.keep_best and args.lora_r:
        raise SystemExit("error: --keep_best does not combine with --lora_r yet (each save would merge the adapters)")
    for flag in ("rank_eval_beams", "eval_batch_size"):
        at_least(getattr(args, flag), flag, 1)
    positive_finite(args.rank_eval_every, "rank_eval_every")


def prompt_tail(prompt: str) -> str:
    """A prompt's last paragraph (the "### Response:" line), which a cut from the left must keep."""
    return prompt.rstrip("\n").rsplit("\n\n", 1)[-1] + "\n"


def cutoff_holds_answers(cutoff_len: int, tokenizer, tails, answers) -> None:
    """--cutoff_len must hold the longest answer + EOS + the prompt's last paragraph (prompt_tail). Longer
    sequences are cut from the left, so a shorter cutoff would cut the answer or leave it without the line that
    asks for it. `tails`, `answers`: the distinct prompt tails and responses; `tokenizer` must hold the SID tokens."""
    if cutoff_len < 1:
        raise SystemExit(f"error: --cutoff_len must be >= 1, got {cutoff_len}")
    longest_answer = max(len(ids) for ids in tokenizer(sorted(answers), add_special_tokens=False)["input_ids"]) + 1
    longest_tail = max(len(ids) for ids in tokenizer(sorted(tails), add_special_tokens=False)["input_ids"])
    if cutoff_len < longest_answer + longest_tail:
        raise SystemExit(f"error: --cutoff_len {cutoff_len} cannot hold the longest answer ({longest_answer} tokens "
                         f"with EOS) plus the prompt's last line ({longest_tail} tokens); "
                         f"use >= {longest_answer + longest_tail}")


def at_least(value, flag: str, minimum) -> None:
    """An integer (or number) flag with a lower bound: 0 steps, beams or rows would do nothing, silently."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum:
        raise SystemExit(f"error: --{flag} must be >= {minimum}, got {value!r}")


def steps(value, flag: str) -> None:
    """A Trainer interval (save_steps, eval_steps): a step count >= 1, or a fraction of all steps in (0, 1)
    (transformers' own rule; 0 would save or evaluate never or at every step, 2.5 fails deep in TrainingArguments)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0
            or (value >= 1 and value != int(value))):
        raise SystemExit(f"error: --{flag} must be a step count >= 1 or a fraction of all steps in (0, 1), "
                         f"got {value!r}")


def warmup(value, flag: str = "warmup_steps") -> None:
    """A warmup length: a step count >= 0, or a fraction of all steps in (0, 1) (transformers refuses a negative one
    only when the TrainingArguments are built, and takes nan)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0
            or (value >= 1 and value != int(value))):
        raise SystemExit(f"error: --{flag} must be a step count >= 0 or a fraction of all steps in (0, 1), "
                         f"got {value!r}")


def best_model_saves(eval_steps: float, save_steps: float) -> None:
    """sft.py --early_stopping_patience restores the best evaluated weights at the end, so each evaluation needs its
    checkpoint: --save_steps a multiple of --eval_steps (transformers' rule, which it applies only when the
    TrainingArguments are built, after run_config.yaml is written)."""
    if (eval_steps < 1) != (save_steps < 1) or round(save_steps * 1e6) % round(eval_steps * 1e6):
        raise SystemExit(f"error: --early_stopping_patience needs --save_steps a multiple of --eval_steps (both step "
                         f"counts or both fractions), got --save_steps {save_steps} and --eval_steps {eval_steps}")


def report_to(value) -> None:
    """--report_to of sft.py / rl.py: a service this project pins whose package is installed (the Trainer finds a
    missing one only once the weights have loaded)."""
    one_of(value, "report_to", REPORT_TO)
    from transformers.integrations import is_tensorboard_available, is_wandb_available

    installed = {"wandb": is_wandb_available, "tensorboard": is_tensorboard_available}
    if value in installed and not installed[value]():
        raise SystemExit(f"error: --report_to {value}: the {value} package is not installed (pip install {value}, "
                         "or --report_to none)")


def one_of(value, flag: str, choices) -> None:
    if value not in choices:
        raise SystemExit(f"error: --{flag} must be one of {', '.join(map(str, choices))}, got {value!r}")


def device(value, flag: str = "device") -> None:
    """--device before anything loads: auto | cpu | cuda | cuda:N, and a CUDA device must be visible (N below
    the count). The one check of sasrec.py, recommend.py and serve.py."""
    import torch

    match = re.fullmatch(r"auto|cpu|cuda(?::(\d+))?", value) if isinstance(value, str) else None
    if not match:
        raise SystemExit(f"error: --{flag} must be auto, cpu, cuda or cuda:N, got {value!r}")
    if value.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SystemExit(f"error: --{flag} {value}: no CUDA device is visible (use --{flag} cpu or auto)")
        if match.group(1) is not None and int(match.group(1)) >= count:
            raise SystemExit(f"error: --{flag} {value}: only {count} CUDA device(s) are visible")


def output_not_input(output: str, flag: str, inputs: dict[str, str], model_dirs: dict[str, str] = None) -> None:
    """An output path may not be one of the run's input files, nor lie inside (or be) a model directory:
    predictions written over a model's config.json, or a comparison over its own input, destroy what they read."""
    out = Path(output).resolve()
    for in_flag, path in inputs.items():
        if path and Path(path).resolve() == out:
            raise SystemExit(f"error: --{flag} {output} is the input --{in_flag}: choose another path")
    for in_flag, path in (model_dirs or {}).items():
        if path and (out == Path(path).resolve() or Path(path).resolve() in out.parents):
            raise SystemExit(f"error: --{flag} {output} lies inside the model directory --{in_flag} {path}: "
                             "choose a path outside it")
