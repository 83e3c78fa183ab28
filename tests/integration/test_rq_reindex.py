"""convert_dataset.py --reindex: same rows, SIDs replaced from a new index.json, info txt regenerated."""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import CATEGORY, ROOT
from convert_dataset import Args, main
from minionerec.data.formats import DataError, load_info, load_sid_index, load_split, sid_string
from minionerec.run.file_lock import LockHeld, locked
from minionerec.rq.index import write_index
from minionerec.rq.reindex import reindex


@pytest.fixture(scope="module")
def new_index(demo_data, tmp_path_factory):
    """A different collision-free index for the demo items: 2 levels, code = item position."""
    ids = list(load_sid_index(demo_data / "index" / f"{CATEGORY}.index.json"))
    codes = np.stack([np.arange(len(ids)) // 10, np.arange(len(ids)) % 10], axis=1)
    return write_index(ids, codes, tmp_path_factory.mktemp("new") / "new.index.json")


def test_reindex_keeps_rows_and_replaces_sids(demo_data, new_index, tmp_path):
    main(Args(reindex=True, data_dir=str(demo_data), category=CATEGORY, sid_index_path=str(new_index),
              output_dir=str(tmp_path)))
    index = load_sid_index(new_index)
    for split in ("train", "valid", "test"):
        old = load_split(demo_data / split / f"{CATEGORY}.csv")
        new = load_split(tmp_path / split / f"{CATEGORY}.csv", sid_index=index)
        kept = ["user_id", "history_item_title", "item_title", "history_item_id", "item_id"]
        assert new[kept].equals(old[kept])
        assert list(new["item_sid"]) == [sid_string(index[i]) for i in new["item_id"]]
        assert list(new["history_item_sid"]) == [[sid_string(index[i]) for i in h] for h in new["history_item_id"]]
        assert (new["item_sid"] != old["item_sid"]).any()
    info = load_info(tmp_path / "info" / f"{CATEGORY}.txt")
    assert [(sid, item) for sid, _, item in info] == [(sid_string(s), i) for i, s in index.items()]
    assert json.loads((tmp_path / "index" / f"{CATEGORY}.index.json").read_text()) == index


def test_reindex_in_place_via_cli(demo_data, new_index, tmp_path):
    data = shutil.copytree(demo_data, tmp_path / "data")
    out = subprocess.run([sys.executable, "convert_dataset.py", "--reindex", "true", "--data_dir", str(data),
                          "--category", CATEGORY, "--sid_index_path", str(new_index), "--output_dir", str(data)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert '"reindexed_rows"' in out.stdout
    load_split(data / "test" / f"{CATEGORY}.csv", sid_index=load_sid_index(new_index))


def test_item_missing_from_new_index_fails_before_writing(demo_data, new_index, tmp_path):
    index = load_sid_index(new_index)
    index.pop(load_split(demo_data / "train" / f"{CATEGORY}.csv")["item_id"][0])  # an item the rows use
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(index))
    with pytest.raises(DataError, match="is not in the new index"):
        reindex(demo_data, CATEGORY, partial, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit, match="--data_dir is required with --reindex"):
        main(Args(reindex=True, category=CATEGORY, sid_index_path=str(new_index), output_dir=str(tmp_path)))


def test_reindex_while_another_run_writes_the_dataset_is_refused_and_then_cleans_up(demo_data, new_index, tmp_path):
    """Another writer (here: minionerec.rq.add_items' lock on the dataset's index) holds one output: reindexing the dataset in
    place is refused before any file is written. The next run removes what a killed run left (`.NAME.XXXXXXXX.tmp`
    beside its outputs), and nothing else."""
    data = shutil.copytree(demo_data, tmp_path / "data")
    index_json = data / "index" / f"{CATEGORY}.index.json"
    stale = Path(tempfile.mkstemp(prefix=f".{CATEGORY}.csv.", suffix=".tmp", dir=data / "train")[1])
    kept = Path(tempfile.mkstemp(prefix=".notes.txt.", suffix=".tmp", dir=data / "train")[1])
    before = {p: p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}
    with locked(index_json):
        with pytest.raises(LockHeld, match=f"{index_json} is being written by pid"):
            reindex(data, CATEGORY, new_index, data)
        assert {p: p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file() and p.suffix != ".lock"} == before
    reindex(data, CATEGORY, new_index, data)
    assert not stale.exists() and kept.exists()
    assert load_sid_index(index_json) == load_sid_index(new_index)
    assert not [p for p in data.rglob(".*") if p != kept]  # no lock file or temporary left
