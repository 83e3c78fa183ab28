"""Raw Amazon Reviews 2023 (JSON lines, optionally .gz) -> item.json and .inter split files.

The 2023 release (per category `<Category>.jsonl` and `meta_<Category>.jsonl`) replaces the 2018
dumps, which can no longer be downloaded. Same steps and outputs as minionerec/prep/amazon18_data_process.py
(shared code: minionerec/prep/amazon_common.py), read from the 2023 fields:

- reviews: `user_id`, `parent_asin` (the item: all variants of a product are one item, as upstream
  and the 2023 benchmark splits use it), `timestamp` in **milliseconds** (UTC); the window compares
  milliseconds, ties keep file order, and exact duplicates (same user, parent_asin, timestamp; e.g.
  one review listed under two variant asins) are dropped;
- metadata: `parent_asin`, `title` (cleaned and filtered as for 2018), `description` and `features`
  (lists of strings, joined into item.json's description: description first), `store` (-> brand),
  `categories` (list, joined with ", ").

    python -m minionerec.prep.amazon23_data_process --reviews_path Industrial_and_Scientific.jsonl.gz \
        --meta_path meta_Industrial_and_Scientific.jsonl.gz --category Industrial_and_Scientific --output_dir raw/

Then, as for 2018: minionerec/rq/text2emb.py -> a quantiser in minionerec/rq/ -> convert_dataset.py (see minionerec/rq/README.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from tqdm import tqdm


from minionerec.prep.amazon_common import (clean_text, process_dump, read_item_meta, read_json_lines,
                                run_script)
from minionerec.run.cli import run
from minionerec.data.formats import DataError

REVIEW_KEYS = ("user_id", "parent_asin", "timestamp")


@dataclass
class Args:
    """Amazon Reviews 2023 reviews + metadata -> item.json and <Category>.{train,valid,test}.inter."""

    reviews_path: str = ""  # <Category>.jsonl(.gz): user_id, parent_asin, timestamp (ms), rating per line
    meta_path: str = ""  # meta_<Category>.jsonl(.gz): parent_asin, title, description, features, store, categories
    category: str = ""  # file-name stem of the outputs
    output_dir: str = ""  # writes <Category>.{train,valid,test}.inter, .item.json, .item2asin.json here
    st_year: int = 2021  # window start (inclusive); the 2023 release runs to 2023-09
    st_month: int = 10  # 1..12: the window starts on the 1st of this month of --st_year
    ed_year: int = 2023  # window end (inclusive: the whole month)
    ed_month: int = 9  # 1..12: the window ends with this month of --ed_year
    user_k: int = 5  # k-core: minimum interactions per user
    item_k: int = 5  # k-core: minimum interactions per item
    max_history: int = 10  # history items per row (most recent)
    max_title_words: int = 40  # longer titles are usually keyword lists, not names


def load_reviews(path, start: int, end: int) -> list[tuple[str, str, int]]:
    """(user, parent_asin, time in ms) in file order, inside [start, end) seconds, exact duplicates dropped."""
    seen, reviews = set(), []
    for lineno, obj in tqdm(read_json_lines(path), desc="reviews", unit=" lines", leave=False):
        missing = [k for k in REVIEW_KEYS if obj.get(k) in (None, "")]
        if missing:
            raise DataError(f"{path}: line {lineno}: missing {', '.join(missing)}")
        stamp = obj["timestamp"]
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or stamp != int(stamp):
            raise DataError(f"{path}: line {lineno}: timestamp must be an integer number of milliseconds, "
                            f"got {stamp!r}")
        key = (str(obj["user_id"]), str(obj["parent_asin"]), int(stamp))
        if start * 1000 <= key[2] < end * 1000 and key not in seen:
            seen.add(key)
            reviews.append(key)
    return reviews


def _strings(value) -> list[str]:
    """A list field (description, features, categories); null or a bare string tolerated."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def describe(obj: dict) -> dict:
    """A 2023 metadata line's description (+ features), brand (its store) and categories."""
    return {"description": clean_text(_strings(obj.get("description")) + _strings(obj.get("features"))),
            "brand": clean_text(obj.get("store") or ""), "categories": ", ".join(_strings(obj.get("categories")))}


def load_meta(path, asins: set[str], max_title_words: int) -> dict[str, dict]:
    """parent_asin -> {title, description, brand, categories} for reviewed items with a clean title."""
    return read_item_meta(path, asins, max_title_words, "parent_asin", describe)


def process(reviews_path, meta_path, category, output_dir, st_year=2021, st_month=10, ed_year=2023, ed_month=9,
            user_k=5, item_k=5, max_history=10, max_title_words=40) -> dict:
    """Run every step and write the outputs; returns counts for the log."""
    return process_dump(load_reviews, load_meta, reviews_path, meta_path, category, output_dir, st_year, st_month,
                        ed_year, ed_month, user_k, item_k, max_history, max_title_words)


def main(args: Args) -> dict:
    return run_script(process, args)


if __name__ == "__main__":
    run(main, Args)
