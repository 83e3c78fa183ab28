"""New catalogue items without retraining: SIDs from the frozen codebooks, new tokens, optional alignment.

    # 1. embed the new items exactly as the catalogue was embedded (same model, or the saved TF-IDF fit)
    python -m rq.text2emb --item_meta_path new.item.json --output_path new.emb.npy --method tfidf \
        --tfidf_fit raw/Cat.emb.tfidf.joblib
    # 2. SIDs for them with the quantiser's codebooks (Cat.codebooks.npz beside Cat.index.json) frozen
    python -m rq.add_items --sid_index_path raw/Cat.index.json --embedding_path new.emb.npy \
        --new_items_path new.item.json --output_path raw/Cat.v2.index.json \
        --item_meta_path raw/Cat.item.json --output_item_meta_path raw/Cat.v2.item.json \
        --base_model out/sft/final_checkpoint --output_model out/sft_v2 --align_steps 50

Each new item takes the nearest codeword at every level (after the saved encoder, for RQ-VAE and
RQ-Kmeans+); a code already used moves the new item to the nearest free (level L-1, level L) pair,
so SIDs stay unique and of the same length and no existing item's SID changes. The extended index,
item.json and model are written atomically, after everything succeeded; the model gets the SID
tokens it lacks, and `--align_steps N` fine-tunes title <-> SID on the new items for N steps.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


from minionerec.run.atomic import atomic_dir, atomic_write_text
from minionerec.run.cli import run
from minionerec.data.formats import DataError, load_item_meta, load_sid_index, sid_vocabulary
from rq.common import load_embeddings
from rq.index import (CollisionError, codebooks_path, codes_to_sids, extend_codes, index_sibling,
                      load_codebooks, quantize_frozen, sids_to_codes)


@dataclass
class Args:
    """Give new items SIDs with the existing codebooks frozen; extend the index (and the model)."""

    sid_index_path: str = ""  # the current index.json (its X.codebooks.npz sits beside it)
    embedding_path: str = ""  # the new items' .npy (+ .ids.json) from rq/text2emb.py, embedded as the catalogue was
    output_path: str = ""  # extended index.json to write ("" = replace --sid_index_path, atomically)
    codebooks_path: str = ""  # "" = X.codebooks.npz beside --sid_index_path (written by every rq/ quantiser)
    encoder_path: str = ""  # "" = X.encoder.pt beside --sid_index_path when it exists (rqvae, rqkmeans_plus)
    new_items_path: str = ""  # item.json of the new items (titles: merged item.json, alignment)
    item_meta_path: str = ""  # the catalogue's item.json, merged with --new_items_path into --output_item_meta_path
    output_item_meta_path: str = ""  # merged item.json to write ("" = none)
    base_model: str = ""  # model directory to extend with the new SID tokens ("" = index only)
    output_model: str = ""  # where the extended model + tokenizer go (must not exist yet)
    align_steps: int = 0  # > 0: fine-tune title <-> SID of the new items for this many steps
    align_learning_rate: float = 1e-4  # constant learning rate of the alignment fine-tune (--align_steps > 0)
    align_batch_size: int = 8  # alignment examples per step (per device)
    seed: int = 0  # alignment only: example sampling and Trainer seed


def check_args(args: Args) -> None:
    """Fail before reading embeddings or loading a model."""
    for flag in ("sid_index_path", "embedding_path"):
        if not getattr(args, flag):
            raise SystemExit(f"error: --{flag} is required")
    for flag in ("sid_index_path", "new_items_path", "item_meta_path", "codebooks_path", "encoder_path"):
        path = getattr(args, flag)
        if path and not Path(path).is_file():
            raise SystemExit(f"error: --{flag} file not found: {path}")
    if bool(args.base_model) != bool(args.output_model):
        raise SystemExit("error: --base_model and --output_model go together")
    if args.base_model and not Path(args.base_model).is_dir():
        raise SystemExit(f"error: --base_model must be a local model directory, got {args.base_model!r}")
    if args.output_model and Path(args.output_model).exists():
        raise SystemExit(f"error: --output_model {args.output_model} already exists; choose a new directory")
    if args.align_steps < 0 or args.align_batch_size < 1:
        raise SystemExit("error: --align_steps must be >= 0 and --align_batch_size >= 1")
    if args.align_steps and not args.base_model:
        raise SystemExit("error: --align_steps needs --base_model and --output_model")
    if (args.align_steps or args.output_item_meta_path) and not args.new_items_path:
        raise SystemExit("error: --align_steps and --output_item_meta_path need --new_items_path (the new titles)")
    if args.output_item_meta_path and not args.item_meta_path:
        raise SystemExit("error: --output_item_meta_path needs --item_meta_path (the catalogue's item.json)")


def frozen_sids(index: dict[str, list[str]], new_ids: list[str], x: np.ndarray, codebooks: list[np.ndarray],
                mode: str, encode=None) -> dict[str, list[str]]:
    """{new item id: SID tokens}, unique against `index` and each other; `index` is not changed."""
    clash = [i for i in new_ids if i in index]
    if clash:
        raise ValueError(f"item {clash[0]} is already in the index (existing items keep their SIDs)")
    latent = encode(x) if encode is not None else x  # [M, D_latent]
    if latent.shape[1] != codebooks[0].shape[1]:
        raise ValueError(f"new embeddings have dimension {latent.shape[1]}, the codebooks {codebooks[0].shape[1]}: "
                         "embed the new items with the catalogue's embedding model (or --tfidf_fit)")
    codes, residuals = quantize_frozen(latent, codebooks)  # [M, L], L x [M, D]
    final = extend_codes(sids_to_codes(list(index.values())), codes, residuals, codebooks, mode)
    return dict(zip(new_ids, codes_to_sids(final)))


def extend_model(args: Args, extended: dict[str, list[str]], new_index: dict, new_meta: dict) -> str:
    """Load the model, add the missing SID tokens, optionally align, save atomically; returns a log line."""
    import torch

    from minionerec.model.alignment import align_new_items
    from minionerec.model.loading import add_sid_tokens, load_model, load_tokenizer

    tokenizer = load_tokenizer(args.base_model)
    model = load_model(args.base_model, dtype=torch.float32)
    added = add_sid_tokens(model, tokenizer, sid_vocabulary(extended))
    line = f"added_sid_tokens={added}"
    if args.align_steps:
        loss = align_new_items(model, tokenizer, new_index, new_meta, args.align_steps, args.align_learning_rate,
                               args.align_batch_size, args.seed)
        line += f" align_steps={args.align_steps} align_loss={loss:.4f}"
    with atomic_dir(args.output_model) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return line + f" -> {args.output_model}"


def main(args: Args) -> dict[str, list[str]]:
    check_args(args)
    codebooks_file = Path(args.codebooks_path or codebooks_path(args.sid_index_path))
    encoder_file = Path(args.encoder_path or index_sibling(args.sid_index_path, ".encoder.pt"))
    try:
        index = load_sid_index(args.sid_index_path)
        codebooks, mode = load_codebooks(codebooks_file)
        new_meta = load_item_meta(args.new_items_path) if args.new_items_path else {}
        meta = load_item_meta(args.item_meta_path) if args.item_meta_path else {}
    except (DataError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    new_ids, x = load_embeddings(args.embedding_path)
    missing_titles = [i for i in new_ids if new_meta and i not in new_meta]
    if missing_titles:
        raise SystemExit(f"error: {args.new_items_path}: new item {missing_titles[0]} has no entry")
    encode = None
    if encoder_file.is_file():
        from rq.rqvae import load_encoder

        encode = load_encoder(encoder_file)
    try:
        new_index = frozen_sids(index, new_ids, x, codebooks, mode, encode)
    except (ValueError, CollisionError) as e:
        raise SystemExit(f"error: {args.embedding_path}: {e}") from None
    extended = {**index, **new_index}

    model_line = extend_model(args, extended, new_index, new_meta) if args.base_model else "model unchanged"
    output_path = args.output_path or args.sid_index_path
    atomic_write_text(output_path, json.dumps(extended))
    if args.output_item_meta_path:
        atomic_write_text(args.output_item_meta_path,
                          json.dumps({**meta, **{i: new_meta[i] for i in new_ids}}, indent=1, ensure_ascii=False))
    print(f"[add_items] {len(new_ids)} new items ({mode}, codebooks {codebooks_file.name}"
          f"{', encoder ' + encoder_file.name if encode else ''}): {len(index)} -> {len(extended)} items -> "
          f"{output_path}; {model_line}", flush=True)
    return new_index


if __name__ == "__main__":
    run(main, Args)
