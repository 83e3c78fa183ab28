"""Items that share a SID, and ranked SID lists written as items.

A SID index may give one SID to several items (the release indexes have 15 such groups). A model that writes SIDs
is then scored on the group, not the item; to compare it with an item-level recommender (SASRec) on the same
footing, each SID must become one item, as a server has to show one: here the item of its group that is most
often a next item in train (ties: catalogue order).
"""
from __future__ import annotations

from collections import Counter


def sid_strings(index_path: str) -> dict[str, str]:
    """item id -> its SID string, in catalogue order, from an index.json."""
    from minionerec.data.formats import load_catalogue, sid_string

    return {item: sid_string(sid) for item, sid in load_catalogue(index_path).items()}


def sid_groups(sid_of: dict[str, str]) -> dict[str, list[str]]:
    """SID string -> its items in catalogue order, for every SID (most have one item)."""
    groups: dict[str, list[str]] = {}
    for item, sid in sid_of.items():
        groups.setdefault(sid, []).append(item)
    return groups


def representative_items(groups: dict[str, list[str]], train_targets) -> dict[str, str]:
    """SID -> the item of its group most often a train target (the first in catalogue order on a tie).

    `train_targets`: the train rows' next items, or their counts (a Counter); empty = every SID's first item."""
    counts = Counter(train_targets)
    return {sid: max(items, key=lambda item: counts[item]) for sid, items in groups.items()}  # max keeps the first


def as_items(ranked_sids: list[list[str]], item_of: dict[str, str]) -> list[list[str]]:
    """Each user's ranked SIDs written as items (a SID outside the index stays as it is: still a miss)."""
    return [[item_of.get(sid, sid) for sid in row] for row in ranked_sids]


def as_sids(ranked_items: list[list[str]], sid_of: dict[str, str]) -> list[list[str]]:
    """Each user's ranked items written as SIDs, a SID already listed dropped: items sharing a SID count once."""
    return [list(dict.fromkeys(sid_of[item] for item in row)) for row in ranked_items]


def train_target_counts(train_path, sid_of: dict[str, str] | None = None) -> Counter:
    """item id -> how many train rows have it as the next item (DataError names a bad file).

    With `sid_of` (item id -> SID string of the index the counts are for), each row's next item must carry the
    index's SID: another dataset's train split (whose item ids may well be the same numbers) or one made with
    another index would otherwise count the wrong items, without a word."""
    from minionerec.data.formats import DataError, load_split

    split = load_split(train_path)
    if sid_of is not None:
        for row, (item, sid) in enumerate(zip(split["item_id"], split["item_sid"]), start=2):  # row 1: header
            if sid_of.get(item) != sid:
                in_index = f"SID {sid_of[item]} in the index" if item in sid_of else "no entry in the index"
                raise DataError(f"{train_path}: row {row}: next item {item} has SID {sid} here but {in_index}: "
                                "give the train split made with this index (not another dataset's)")
    return Counter(str(i) for i in split["item_id"])


def item_of_sid(sid_of: dict[str, str], train_path: str) -> dict[str, str]:
    """SID string -> the item a ranked SID is written as, for an index (`sid_strings`) and the train split read
    with it."""
    return representative_items(sid_groups(sid_of), train_target_counts(train_path))


def rows_by_item(rows: list[dict], item_of: dict[str, str]) -> list[dict]:
    """Prediction rows scored by item: each ranked SID written as its item, the target as the item id (the
    `item_sid` key is what minionerec.ranking.paired scores against)."""
    return [{**row, "predict": as_items([row["predict"]], item_of)[0], "item_sid": str(row["item_id"])} for row in rows]
