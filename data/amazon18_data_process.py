"""Raw Amazon 2018 reviews + metadata (JSON lines, optionally .gz) -> item.json and .inter split files.

Steps, in order:
1. reviews inside the time window [st_year-st_month-01, end of ed_year-ed_month] (UTC); exact duplicate
   lines (same user, item and time) are dropped, repeat purchases at other times are kept;
2. items need a clean title in the metadata: HTML entities decoded, whitespace collapsed; titles that
   are empty, still HTML-ish (tags, entities, braces) or longer than --max_title_words are dropped;
3. k-core: users with < user_k and items with < item_k interactions are removed, repeatedly, until
   nothing changes (the k-core is unique, so the result does not depend on removal order);
4. each user's interactions sorted by time (ties keep file order); every interaction after the first
   becomes a row (user, up to max_history previous items, target item);
5. all rows sorted by the target's time (then user id, then position), split 8:1:1 in that order
   (train = first int(0.8 n), valid = next int(0.1 n), test = the rest), so no test row precedes a
   train row in time.

Outputs in --output_dir (item ids are "0".."n-1" in sorted-ASIN order, user ids are reviewerIDs):
  <Category>.item.json            {item_id: {title, description, brand, categories}}
  <Category>.item2asin.json       {item_id: asin}
  <Category>.{train,valid,test}.inter   TSV `user_id:token  item_id_list:token_seq  item_id:token`

    python data/amazon18_data_process.py --reviews_path Industrial_and_Scientific.json.gz \
        --meta_path meta_Industrial_and_Scientific.json.gz --category Industrial_and_Scientific --output_dir raw/
"""
from __future__ import annotations

import calendar
import gzip
import html
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from convert_dataset import write_inter  # noqa: E402
from minionerec.atomic import atomic_write_text  # noqa: E402
from minionerec.cli import run  # noqa: E402
from minionerec.data import DataError  # noqa: E402

REVIEW_KEYS = ("reviewerID", "asin", "unixReviewTime")
_JUNK = re.compile(r"<[^>]*>|&[#a-zA-Z0-9]+;|[{}]")  # tags, entities left after one unescape, JS/CSS braces


@dataclass
class Args:
    """Amazon 2018 reviews + metadata -> item.json and <Category>.{train,valid,test}.inter."""

    reviews_path: str = ""  # <Category>.json(.gz): reviewerID, asin, unixReviewTime, overall per line
    meta_path: str = ""  # meta_<Category>.json(.gz): asin, title, description, brand, category per line
    category: str = ""  # file-name stem of the outputs
    output_dir: str = ""
    st_year: int = 2016  # window start (inclusive)
    st_month: int = 10
    ed_year: int = 2018  # window end (inclusive: the whole month)
    ed_month: int = 11
    user_k: int = 5  # k-core: minimum interactions per user
    item_k: int = 5  # k-core: minimum interactions per item
    max_history: int = 10  # history items per row (most recent)
    max_title_words: int = 40  # longer titles are usually keyword lists, not names


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


def load_reviews(path, start: int, end: int) -> list[tuple[str, str, int]]:
    """(user, asin, time) in file order, inside [start, end), exact duplicates dropped."""
    seen, reviews = set(), []
    for lineno, obj in tqdm(read_json_lines(path), desc="reviews", unit=" lines", leave=False):
        missing = [k for k in REVIEW_KEYS if k not in obj]
        if missing:
            raise DataError(f"{path}: line {lineno}: missing {', '.join(missing)}")
        key = (str(obj["reviewerID"]), str(obj["asin"]), int(obj["unixReviewTime"]))
        if start <= key[2] < end and key not in seen:
            seen.add(key)
            reviews.append(key)
    return reviews


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


def load_meta(path, asins: set[str], max_title_words: int) -> dict[str, dict]:
    """asin -> {title, description, brand, categories} for reviewed items with a clean title."""
    meta = {}
    for _lineno, obj in tqdm(read_json_lines(path), desc="metadata", unit=" lines", leave=False):
        asin = str(obj.get("asin", ""))
        if asin not in asins or asin in meta:
            continue
        title = clean_title(obj.get("title"))
        if title is None or len(title.split()) > max_title_words:
            continue
        categories = obj.get("category", [])
        meta[asin] = {"title": title, "description": clean_text(obj.get("description", "")),
                      "brand": clean_text(obj.get("brand", "")),
                      "categories": ", ".join(map(str, categories)) if isinstance(categories, list) else str(categories)}
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


def process(reviews_path, meta_path, category, output_dir, st_year=2016, st_month=10, ed_year=2018, ed_month=11,
            user_k=5, item_k=5, max_history=10, max_title_words=40) -> dict:
    """Run every step and write the outputs; returns counts for the log."""
    start, end = window(st_year, st_month, ed_year, ed_month)
    reviews = load_reviews(reviews_path, start, end)
    meta = load_meta(meta_path, {r[1] for r in reviews}, max_title_words)
    titled = [r for r in reviews if r[1] in meta]
    core = k_core(titled, user_k, item_k)
    if not core:
        raise DataError(f"{reviews_path}: no interactions left after the time window, titles and "
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


def main(args: Args) -> dict:
    for flag in ("reviews_path", "meta_path", "category", "output_dir"):
        if not getattr(args, flag):
            raise SystemExit(f"error: --{flag} is required")
    try:
        counts = process(**vars(args))
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    run(main, Args)
