"""minionerec/rq/add_items.py misuse: ids that are not flat unique strings, non-numeric embeddings, damaged codebooks or encoder,
outputs that cannot be written, a failure while the outputs are renamed, and two runs writing one index at once.
Each is one `error: ...` line (or the original exception) with every input and output exactly as before, so the same
command can be rerun. Random embeddings, a 2-level RQ-Kmeans index (~1 s); only the stale-temporaries test loads a
(tiny) model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from minionerec.data.formats import load_sid_index
from minionerec.rq import add_items, rqkmeans
from minionerec.rq.common import save_embeddings

ROOT = Path(__file__).resolve().parents[2]
HOLD = "import sys; from minionerec.run.file_lock import locked\nwith locked(*sys.argv[1:]):\n" \
       "    print('held', flush=True); sys.stdin.read()"


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


def command(cat: Path, **kw) -> list[str]:
    """`python -m minionerec.rq.add_items` with args(cat, **kw) as flags."""
    return [sys.executable, "-m", "minionerec.rq.add_items",
            *[f"--{k}={v}" for k, v in vars(args(cat, **kw)).items() if v and not isinstance(v, (int, float))]]


def holding(*targets) -> subprocess.Popen:
    """Another live process holding the write locks of `targets` (minionerec.run.file_lock) until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, *map(str, targets)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


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
    proc = subprocess.run(command(cat), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and '["400"]' in proc.stderr


@pytest.mark.parametrize("damage, message", [
    ("truncated", r"X.codebooks.npz: not a codebooks file a minionerec/rq/ quantiser wrote \(BadZipFile"),
    ("junk", r"X.codebooks.npz: not a codebooks file a minionerec/rq/ quantiser wrote \(ValueError"),
    ("no collision mode", r"X.codebooks.npz: not a codebooks file a minionerec/rq/ quantiser wrote \(KeyError"),
    ("no levels", r"X.codebooks.npz: not a codebooks file a minionerec/rq/ quantiser wrote \(levels \[\]"),
])
def test_a_damaged_codebooks_file_is_one_line(cat, damage, message):
    path = cat / "X.codebooks.npz"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "junk":
        path.write_bytes(b"\x80\x04not a zip and not an array")
    else:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files if k != ("collision" if damage == "no collision mode" else "")}
        np.savez(path, **{k: v for k, v in arrays.items() if damage != "no levels" or k == "collision"})
    fails(cat, message)


def test_a_damaged_or_mismatched_encoder_is_one_line(cat):
    import torch

    from minionerec.rq.rqvae import RQVAE, save_encoder

    (cat / "X.encoder.pt").write_bytes(b"PK\x03\x04 half a torch file")
    fails(cat, r"X.encoder.pt: not an encoder minionerec.rq.rqvae / minionerec.rq.rqkmeans_plus wrote \(")
    torch.save({"weights": torch.zeros(2)}, cat / "X.encoder.pt")
    fails(cat, r"X.encoder.pt: not an encoder minionerec.rq.rqvae / minionerec.rq.rqkmeans_plus wrote \(no 'config' entry\)")
    save_encoder(cat / "X.index.json", RQVAE(5, [4], 8, [4, 16]))  # takes 5-d embeddings, the new ones are 8-d
    fails(cat, r"new embeddings have dimension 8, the encoder .*X.encoder.pt takes 5")


def test_a_run_while_another_process_writes_the_index_is_refused_in_one_line(cat):
    """The lost update (two in-place runs both start from the old index, the last rename drops the other's items)
    cannot happen: while one process holds the index's lock, a second run is one line naming it, exit 2."""
    proc = holding(cat / "X.index.json")
    try:
        before = snapshot(cat)
        refused = subprocess.run(command(cat), cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr[-2000:]
        assert refused.stderr.startswith(f"error: {cat / 'X.index.json'} is being written by pid {proc.pid} on ")
        assert " since 20" in refused.stderr and f"(-c {cat / 'X.index.json'})" in refused.stderr
        assert snapshot(cat) == before
    finally:
        proc.communicate("")
    add_items.main(args(cat))  # the holder is gone: the same command works
    assert len(load_sid_index(cat / "X.index.json")) == 43


def test_two_runs_at_once_keep_both_runs_items_or_refuse_one(cat):
    """Two real `python -m minionerec.rq.add_items` processes extending one index (and item.json) in place, started together:
    each either adds its items or is refused in one line; no run that exited 0 loses its items."""
    save_embeddings(["m0", "m1", "m2"], np.random.default_rng(1).normal(size=(3, 8)), cat / "more.npy")
    (cat / "more.item.json").write_text(json.dumps({f"m{k}": {"title": f"more {k}"} for k in range(3)}))
    runs = {"n": command(cat), "m": command(cat, embedding_path=str(cat / "more.npy"),
                                             new_items_path=str(cat / "more.item.json"))}
    procs = {k: subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, c in runs.items()}
    results = {k: (p.wait(timeout=120), p.communicate()[1]) for k, p in procs.items()}
    index, meta = load_sid_index(cat / "X.index.json"), json.loads((cat / "X.item.json").read_text())
    added = [k for k, (code, _) in results.items() if code == 0]
    for prefix, (code, err) in results.items():
        mine = {f"{prefix}{k}" for k in range(3)}
        if code == 0:
            assert mine <= index.keys() and mine <= meta.keys()
        else:
            assert code == 2 and len(err.strip().splitlines()) == 1 and "is being written by pid" in err, err[-2000:]
            assert not mine & index.keys()
    assert added and len(index) == 40 + 3 * len(added) and sorted(meta) == sorted(index)
    assert not [p for p in os.listdir(cat) if p.startswith(".")]


def test_a_killed_runs_temporaries_are_removed_by_the_next_run(cat, tiny_model_dir):
    """A run killed while staging (its first temporary is the model directory, then item.json, the index and the
    backups) leaves them beside the outputs, named as Staged names them; the rerun removes them, and only them."""
    leftovers = [Path(tempfile.mkdtemp(prefix=".model.", suffix=".tmp", dir=cat)),  # the tester's empty folder
                 Path(tempfile.mkstemp(prefix=".X.item.json.", suffix=".tmp", dir=cat)[1]),
                 Path(tempfile.mkstemp(prefix=".X.index.json.", suffix=".tmp", dir=cat)[1]),
                 Path(tempfile.mkstemp(prefix=".X.index.json.", suffix=".bak", dir=cat)[1])]
    other = Path(tempfile.mkstemp(prefix=".base.npy.", suffix=".tmp", dir=cat)[1])  # no output of this run: kept
    add_items.main(args(cat, base_model=str(tiny_model_dir), output_model=str(cat / "model")))
    assert not any(p.exists() for p in leftovers) and other.exists()
    assert [p for p in os.listdir(cat) if p.startswith(".")] == [other.name]
    assert (cat / "model" / "config.json").is_file() and len(load_sid_index(cat / "X.index.json")) == 43
