"""Each SFT task's prompt / response text and its label mask, on a 3-row CSV."""
import pytest

from conftest import three_row_split

from minionerec import prompts
from minionerec.modeling import load_tokenizer
from minionerec.sft_data import TASKS, build_text_dataset, sample_rows, task_rows, tokenize_dataset

INDEX = {"1": ["<a_1>", "<b_1>", "<c_0>"], "2": ["<a_1>", "<b_2>", "<c_0>"], "3": ["<a_2>", "<b_1>", "<c_0>"]}
META = {"1": {"title": "Red Beaker"}, "2": {"title": "Blue Flask"}, "3": {"title": "Solder Wire"}}


@pytest.fixture
def three_rows(tmp_path):
    return three_row_split(tmp_path / "three.csv", INDEX, META)


def test_sid_history_prompt_is_upstream_text(three_rows):
    rows = task_rows("sid_history", three_rows, INDEX, META)
    assert rows["prompt"][1] == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request. \n\n### Instruction:\n"
        "Can you predict the next possible item that the user may expect?\n\n### User Input: \n"
        "The user has interacted with items <a_1><b_1><c_0>, <a_1><b_2><c_0> in chronological order. "
        "Can you predict the next possible item that the user may expect?\n\n### Response:\n")
    assert rows["response"] == ["<a_1><b_2><c_0>\n", "<a_2><b_1><c_0>\n", "<a_1><b_1><c_0>\n"]


@pytest.mark.parametrize("task, prompt_part, response", [
    ("sid_history_title", "The user has sequentially interacted with items <a_1><b_1><c_0>, <a_1><b_2><c_0>.", "Solder Wire\n"),
    ("title_history_title", 'following items in chronological order: "Red Beaker", "Blue Flask". Can you recommend', "Solder Wire\n"),
    ("title_history_sid", 'following items in chronological order: "Red Beaker", "Blue Flask". Can you predict', "<a_2><b_1><c_0>\n"),
])
def test_sequence_tasks(three_rows, task, prompt_part, response):
    rows = task_rows(task, three_rows, INDEX, META, prompts.Prompts("minionerec"))
    assert prompt_part in rows["prompt"][1] and rows["prompt"][1].endswith("### Response:\n")
    assert rows["response"][1] == response


def test_item_alignment_covers_catalogue_both_ways(three_rows):
    rows = task_rows("item_alignment", three_rows, INDEX, META, prompts.Prompts("minionerec"))
    assert len(rows["prompt"]) == 2 * len(INDEX)
    assert rows["prompt"][0].endswith("Which item has the title: Red Beaker?\n\n### Response:\n")
    assert rows["response"][0] == "<a_1><b_1><c_0>\n"
    assert rows["prompt"][3].endswith('What is the title of item "<a_1><b_1><c_0>"?\n\n### Response:\n')
    assert rows["response"][3] == "Red Beaker\n"


def test_labels_mask_prompt_and_end_with_eos(three_rows, tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    ds = tokenize_dataset(build_text_dataset(list(TASKS), three_rows, INDEX, META), tokenizer, cutoff_len=512)
    assert len(ds) == 3 * 4 + 2 * 3  # 4 sequence tasks x 3 rows + alignment both ways x 3 items
    for row in ds:
        n_prompt = row["labels"].count(-100)
        answer = row["input_ids"][n_prompt:]
        assert row["labels"][:n_prompt] == [-100] * n_prompt and row["labels"][n_prompt:] == answer
        assert answer[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(row["input_ids"][:n_prompt]).endswith("### Response:\n")


def test_cutoff_keeps_the_answer(three_rows, tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    ds = tokenize_dataset(build_text_dataset(["sid_history"], three_rows), tokenizer, cutoff_len=8)
    for row in ds:
        assert len(row["input_ids"]) == 8 and row["input_ids"][-1] == tokenizer.eos_token_id
        assert tokenizer.decode(row["input_ids"][-5:-1]).startswith("<a_")


def test_sample_is_seeded_subset(three_rows):
    assert sample_rows(three_rows, 2, seed=1).equals(sample_rows(three_rows, 2, seed=1))
    assert len(sample_rows(three_rows, 2, seed=1)) == 2 and len(sample_rows(three_rows, -1, seed=1)) == 3


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown SFT task 'nope'; valid: sid_history"):
        task_rows("nope", None, None, None)
