"""Flags and helpers every quantiser CLI shares (embeddings in, index.json out)."""
from __future__ import annotations

import json
import math
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minionerec.run.atomic import atomic_path, atomic_write_text
from minionerec.run.preflight import writable_dir


@dataclass
class QuantArgs:
    """Flags shared by minionerec/rq/rqkmeans.py, minionerec/rq/balanced_rqkmeans.py, minionerec/rq/rqvae.py and minionerec/rq/rqkmeans_plus.py."""

    embedding_path: str = ""  # .npy from minionerec/rq/text2emb.py; its item ids are in the .ids.json beside it
    output_path: str = ""  # <Category>.index.json to write
    levels: int = 3  # semantic levels (append mode adds one more)
    codebook_size: str = "256"  # one size for every level, or one per level: "256,256,256"
    collision: str = "reassign"  # reassign (keep L levels) | append (add a disambiguation level)
    seed: int = 0  # level l's k-means uses seed + l; rqvae/rqkmeans_plus also seed torch (init, batch order)


def reason(error: BaseException) -> str:
    """'KeyError: 110' on one short line: why a file could not be read, for an error that names the file."""
    message = " ".join(str(error).split())[:200]
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def ids_path(embedding_path) -> Path:
    """X.npy -> X.ids.json (the item id of each row, in row order)."""
    return Path(embedding_path).with_suffix(".ids.json")


def save_embeddings(item_ids: list[str], embeddings: np.ndarray, path) -> Path:
    path = Path(path)
    if len(item_ids) != len(embeddings):
        raise ValueError(f"{len(item_ids)} item ids but {len(embeddings)} embedding rows")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to a path
        np.save(f, np.asarray(embeddings, dtype=np.float32))
    atomic_write_text(ids_path(path), json.dumps([str(i) for i in item_ids]))
    return path


def load_embeddings(path) -> tuple[list[str], np.ndarray]:
    """(item ids, embeddings [N, D] float32); a missing, unreadable or mismatched pair is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"error: {path}: embedding file not found")
    ids_file = ids_path(path)
    if not ids_file.is_file():
        raise SystemExit(f"error: {ids_file}: item-id file missing (minionerec/rq/text2emb.py writes it beside the .npy)")
    try:  # the header first (memory-mapped): a wrong file is refused before its data is read; never a pickle
        dtype = np.load(path, mmap_mode="r", allow_pickle=False).dtype
        if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            raise SystemExit(f"error: {path}: embeddings have dtype {dtype}, expected numbers (float32 from "
                             "minionerec/rq/text2emb.py)")
        embeddings = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, AttributeError, zipfile.BadZipFile) as e:  # .npz: no dtype / no zip
        raise SystemExit(f"error: {path}: not a readable .npy array ({' '.join(str(e).split())})") from None
    try:
        item_ids = json.loads(ids_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SystemExit(f"error: {ids_file}: invalid JSON ({e})") from None
    if not isinstance(item_ids, list) or embeddings.ndim != 2 or len(item_ids) != len(embeddings):
        count = f"{len(item_ids)} item ids" if isinstance(item_ids, list) else "no JSON list of item ids"
        raise SystemExit(f"error: {path}: shape {embeddings.shape} does not match {count} in {ids_file}")
    if not np.isfinite(embeddings).all():
        raise SystemExit(f"error: {path}: embeddings contain NaN or inf")
    return [str(i) for i in item_ids], embeddings.astype(np.float32)


def parse_int_list(value) -> list[int]:
    """256 | "256" | "256,128,64" | (256, 128, 64) (fire turns "a,b,c" into a tuple) -> [ints]."""
    if isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [p for p in str(value).strip("()[] ").split(",") if p.strip()]
    try:
        return [int(str(p).strip()) for p in parts]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {value!r}") from None


def parse_sizes(value, levels: int) -> list[int]:
    """One positive size per level; a single value is repeated for every level."""
    sizes = parse_int_list(value)
    if len(sizes) == 1:
        sizes = sizes * levels
    if len(sizes) != levels or min(sizes) < 1:
        raise ValueError(f"need {levels} positive sizes (one per level), got {value!r}")
    return sizes


def check_common(args: QuantArgs, n_items: int) -> list[int]:
    """Validate the shared flags before any clustering; returns the per-level sizes."""
    if not args.embedding_path or not args.output_path:
        raise SystemExit("error: --embedding_path and --output_path are required")
    if Path(args.output_path).is_dir():
        raise SystemExit(f"error: --output_path {args.output_path}: is a directory, not a file")
    writable_dir(str(Path(args.output_path).parent), "output_path")
    if not 1 <= args.levels <= 25:
        raise SystemExit(f"error: --levels must be in 1..25, got {args.levels}")
    if args.collision not in ("reassign", "append"):
        raise SystemExit(f"error: --collision must be reassign or append, got {args.collision!r}")
    try:
        sizes = parse_sizes(args.codebook_size, args.levels)
    except ValueError as e:
        raise SystemExit(f"error: --codebook_size: {e}") from None
    if max(sizes) > n_items:
        raise SystemExit(f"error: --codebook_size {max(sizes)} exceeds the {n_items} items to cluster")
    if args.collision == "reassign" and math.prod(sizes) < n_items:  # append mode grows a level instead
        raise SystemExit(f"error: --levels {args.levels} x --codebook_size {args.codebook_size} give "
                         f"{math.prod(sizes)} distinct SIDs for {n_items} items; raise either, "
                         "or use --collision append")
    return sizes


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a hard dependency of the repo
        pass
