"""minionerec/prep/amazon18_data_process.py on the hand-made sample in tests/fixtures/amazon18/.

The sample (42 review lines, 11 metadata lines; day d = 2017-01-01 + d days, window = 2017):
- dropped before k-core: UA's exact duplicate line, 2 reviews outside 2017, items with an HTML title
  (B0000HTML1), a blank title (B000EMPTY2), a 50-word title (B0000LONG3) and no metadata (B00NOMETA4);
- the 3-core cascades: UF (2 items) and B0000RARE5 (1 review) go, then UE and B000000006, then UD and
  B000000005, then B000000004, then UC. Left: users UA, UB, UG, UH on items 1-3 -> ids "0", "1", "2";
- UH buys 0,1,2,0,1,2,... on days 30..41, so its last row has a 10-item history window.
"""
import gzip
import json
import shutil
from pathlib import Path

import pytest

from minionerec.data.inter import read_inter
from minionerec.prep.amazon18_data_process import Args, main, process
from minionerec.data.formats import DataError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "amazon18"
WINDOW = dict(st_year=2017, st_month=1, ed_year=2017, ed_month=12, user_k=3, item_k=3)

H = ["0", "1", "2"] * 4  # UH's sequence
EXPECTED = {  # (user, history, target), globally sorted by the target's day
    "train": [
        ("UA", ["0"], "1"),  # day 3
        ("UB", ["1"], "2"),  # day 4
        ("UA", ["0", "1"], "2"),  # day 5
        ("UB", ["1", "2"], "0"),  # day 6
        ("UG", ["0"], "1"),  # day 21
        ("UG", ["0", "1"], "2"),  # day 22
        *[("UH", H[:t], H[t]) for t in range(1, 8)],  # days 31..37
    ],
    "valid": [("UH", H[:8], H[8])],  # 17 rows: 13 train (int 13.6), 1 valid (int 1.7), 3 test
    "test": [("UH", H[:9], H[9]), ("UH", H[:10], H[10]), ("UH", H[1:11], H[11])],  # last: 10-item window
}


def run(tmp_path, reviews=FIXTURES / "reviews.json", meta=FIXTURES / "meta.json", **kw):
    return process(reviews, meta, "Tiny", tmp_path, **{**WINDOW, **kw})


def test_expected_split_rows(tmp_path):
    counts = run(tmp_path)
    assert counts == {"reviews_in_window": 39, "with_title": 35, "k_core": 21, "users": 4, "items": 3,
                      "train": 13, "valid": 1, "test": 3}
    for split, rows in EXPECTED.items():
        assert read_inter(tmp_path / f"Tiny.{split}.inter") == rows, split
    assert (tmp_path / "Tiny.train.inter").read_text().splitlines()[0] == \
        "user_id:token\titem_id_list:token_seq\titem_id:token"


def test_item_json_has_cleaned_text_and_asin_map(tmp_path):
    run(tmp_path)
    items = json.loads((tmp_path / "Tiny.item.json").read_text())
    assert items["0"] == {"title": 'Acme Digital Caliper 6" Stainless', "description": "Precise to 0.01 mm. Battery included.",
                          "brand": "Acme", "categories": "Industrial & Scientific, Measuring"}
    assert items["1"]["title"] == "Orion Nitrile Gloves, Large (100 pack)"  # whitespace collapsed
    assert json.loads((tmp_path / "Tiny.item2asin.json").read_text()) == {"0": "B000000001", "1": "B000000002",
                                                                           "2": "B000000003"}


def test_gzip_input_gives_the_same_rows(tmp_path):
    for name in ("reviews.json", "meta.json"):
        with open(FIXTURES / name, "rb") as src, gzip.open(tmp_path / f"{name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    run(tmp_path / "out", tmp_path / "reviews.json.gz", tmp_path / "meta.json.gz")
    assert read_inter(tmp_path / "out" / "Tiny.test.inter") == EXPECTED["test"]


def test_lower_k_keeps_more_items(tmp_path):
    assert run(tmp_path, user_k=1, item_k=1)["items"] == 7  # 6 titled items + B0000RARE5


def test_bad_lines_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"reviewerID": "U", "asin": "A", "unixReviewTime": 1483315200}\n{not json\n')
    with pytest.raises(DataError, match=r"bad.json: line 2: invalid JSON"):
        run(tmp_path, reviews=bad)
    bad.write_text('{"reviewerID": "U", "asin": "A"}\n')
    with pytest.raises(DataError, match=r"bad.json: line 1: missing unixReviewTime"):
        run(tmp_path, reviews=bad)
    with pytest.raises(SystemExit, match="--st_month must be 1..12"):
        main(Args(reviews_path=str(bad), meta_path=str(bad), category="T", output_dir=str(tmp_path), st_month=13))
