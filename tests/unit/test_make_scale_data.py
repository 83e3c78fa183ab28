"""The scale generator (minionerec/prep/make_scale_data.py): the size asked for, deterministic, readable by every
stage, SIDs unique at a shape that fits the catalogue."""
from __future__ import annotations

import pytest

from minionerec.data.formats import load_item_meta, load_sid_index, load_split
from minionerec.prep.make_scale_data import Args, make_scale_data, sid_shape


def test_sid_shape_grows_with_the_catalogue():
    assert sid_shape(320) == (3, 16)  # the demo's shape
    assert sid_shape(20_000) == (3, 64)  # make_demo_data's 3 x 16 could not tell 20k items apart
    assert sid_shape(100_000) == (3, 128)
    assert sid_shape(1_000_000) == (3, 256)
    assert sid_shape(10_000_000) == (4, 256)


def test_the_size_asked_for_deterministic_and_readable(tmp_path):
    counts = make_scale_data(Args(output_dir=str(tmp_path / "a"), num_items=600, train_rows=3000, seed=3))
    again = make_scale_data(Args(output_dir=str(tmp_path / "b"), num_items=600, train_rows=3000, seed=3))
    assert counts == again and abs(counts["train"] - 3000) <= 50  # to within one user's rows
    assert counts["valid"] == pytest.approx(counts["train"] / 8, abs=2) == counts["test"]
    for split in ("train", "valid", "test"):
        assert (tmp_path / "a" / split / "Scale.csv").read_bytes() == (tmp_path / "b" / split / "Scale.csv").read_bytes()
    index = load_sid_index(tmp_path / "a" / "index" / "Scale.index.json")
    meta = load_item_meta(tmp_path / "a" / "index" / "Scale.item.json")
    assert len(index) == len(meta) == 600 and len({tuple(s) for s in index.values()}) == 600  # unique SIDs
    train = load_split(tmp_path / "a" / "train" / "Scale.csv", index, meta)  # every SID and id checks out
    assert train["history_item_id"].map(len).max() <= 10
    popular = train["item_id"].value_counts()
    assert popular.iloc[0] > 5 * popular.median()  # a popularity skew, as real data has


def test_bad_flags_are_one_line(tmp_path):
    with pytest.raises(SystemExit, match="error: --mean_length must be in"):
        make_scale_data(Args(output_dir=str(tmp_path), mean_length=1))
    with pytest.raises(SystemExit, match="error: give both --sid_levels and --codebook_size"):
        make_scale_data(Args(output_dir=str(tmp_path), sid_levels=3))
    assert not any(tmp_path.iterdir())
