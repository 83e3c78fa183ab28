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

Steps 2-5 and the writers live in minionerec/prep/amazon_common.py, shared with minionerec/prep/amazon23_data_process.py.

Outputs in --output_dir (item ids are "0".."n-1" in sorted-ASIN order, user ids are reviewerIDs):
  <Category>.item.json            {item_id: {title, description, brand, categories}}
  <Category>.item2asin.json       {item_id: asin}
  <Category>.{train,valid,test}.inter   TSV `user_id:token  item_id_list:token_seq  item_id:token`

    python -m minionerec.prep.amazon18_data_process --reviews_path Industrial_and_Scientific.json.gz \
        --meta_path meta_Industrial_and_Scientific.json.gz --category Industrial_and_Scientific --output_dir raw/
"""
from __future__ import annotations

from dataclasses import dataclass

from tqdm import tqdm


from minionerec.prep.amazon_common import (clean_text, process_dump, read_item_meta, read_json_lines,
                                run_script)
from minionerec.run.cli import run
from minionerec.data.formats import DataError

REVIEW_KEYS = ("reviewerID", "asin", "unixReviewTime")


@dataclass
class Args:
    """Amazon 2018 reviews + metadata -> item.json and <Category>.{train,valid,test}.inter."""

    reviews_path: str = ""  # <Category>.json(.gz): reviewerID, asin, unixReviewTime, overall per line
    meta_path: str = ""  # meta_<Category>.json(.gz): asin, title, description, brand, category per line
    category: str = ""  # file-name stem of the outputs
    output_dir: str = ""  # writes <Category>.{train,valid,test}.inter, .item.json, .item2asin.json here
    st_year: int = 2016  # window start (inclusive)
    st_month: int = 10  # 1..12: the window starts on the 1st of this month of --st_year
    ed_year: int = 2018  # window end (inclusive: the whole month)
    ed_month: int = 11  # 1..12: the window ends with this month of --ed_year
    user_k: int = 5  # k-core: minimum interactions per user
    item_k: int = 5  # k-core: minimum interactions per item
    max_history: int = 10  # history items per row (most recent)
    max_title_words: int = 40  # longer titles are usually keyword lists, not names


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


def describe(obj: dict) -> dict:
    """A 2018 metadata line's description, brand and categories."""
    categories = obj.get("category", [])
    return {"description": clean_text(obj.get("description", "")), "brand": clean_text(obj.get("brand", "")),
            "categories": ", ".join(map(str, categories)) if isinstance(categories, list) else str(categories)}


def load_meta(path, asins: set[str], max_title_words: int) -> dict[str, dict]:
    """asin -> {title, description, brand, categories} for reviewed items with a clean title."""
    return read_item_meta(path, asins, max_title_words, "asin", describe)


def process(reviews_path, meta_path, category, output_dir, st_year=2016, st_month=10, ed_year=2018, ed_month=11,
            user_k=5, item_k=5, max_history=10, max_title_words=40) -> dict:
    """Run every step and write the outputs; returns counts for the log."""
    return process_dump(load_reviews, load_meta, reviews_path, meta_path, category, output_dir, st_year, st_month,
                        ed_year, ed_month, user_k, item_k, max_history, max_title_words)


def main(args: Args) -> dict:
    return run_script(process, args)


if __name__ == "__main__":
    run(main, Args)
