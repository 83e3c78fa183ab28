"""minionerec/prep/amazon23_data_process.py on the hand-made 2023-format sample in tests/fixtures/amazon23/.

The sample (21 review lines, 6 metadata lines; day d = 2023-01-01 + d days, in milliseconds; window = 2023):
- dropped before k-core: UA's second line for P1 (another variant asin, same parent_asin and timestamp),
  2 reviews outside 2023, PHTML (HTML title) and PNOMETA (no metadata);
- the 2-core drops P4 (one review), then UD (one item). Left: UA, UB, UC, UE on P1-P3 -> ids "0", "1", "2";
- UB reviewed P1 at +1000 ms and P2 at +500 ms on the same day, P1's line first: time order wins;
- UE buys 0,1,2,0,1,2 on days 20..25, so with max_history 3 its last rows slide the window.
"""
import gzip
import json
import shutil
from pathlib import Path

import pytest

from minionerec.data.inter import read_inter
from minionerec.prep import amazon18_data_process, amazon_common
from minionerec.prep.amazon23_data_process import Args, main, process
from minionerec.data.formats import DataError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "amazon23"
WINDOW = dict(st_year=2023, st_month=1, ed_year=2023, ed_month=12, user_k=2, item_k=2, max_history=3)

EXPECTED = {  # (user, history, target), globally sorted by the target's time
    "train": [
        ("UA", ["0"], "1"),  # day 2
        ("UA", ["0", "1"], "2"),  # day 3
        ("UB", ["1"], "0"),  # day 5 + 1000 ms: P2 (+500 ms) came first
        ("UB", ["1", "0"], "2"),  # day 6
        ("UC", ["2"], "0"),  # day 8
        ("UE", ["0"], "1"), ("UE", ["0", "1"], "2"), ("UE", ["0", "1", "2"], "0"),  # days 21..23
    ],
    "valid": [("UE", ["1", "2", "0"], "1")],  # 10 rows: 8 train, 1 valid, 1 test
    "test": [("UE", ["2", "0", "1"], "2")],
}


def run(tmp_path, reviews=FIXTURES / "Tiny.jsonl", meta=FIXTURES / "meta_Tiny.jsonl", **kw):
    return process(reviews, meta, "Tiny", tmp_path, **{**WINDOW, **kw})


def test_expected_split_rows(tmp_path):
    counts = run(tmp_path)
    assert counts == {"reviews_in_window": 18, "with_title": 16, "k_core": 14, "users": 4, "items": 3,
                      "train": 8, "valid": 1, "test": 1}
    for split, rows in EXPECTED.items():
        assert read_inter(tmp_path / f"Tiny.{split}.inter") == rows, split


def test_item_json_joins_description_and_features_and_maps_parent_asins(tmp_path):
    run(tmp_path)
    items = json.loads((tmp_path / "Tiny.item.json").read_text())
    assert items["0"] == {"title": 'Acme Digital Caliper 6" Stainless',
                          "description": "Precise to 0.01 mm. Battery included.", "brand": "Acme",
                          "categories": "Industrial & Scientific, Measuring"}
    assert items["1"] == {"title": "Orion Nitrile Gloves, Large (100 pack)", "description": "Powder-free Latex-free",
                          "brand": "Orion", "categories": ""}
    assert items["2"]["brand"] == ""  # "store": null
    assert json.loads((tmp_path / "Tiny.item2asin.json").read_text()) == {"0": "P1", "1": "P2", "2": "P3"}


def test_gzip_input_and_the_cli_give_the_same_rows(tmp_path):
    for name in ("Tiny.jsonl", "meta_Tiny.jsonl"):
        with open(FIXTURES / name, "rb") as src, gzip.open(tmp_path / f"{name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    main(Args(reviews_path=str(tmp_path / "Tiny.jsonl.gz"), meta_path=str(tmp_path / "meta_Tiny.jsonl.gz"),
              category="Tiny", output_dir=str(tmp_path / "out"), **WINDOW))
    assert read_inter(tmp_path / "out" / "Tiny.test.inter") == EXPECTED["test"]


def test_the_window_is_read_in_milliseconds(tmp_path):
    """2022 holds one review (day -1, 2022-12-31): too few for the 2-core. Seconds would put all in 1970."""
    with pytest.raises(DataError, match="no interactions left"):
        run(tmp_path / "y2022", st_year=2022, ed_year=2022)


def test_shares_the_2018_pipeline():
    from minionerec.prep import amazon23_data_process

    for script in (amazon18_data_process, amazon23_data_process):
        assert script.process_dump is amazon_common.process_dump and script.run_script is amazon_common.run_script
        assert script.read_item_meta is amazon_common.read_item_meta


@pytest.mark.parametrize("line, message", [
    ('{"user_id": "U", "parent_asin": "P1"}', "line 1: missing timestamp"),
    ('{"user_id": "U", "parent_asin": "P1", "timestamp": "1672617600000"}', "line 1: timestamp must be an integer"),
    ('{"user_id": "U", "parent_asin": "P1", "timestamp": 1.5}', "line 1: timestamp must be an integer"),
])
def test_bad_review_lines_are_one_line_errors(tmp_path, line, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(line + "\n")
    with pytest.raises(DataError, match=message):
        run(tmp_path / "out", reviews=bad)
    assert not (tmp_path / "out" / "Tiny.item.json").exists()
