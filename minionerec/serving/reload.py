"""Catalogue reload of serve.py: a new index.json (and item.json) from under the server's data root, checked like
the server's own catalogue, and how /health names a catalogue's file.

Every path is confined to the data root (`confined`): a file outside it, missing, not a regular file or larger than
MAX_CATALOGUE_FILE_BYTES is refused before it is read, and every error (a RequestError: 422) names the field and the
kind of problem, never a server path or the file's contents. The app runs `load_reload_catalogue` on the queue's
decoding thread between batches and swaps the result in with one assignment.

May import minionerec.data and minionerec.serving.recommender; nothing of HTTP.
"""
from __future__ import annotations

from pathlib import Path

from minionerec.data.formats import load_item_meta, load_sid_index, sid_string
from minionerec.serving.recommender import (MAX_CATALOGUE_FILE_BYTES, Catalogue, Recommender, RequestError,
                                             build_catalogue)


def confined(root: Path, given: str, field: str) -> Path:
    """`given` (relative to `root`, or absolute) as an existing regular file under `root`, symlinks resolved;
    every failure (missing, outside, a directory or FIFO, unreadable, a bad name) is the same RequestError, so
    the answer reveals nothing about the filesystem. A file under `root` over MAX_CATALOGUE_FILE_BYTES is refused
    before it is read."""
    not_found = RequestError(field, f"{field}: file not found under the server's data root")
    if not given or "\x00" in given:
        raise not_found
    try:
        path = (root / given).resolve(strict=True)
        if not path.is_relative_to(root) or not path.is_file():
            raise not_found
        too_large = path.stat().st_size > MAX_CATALOGUE_FILE_BYTES
    except (OSError, ValueError, RuntimeError):
        raise not_found from None
    if too_large:
        raise RequestError(field, f"{field}: larger than the server's limit of {MAX_CATALOGUE_FILE_BYTES >> 30} GiB")
    return path


def load_reload_catalogue(recommender: Recommender, root: Path, sid_index_path: str, item_meta_path: str) -> Catalogue:
    """A new catalogue from files under `root`, checked like the server's own: RequestErrors naming the field and
    the problem, never a path or the files' contents."""
    index_file = confined(root, sid_index_path, "sid_index_path")
    meta_file = confined(root, item_meta_path, "item_meta_path") if item_meta_path else None
    try:
        sid_index = load_sid_index(index_file)
    except (ValueError, OSError, RecursionError):
        raise RequestError("sid_index_path", "sid_index_path: not a usable SID index (expected a non-empty UTF-8 "
                                             "JSON object: item id -> list of '<...>' SID tokens, all of one "
                                             "length)") from None
    try:
        item_meta = load_item_meta(meta_file) if meta_file else None
    except (ValueError, OSError, RecursionError):
        raise RequestError("item_meta_path", "item_meta_path: not a usable item.json (expected a non-empty UTF-8 "
                                             "JSON object: item id -> {\"title\": ...})") from None
    distinct = len({sid_string(tokens) for tokens in sid_index.values()})
    if distinct < recommender.num_beams:
        raise RequestError("sid_index_path", f"sid_index_path: the index has {distinct} distinct SIDs, fewer than "
                                             f"the server's {recommender.num_beams} beams")
    vocab = recommender.tokenizer.get_vocab()
    missing = {t for tokens in sid_index.values() for t in tokens if t not in vocab}
    if missing:
        raise RequestError("sid_index_path", f"sid_index_path: {len(missing)} SID token(s) are not single tokens of "
                                             "the model's vocabulary (add them with python -m minionerec.rq.add_items "
                                             "--base_model ...)")
    try:
        # the server's train counts carry over: a shared SID is shown as the same item as before the reload
        return build_catalogue(sid_index, item_meta, recommender.tokenizer, recommender.catalogue.trie.device,
                               sid_index_path, recommender.catalogue.target_counts)
    except ValueError:
        raise RequestError("sid_index_path", "sid_index_path: no SID trie can be built from this index for this "
                                             "model") from None


def display_source(source: str, root: Path | None) -> str:
    """A catalogue's path as /health shows it: relative to the data root, else the file name only."""
    path = Path(source).resolve()
    if root is not None and path.is_relative_to(root):
        return str(path.relative_to(root))
    return path.name
