"""sft.py's prepared rows (minionerec/data/sft_cache.py): built once, read by later runs and by the other processes,
rebuilt when any input changes, and the same rows as building them in memory."""
from __future__ import annotations

import multiprocessing
import shutil
import time

from datasets import Dataset

import sft
from conftest import sft_args, split_path
from minionerec.data import sft_cache
from minionerec.data.sft_tasks import TASKS
from minionerec.model.loading import load_tokenizer


def load(demo_data, tiny_model_dir, tmp_path, cache: str, **overrides):
    args = sft_args(demo_data, tiny_model_dir, tmp_path / "out", data_cache_dir=cache, sample=-1, **overrides)
    return sft.load_data(args, list(TASKS), load_tokenizer(tiny_model_dir))


def rows(dataset):
    return list(zip(dataset["input_ids"], dataset["labels"]))


def test_a_second_run_reads_what_the_first_built_and_both_equal_an_uncached_build(demo_data, tiny_model_dir,
                                                                                    tmp_path, capsys):
    cache = str(tmp_path / "cache")
    first = load(demo_data, tiny_model_dir, tmp_path, cache)
    second = load(demo_data, tiny_model_dir, tmp_path, cache)
    memory = load(demo_data, tiny_model_dir, tmp_path, "")
    out = capsys.readouterr().out
    assert "rows built into" in out and "rows read from" in out and "built in memory" in out
    assert rows(first.train) == rows(second.train) == rows(memory.train)
    assert rows(first.eval) == rows(memory.eval)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # one entry (its lock file is gone)


def test_one_changed_input_row_builds_again(demo_data, tiny_model_dir, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    before = load(demo_data, tiny_model_dir, tmp_path, cache)
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    train = split_path(data, "train")
    lines = train.read_text().splitlines(keepends=True)
    head, sep, rest = lines[1].rpartition(",")  # the first data row's next-item SID, for another valid SID
    other = next(o for o in (line.rstrip("\n").rpartition(",")[2] for line in lines[2:]) if o != rest.strip())
    train.write_text(lines[0] + head + sep + other + "\n" + "".join(lines[2:]))
    capsys.readouterr()
    after = load(data, tiny_model_dir, tmp_path, cache)
    assert "rows built into" in capsys.readouterr().out  # not read from the first entry
    assert rows(after.train) != rows(before.train)
    assert len(list((tmp_path / "cache").iterdir())) == 2


def build_slowly(root, marker):
    """One process of test_processes_at_once_build_once: a build that takes a while and leaves a marker."""
    def build(scratch):
        with open(marker, "a") as f:
            f.write("built\n")
        time.sleep(1.0)
        return Dataset.from_dict({"input_ids": [[1, 2]], "labels": [[-100, 2]]}), None

    prepared = sft_cache.prepare(root, {"inputs": "same"}, build)
    assert prepared.train["input_ids"] == [[1, 2]]


def test_processes_at_once_build_once(tmp_path):
    context = multiprocessing.get_context("fork")  # the children start with this process's imports
    marker = tmp_path / "builds.txt"
    processes = [context.Process(target=build_slowly, args=(tmp_path / "cache", marker)) for _ in range(3)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    assert marker.read_text() == "built\n"


def test_a_failed_build_leaves_no_entry(tmp_path):
    def failing(scratch):
        raise SystemExit("error: --cutoff_len 4 cannot hold the longest answer")

    try:
        sft_cache.prepare(tmp_path / "cache", {"inputs": 1}, failing)
    except SystemExit:
        pass
    assert list((tmp_path / "cache").iterdir()) == []  # no entry, no temporary, no lock file
