"""What the Amazon 2018 and 2023 preprocessing scripts share: steps 2-5 of their pipeline and its readers.

Both scripts turn raw reviews into (user, item, time) triples inside a time window and item metadata
into {title, description, brand, categories}; from there everything is common (see
minionerec/prep/amazon18_data_process.py for the steps): titled items only, k-core, per-user rows with a history
window, a global time-ordered 8:1:1 split, and the output files
  <Category>.item.json  <Category>.item2asin.json  <Category>.{train,valid,test}.inter
Item ids are "0".."n-1" in sorted-ASIN order (the parent ASIN for 2023); times only need to be
comparable within one file (seconds for 2018, milliseconds for 2023).
"""
from __future__ import annotations

import calendar
import gzip
import html
import json
import re
from collections import Counter
from pathlib import Path

from tqdm import tqdm


from minionerec.data.inter import write_inter
from minionerec.run.atomic import atomic_write_text
from minionerec.data.formats import DataError

_JUNK = re.compile(r"<[^>]*>|&[#a-zA-Z0-9]+;|[{}]")  # tags, entities left after one unescape, JS/CSS braces


def read_json_lines(path):
    """Yield (line number, object) of a JSON-lines file, plain or gzip; one-line DataError on bad lines."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        lineno = 0
        while True:
            try:
                line = next(f, None)
            except (EOFError, OSError, UnicodeDecodeError) as e:  # a truncated or non-gzip .gz, a binary file
                raise DataError(f"{path}: unreadable after line {lineno} ({' '.join(str(e).split())})") from None
            if line is None:
                return
            lineno += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}: line {lineno}: expected a JSON object")
            yield lineno, obj


def window(st_year: int, st_month: int, ed_year: int, ed_month: int) -> tuple[int, int]:
    """[start, end) in unix seconds, UTC; end is the first second after month ed_year-ed_month."""
    for name, month in (("st_month", st_month), ("ed_month", ed_month)):
        if not 1 <= month <= 12:
            raise DataError(f"--{name} must be 1..12, got {month}")
    start = calendar.timegm((st_year, st_month, 1, 0, 0, 0))
    end = calendar.timegm((ed_year + ed_month // 12, ed_month % 12 + 1, 1, 0, 0, 0))
    if end <= start:
        raise DataError(f"time window {st_year}-{st_month:02d}..{ed_year}-{ed_month:02d} is empty")
    return start, end


def clean_title(raw) -> str | None:
    """A usable product name, or None (empty, HTML-ish)."""
    if not isinstance(raw, str):
        return None
    title = " ".join(html.unescape(raw).split())
    if not title or _JUNK.search(title):
        return None
    return title


def clean_text(value) -> str:
    """Description/category lists -> one plain string (tags removed, entities decoded)."""
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    return " ".join(html.unescape(re.sub(r"<[^>]*>", " ", str(value or ""))).split())


def read_item_meta(path, asins: set[str], max_title_words: int, asin_key: str, describe) -> dict[str, dict]:
    """asin -> {title, **describe(obj)} for the reviewed items (`asins`) whose title is clean and at most
    `max_title_words` words; the first line of an item wins. `describe` maps a dump's own metadata fields."""
    meta = {}
    for _, obj in tqdm(read_json_lines(path), desc="metadata", unit=" lines", leave=False):
        asin = str(obj.get(asin_key, ""))
        if asin not in asins or asin in meta:
            continue
        title = clean_title(obj.get("title"))
        if title is None or len(title.split()) > max_title_words:
            continue
        meta[asin] = {"title": title, **describe(obj)}
    return meta


def k_core(reviews: list[tuple[str, str, int]], user_k: int, item_k: int) -> list[tuple[str, str, int]]:
    """Drop users/items below their minimum count until no count changes (a fixed point)."""
    while True:
        users, items = Counter(r[0] for r in reviews), Counter(r[1] for r in reviews)
        kept = [r for r in reviews if users[r[0]] >= user_k and items[r[1]] >= item_k]
        if len(kept) == len(reviews):
            return kept
        reviews = kept


def build_rows(reviews: list[tuple[str, str, int]], item_ids: dict[str, str], max_history: int):
    """(user, history item ids, target item id) sorted by (target time, user, position)."""
    by_user: dict[str, list[tuple[int, str]]] = {}
    for user, asin, t in reviews:
        by_user.setdefault(user, []).append((t, item_ids[asin]))
    timed = []
    for user, events in by_user.items():
        events.sort(key=lambda e: e[0])  # stable: same-day reviews keep file order
        seq = [item for _, item in events]
        for pos in range(1, len(seq)):
            timed.append((events[pos][0], user, pos, seq[max(0, pos - max_history):pos], seq[pos]))
    timed.sort(key=lambda r: r[:3])
    return [(user, history, target) for _, user, _, history, target in timed]


def split_rows(rows: list) -> dict[str, list]:
    n_train, n_valid = int(len(rows) * 0.8), int(len(rows) * 0.1)
    return {"train": rows[:n_train], "valid": rows[n_train:n_train + n_valid], "test": rows[n_train + n_valid:]}


def build_dataset(reviews: list[tuple[str, str, int]], meta: dict[str, dict], category: str, output_dir,
                  user_k: int = 5, item_k: int = 5, max_history: int = 10, source="reviews") -> dict:
    """Steps 2-5 on windowed (user, asin, time) reviews and asin -> item text; writes the outputs, returns counts."""
    titled = [r for r in reviews if r[1] in meta]
    core = k_core(titled, user_k, item_k)
    if not core:
        raise DataError(f"{source}: no interactions left after the time window, titles and "
                        f"{user_k}/{item_k}-core filters")
    asins = sorted({r[1] for r in core})
    item_ids = {asin: str(i) for i, asin in enumerate(asins)}
    splits = split_rows(build_rows(core, item_ids, max_history))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        write_inter(rows, out / f"{category}.{split}.inter")
    atomic_write_text(out / f"{category}.item.json", json.dumps({item_ids[a]: meta[a] for a in asins}, indent=1))
    atomic_write_text(out / f"{category}.item2asin.json", json.dumps({item_ids[a]: a for a in asins}))
    return {"reviews_in_window": len(reviews), "with_title": len(titled), "k_core": len(core),
            "users": len({r[0] for r in core}), "items": len(asins), **{s: len(r) for s, r in splits.items()}}


def process_dump(load_reviews, load_meta, reviews_path, meta_path, category, output_dir, st_year, st_month, ed_year,
                 ed_month, user_k, item_k, max_history, max_title_words) -> dict:
    """A dump's reviews in the time window -> its items' metadata -> the shared pipeline; returns counts.
    `load_reviews(path, start, end)` and `load_meta(path, asins, max_title_words)` read the dump's own format."""
    start, end = window(st_year, st_month, ed_year, ed_month)
    reviews = load_reviews(reviews_path, start, end)
    meta = load_meta(meta_path, {r[1] for r in reviews}, max_title_words)
    return build_dataset(reviews, meta, category, output_dir, user_k, item_k, max_history, source=reviews_path)


def run_script(process, args) -> dict:
    """Both dump scripts' main: required flags, then `process(**vars(args))`; prints the counts."""
    for flag in ("reviews_path", "meta_path", "category", "output_dir"):
        if not getattr(args, flag):
            raise SystemExit(f"error: --{flag} is required")
    try:
        counts = process(**vars(args))
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(counts))
    return counts
