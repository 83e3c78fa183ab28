"""New catalogue items without retraining: SIDs from the frozen codebooks, new tokens, optional alignment.

    # 1. embed the new items exactly as the catalogue was embedded (same model, or the saved TF-IDF fit)
    python -m minionerec.rq.text2emb --item_meta_path new.item.json --output_path new.emb.npy --method tfidf \
        --tfidf_fit raw/Cat.emb.tfidf.joblib
    # 2. SIDs for them with the quantiser's codebooks (Cat.codebooks.npz beside Cat.index.json) frozen
    python -m minionerec.rq.add_items --sid_index_path raw/Cat.index.json --embedding_path new.emb.npy \
        --new_items_path new.item.json --output_path raw/Cat.v2.index.json \
        --item_meta_path raw/Cat.item.json --output_item_meta_path raw/Cat.v2.item.json \
        --base_model out/sft/final_checkpoint --output_model out/sft_v2 --align_steps 50

Each new item takes the nearest codeword at every level (after the saved encoder, for RQ-VAE and
RQ-Kmeans+); a code already used moves the new item to the nearest free (level L-1, level L) pair,
so SIDs stay unique and of the same length and no existing item's SID changes. The model gets the SID
tokens it lacks, and `--align_steps N` fine-tunes title <-> SID on the new items for N steps.

All or nothing: every input and output path is checked before anything loads (new item ids are flat,
unique, non-empty JSON strings; the embeddings numeric; outputs writable, distinct, the model directory
new), every output is staged to a temporary sibling, and only when all are complete are they renamed
onto their targets (a failed rename puts back the ones already renamed). A failure leaves every input
and output as it was, so the same command can simply be rerun.

One writer at a time: each output's lock (minionerec.run.file_lock) is held from reading the old index to the last
rename, so a second run extending the same index meanwhile is refused in one line naming the first (see minionerec/rq/README.md);
holding them, the run removes the temporaries a killed run left beside its outputs.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minionerec.run.atomic import Staged
from minionerec.run.cli import run
from minionerec.run.file_lock import locked
from minionerec.run.preflight import input_files, model_dir, writable_dir
from minionerec.data.formats import DataError, load_item_meta, load_sid_index, sid_vocabulary
from minionerec.rq.common import ids_path, load_embeddings
from minionerec.rq.index import (CollisionError, codebooks_path, codes_to_sids, extend_codes, index_sibling,
                      load_codebooks, quantize_frozen, sids_to_codes)


@dataclass
class Args:
    """Give new items SIDs with the existing codebooks frozen; extend the index (and the model)."""

    sid_index_path: str = ""  # the current index.json (its X.codebooks.npz sits beside it)
    embedding_path: str = ""  # the new items' .npy (+ .ids.json) from minionerec/rq/text2emb.py, embedded as the catalogue was
    output_path: str = ""  # extended index.json to write ("" = replace --sid_index_path, atomically)
    codebooks_path: str = ""  # "" = X.codebooks.npz beside --sid_index_path (written by every minionerec/rq/ quantiser)
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
    input_files(args, ("sid_index_path", "embedding_path"),
                ("sid_index_path", "new_items_path", "item_meta_path", "codebooks_path", "encoder_path"))
    if bool(args.base_model) != bool(args.output_model):
        raise SystemExit("error: --base_model and --output_model go together")
    if args.base_model:
        model_dir(args.base_model, "base_model")
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
    check_outputs(args)


INPUT_FLAGS = ("sid_index_path", "embedding_path", "codebooks_path", "encoder_path", "new_items_path",
               "item_meta_path")


def check_outputs(args: Args) -> None:
    """Every output can be written and names its own path, before anything is read or written. An output may
    replace only its own input (--output_path the index, --output_item_meta_path the catalogue's item.json)."""
    files = {"output_path": args.output_path or args.sid_index_path, "output_item_meta_path": args.output_item_meta_path}
    files = {flag: path for flag, path in files.items() if path}
    for flag, path in files.items():
        if Path(path).is_dir():
            raise SystemExit(f"error: --{flag} {path}: is a directory, not a file")
        writable_dir(str(Path(path).parent), flag)
    if args.output_model:
        writable_dir(args.output_model, "output_model")
    own_input = {"output_path": "sid_index_path", "output_item_meta_path": "item_meta_path"}
    inputs = {flag: getattr(args, flag) for flag in INPUT_FLAGS if getattr(args, flag)}
    if args.embedding_path:
        inputs["embedding_path ids"] = str(ids_path(args.embedding_path))
    if args.sid_index_path:  # the quantiser's files beside the index, read when not named
        inputs.setdefault("codebooks_path", str(codebooks_path(args.sid_index_path)))
        inputs.setdefault("encoder_path", str(index_sibling(args.sid_index_path, ".encoder.pt")))
    seen: dict[Path, str] = {}
    for flag, path in [*files.items(), *([("output_model", args.output_model)] if args.output_model else [])]:
        resolved = Path(path).resolve()
        if resolved in seen:
            raise SystemExit(f"error: --{flag} {path} is also --{seen[resolved]}; give every output its own path")
        seen[resolved] = flag
        for in_flag, in_path in inputs.items():
            if resolved == Path(in_path).resolve() and own_input.get(flag) != in_flag:
                raise SystemExit(f"error: --{flag} {path} would overwrite --{in_flag.split()[0]} "
                                 f"{in_path}; choose another path")


def check_new_ids(ids, source) -> list[str]:
    """The new items' ids: a JSON list of flat, non-empty, unique strings (one-line error naming the id)."""
    if not isinstance(ids, list) or not ids:
        raise SystemExit(f"error: {source}: expected a non-empty JSON list of item ids")
    seen = set()
    for item in ids:
        if not isinstance(item, str):
            kind = "a list" if isinstance(item, list) else "an object" if isinstance(item, dict) else type(item).__name__
            raise SystemExit(f"error: {source}: item id {json.dumps(item)} is {kind}, not a string "
                             "(ids are flat JSON strings, e.g. \"400\")")
        if not item.strip() or item != item.strip():
            raise SystemExit(f"error: {source}: item id {item!r} is empty or has surrounding whitespace")
        if item in seen:
            raise SystemExit(f"error: {source}: item id {item!r} appears more than once (ids must be unique)")
        seen.add(item)
    return ids


def read_new_embeddings(path) -> tuple[list[str], np.ndarray]:
    """minionerec.rq.common.load_embeddings after the check of the ids it lacks (check_new_ids: flat, unique strings)."""
    ids_file = ids_path(path)
    if Path(path).is_file() and ids_file.is_file():
        try:
            check_new_ids(json.loads(ids_file.read_text(encoding="utf-8")), ids_file)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SystemExit(f"error: {ids_file}: invalid JSON ({e})") from None
    return load_embeddings(path)


def unique_keys(path) -> None:
    """json.loads keeps the last of two equal keys silently: an item.json naming an item twice is an error."""
    repeated = []  # per object, innermost first: the top-level object (the items) comes last

    def pairs(items):
        keys = [k for k, _ in items]
        repeated.append(next((k for k in keys if keys.count(k) > 1), None) if len(set(keys)) != len(keys) else None)
        return dict(items)

    try:
        json.loads(Path(path).read_text(encoding="utf-8"), object_pairs_hook=pairs)
    except json.JSONDecodeError:
        return  # load_item_meta names the syntax error
    if repeated and repeated[-1] is not None:
        raise DataError(f"{path}: item {repeated[-1]!r} appears more than once")
    nested = next((k for k in repeated[:-1] if k is not None), None)
    if nested is not None:
        raise DataError(f"{path}: an item's entry names {nested!r} more than once")


def saved_encoder(path: Path):
    """The encoder minionerec.rq.rqvae / minionerec.rq.rqkmeans_plus saved beside the index (None for the k-means methods)."""
    if not path.is_file():
        return None
    from minionerec.rq.rqvae import load_encoder  # torch: imported only for the indexes that need it

    return load_encoder(path)


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


def extend_model(args: Args, extended: dict[str, list[str]], new_index: dict, new_meta: dict, staged: Staged) -> str:
    """Load the model, add the missing SID tokens, optionally align, save it to a staged directory (renamed onto
    --output_model with the other outputs); returns a log line."""
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
    tmp = staged.directory(args.output_model)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return line + f" -> {args.output_model}"


def _rename(src, dst) -> None:
    os.replace(src, dst)  # one name for the tests to fail on purpose


def main(args: Args) -> dict[str, list[str]]:
    check_args(args)
    outputs = [path for path in (args.output_path or args.sid_index_path, args.output_item_meta_path,
                                 args.output_model) if path]
    staged = Staged("adding items", _rename)  # _rename looked up now: a test may have replaced it
    try:  # all or nothing: staged first, renamed together (the index last), every path put back on a failure
        staged.parents(outputs)  # the lock files sit beside the outputs
        with locked(*outputs):  # from reading the old index to the last rename: no lost update, see minionerec/rq/README.md
            return add(args, staged)
    except BaseException:
        staged.discard()
        raise


def add(args: Args, staged: Staged) -> dict[str, list[str]]:
    """Read the index and the new items, give them SIDs, stage and commit every output."""
    codebooks_file = Path(args.codebooks_path or codebooks_path(args.sid_index_path))
    encoder_file = Path(args.encoder_path or index_sibling(args.sid_index_path, ".encoder.pt"))
    try:
        index = load_sid_index(args.sid_index_path)
        codebooks, mode = load_codebooks(codebooks_file)
        for path in (args.new_items_path, args.item_meta_path):
            if path:
                unique_keys(path)
        new_meta = load_item_meta(args.new_items_path) if args.new_items_path else {}
        meta = load_item_meta(args.item_meta_path) if args.item_meta_path else {}
        encode = saved_encoder(encoder_file)
    except (ValueError, FileNotFoundError) as e:  # DataError included: each names its file
        raise SystemExit(f"error: {e}") from None
    new_ids, x = read_new_embeddings(args.embedding_path)
    missing_titles = [i for i in new_ids if new_meta and i not in new_meta]
    if missing_titles:
        raise SystemExit(f"error: {args.new_items_path}: new item {missing_titles[0]} has no entry")
    known = [i for i in new_ids if i in meta and i not in index]
    if known and args.output_item_meta_path:
        raise SystemExit(f"error: {args.item_meta_path}: new item {known[0]} is already there (its entry would be "
                         f"replaced by --new_items_path's)")
    try:
        new_index = frozen_sids(index, new_ids, x, codebooks, mode, encode)
    except (ValueError, CollisionError) as e:
        raise SystemExit(f"error: {args.embedding_path}: {e}") from None
    extended = {**index, **new_index}

    output_path = args.output_path or args.sid_index_path
    model_line = extend_model(args, extended, new_index, new_meta, staged) if args.base_model else "model unchanged"
    if args.output_item_meta_path:
        staged.file(args.output_item_meta_path,
                    json.dumps({**meta, **{i: new_meta[i] for i in new_ids}}, indent=1, ensure_ascii=False))
    staged.file(output_path, json.dumps(extended))
    staged.commit()
    print(f"[add_items] {len(new_ids)} new items ({mode}, codebooks {codebooks_file.name}"
          f"{', encoder ' + encoder_file.name if encode else ''}): {len(index)} -> {len(extended)} items -> "
          f"{output_path}; {model_line}", flush=True)
    return new_index


if __name__ == "__main__":
    run(main, Args)
