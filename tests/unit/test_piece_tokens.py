"""PieceTokenizer (minionerec/data/piece_tokens.py) == the tokenizer itself, on every SFT task's texts."""
from __future__ import annotations

import copy

import pytest
from datasets import Dataset
from tokenizers import AddedToken

from minionerec.data.formats import load_item_meta, load_sid_index, load_split, sid_vocabulary
from minionerec.data.piece_tokens import PieceTokenizer
from minionerec.data.prompts import Prompts
from minionerec.data.sft_tasks import TASKS, task_rows, tokenize_dataset
from minionerec.model.loading import load_tokenizer, missing_sid_tokens


@pytest.fixture(scope="module")
def with_sids(tiny_model_dir, demo_data):
    tokenizer = copy.deepcopy(load_tokenizer(tiny_model_dir))
    index = load_sid_index(demo_data / "index" / "Demo.index.json")
    tokenizer.add_tokens(missing_sid_tokens(tokenizer, sid_vocabulary(index)))
    return tokenizer, index


@pytest.mark.parametrize("style", ["upstream", "minionerec"])
def test_every_tasks_texts_get_the_tokenizers_ids(with_sids, demo_data, style):
    tokenizer, index = with_sids
    meta = load_item_meta(demo_data / "index" / "Demo.item.json")
    df = load_split(demo_data / "train" / "Demo.csv")[:300]
    pieces = PieceTokenizer(tokenizer)
    for task in TASKS:
        rows = task_rows(task, df, index, meta, Prompts(style, "Demo"))
        texts = rows["prompt"] + rows["response"]
        assert pieces(texts) == tokenizer(texts, add_special_tokens=False)["input_ids"], task
    assert len(pieces.memo) < len(meta) + 100  # the repeated pieces (titles, template stretches), not the texts


def test_a_tokenizer_whose_added_tokens_take_spaces_is_detected_and_tokenised_as_itself(with_sids):
    tokenizer = copy.deepcopy(with_sids[0])
    tokenizer.add_tokens([AddedToken("<z_9>", lstrip=True)])  # absorbs the space before it: not the plain cut
    texts = ["hello <z_9> there", "a <z_9>"]
    reference = tokenizer(texts, add_special_tokens=False)["input_ids"]
    pieces = PieceTokenizer(tokenizer)
    assert pieces(texts) != reference and not pieces.matches_tokenizer(texts)
    ds = tokenize_dataset(Dataset.from_dict({"prompt": texts, "response": ["x", "y"]}), tokenizer, cutoff_len=64)
    assert [row[:len(r)] for row, r in zip(ds["input_ids"], reference)] == reference  # fell back to the tokenizer


def test_bracketed_text_that_is_no_added_token_stays_text(with_sids):
    tokenizer, _ = with_sids
    texts = ["<a_1><zz_404> and <not a token> <a_1>", "<zz_1>", "<a_1>", "x<<a_1>>y", ""]
    assert PieceTokenizer(tokenizer)(texts) == tokenizer(texts, add_special_tokens=False)["input_ids"]
