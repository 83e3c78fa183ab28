"""rq/add_items.py misuse: ids that are not flat unique strings, non-numeric embeddings, outputs that cannot be
written, and a failure while the outputs are renamed. Each is one `error: ...` line (or the original exception)
with every input and output exactly as before, so the same command can be rerun. No model: random embeddings,
a 2-level RQ-Kmeans index (~1 s)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minionerec.data.formats import load_sid_index
from rq import add_items, rqkmeans
from rq.common import save_embeddings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cat(tmp_path):
    rng = np.random.default_rng(0)
    emb = save_embeddings([f"i{k}" for k in range(40)], rng.normal(size=(40, 8)), tmp_path / "base.npy")
    rqkmeans.main(rqkmeans.Args(embedding_path=str(emb), output_path=str(tmp_path / "X.index.json"), levels=2,
                                codebook_size="4,16", niter=5))
    (tmp_path / "X.item.json").write_text(json.dumps({f"i{k}": {"title": f"item {k}"} for k in range(40)}))
    (tmp_path / "new.item.json").write_text(json.dumps({f"n{k}": {"title": f"new {k}"} for k in range(3)}))
    save_embeddings(["n0", "n1", "n2"], rng.normal(size=(3, 8)), tmp_path / "new.npy")
    return tmp_path


def args(cat: Path, **kw) -> add_items.Args:
    """In place: the index and the catalogue's item.json are replaced (the riskiest way to run it)."""
    return add_items.Args(**{**dict(sid_index_path=str(cat / "X.index.json"), embedding_path=str(cat / "new.npy"),
                                    new_items_path=str(cat / "new.item.json"), item_meta_path=str(cat / "X.item.json"),
                                    output_item_meta_path=str(cat / "X.item.json")), **kw})


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` (temporary and backup files included) with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def fails(cat: Path, message: str, **kw) -> None:
    before = snapshot(cat)
    with pytest.raises(SystemExit, match=message):
        add_items.main(args(cat, **kw))
    assert snapshot(cat) == before  # nothing written, nothing left behind


@pytest.mark.parametrize("ids, message", [
    (["n0", "n1", "n0"], "item id 'n0' appears more than once"),
    ([["400"], "n1", "n2"], r'item id \["400"\] is a list, not a string'),
    ([400, "n1", "n2"], "item id 400 is int, not a string"),
    ([{"id": "n0"}, "n1", "n2"], r'item id \{"id": "n0"\} is an object, not a string'),
    (["", "n1", "n2"], "item id '' is empty"),
    ([" n0", "n1", "n2"], "item id ' n0' is empty or has surrounding whitespace"),
])
def test_new_ids_are_flat_unique_strings(cat, ids, message):
    (cat / "new.ids.json").write_text(json.dumps(ids))
    fails(cat, f"new.ids.json: {message}")


def test_a_string_embedding_file_is_one_line(cat):
    np.save(cat / "new.npy", np.array([["0.1"] * 8] * 3))
    fails(cat, r"new.npy: embeddings have dtype <U3, expected numbers")
    np.save(cat / "new.npy", np.array([[object()] * 8] * 3, dtype=object), allow_pickle=True)
    fails(cat, r"new.npy: not a readable .npy array")


def test_an_item_named_twice_in_item_json_is_an_error(cat):
    (cat / "new.item.json").write_text('{"n0": {"title": "a"}, "n1": {"title": "b"}, "n2": {"title": "c"}, '
                                       '"n1": {"title": "b again"}}')
    fails(cat, "new.item.json: item 'n1' appears more than once")


def test_a_new_item_already_in_the_catalogue_item_json_is_an_error(cat):
    meta = json.loads((cat / "X.item.json").read_text())
    (cat / "X.item.json").write_text(json.dumps({**meta, "n1": {"title": "old n1"}}))
    fails(cat, "X.item.json: new item n1 is already there")


@pytest.mark.parametrize("change, message", [
    (dict(output_item_meta_path="a_dir"), "--output_item_meta_path .*a_dir: is a directory, not a file"),
    (dict(output_path="a_file/v2.index.json"), "--output_path .*a_file: exists and is not a directory"),
    (dict(output_path="v2.json", output_item_meta_path="v2.json"), "--output_item_meta_path .*v2.json is also "
                                                                     "--output_path"),
    (dict(output_item_meta_path="X.index.json"), "--output_item_meta_path .*X.index.json is also --output_path"),
    (dict(output_path="v2.json", output_item_meta_path="X.index.json"), "--output_item_meta_path .*X.index.json "
                                                                         "would overwrite --sid_index_path"),
    (dict(output_path="new.item.json"), "--output_path .*new.item.json would overwrite --new_items_path"),
    (dict(output_path="new.ids.json"), "--output_path .*new.ids.json would overwrite --embedding_path"),
    (dict(output_path="X.codebooks.npz"), "--output_path .*X.codebooks.npz would overwrite --codebooks_path"),
])
def test_every_output_is_checked_before_anything_is_read_or_written(cat, change, message):
    (cat / "a_dir").mkdir()
    (cat / "a_file").write_text("x")
    fails(cat, message, **{k: str(cat / v) for k, v in change.items()})


def test_a_failed_rename_puts_back_every_output_and_a_rerun_works(cat, monkeypatch):
    """The item.json is renamed, then renaming the index fails: the item.json is put back, byte for byte."""
    before = snapshot(cat)
    real = add_items._rename

    def failing(src, dst):
        if Path(dst).name == "X.index.json":
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(add_items, "_rename", failing)
    with pytest.raises(OSError, match="No space left"):
        add_items.main(args(cat))
    assert snapshot(cat) == before
    monkeypatch.setattr(add_items, "_rename", real)
    new = add_items.main(args(cat))  # the same command again
    assert sorted(new) == ["n0", "n1", "n2"] and len(load_sid_index(cat / "X.index.json")) == 43
    assert sorted(json.loads((cat / "X.item.json").read_text())) == sorted(load_sid_index(cat / "X.index.json"))
    assert not [p for p in os.listdir(cat) if p.startswith(".")]  # no temporary or backup file left


def test_cli_bad_ids_are_one_line_exit_2(cat):
    (cat / "new.ids.json").write_text(json.dumps([["400"], "n1", "n2"]))
    flags = [f"--{k}={v}" for k, v in vars(args(cat)).items() if v and not isinstance(v, (int, float))]
    proc = subprocess.run([sys.executable, "-m", "rq.add_items", *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and '["400"]' in proc.stderr
