"""Each SFT task's prompt / response text and its label mask, on a 3-row CSV."""
import pytest

from conftest import three_row_split

from minionerec.data import prompts
from minionerec.model.loading import load_tokenizer
from minionerec.data.sft_tasks import TASKS, build_text_dataset, sample_rows, task_rows, tokenize_dataset

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


# --- what the model sees, pinned: a change to prompts, tokenizer training, SID tokens, truncation or label masking
# changes these ids and fails here, before it silently moves every quality figure (issue 20)
DEMO_ROW0_IDS = [378, 336, 301, 368, 271, 375, 266, 374, 12, 373, 310, 301, 367, 271, 382, 383, 381, 14, 376, 266,
                 358, 271, 384, 377, 265, 360, 14, 364, 199, 275, 372, 26, 199, 329, 318, 443, 265, 324, 449, 280,
                 271, 265, 288, 409, 442, 31, 199, 199, 275, 332, 330, 26, 364, 390, 288, 337, 418, 310, 408, 221,
                 608, 618, 643, 270, 426, 433, 14, 415, 318, 443, 265, 324, 449, 280, 271, 265, 288, 409, 442, 31,
                 199, 199, 275, 331, 26, 199, 615, 622, 640, 199, 0]


def test_demo_row_token_ids_and_labels_are_pinned(demo_data, demo_category, tiny_model_dir):
    from minionerec.data.formats import load_item_meta, load_sid_index, load_split

    index = load_sid_index(demo_data / "index" / f"{demo_category}.index.json")
    meta = load_item_meta(demo_data / "index" / f"{demo_category}.item.json")
    df = load_split(demo_data / "train" / f"{demo_category}.csv", index, meta).head(1)
    row = tokenize_dataset(build_text_dataset(["sid_history"], df, prompts=prompts.Prompts("upstream", demo_category)),
                           load_tokenizer(tiny_model_dir), cutoff_len=512)[0]
    assert row["input_ids"] == DEMO_ROW0_IDS
    assert row["labels"] == [-100] * 86 + [615, 622, 640, 199, 0]  # <a_..><b_..><c_..> "\n" EOS


OFFICE_ROWS_IDS = [
    [481, 337, 275, 465, 303, 484, 260, 456, 12, 477, 307, 275, 474, 303, 431, 467, 483, 14, 459, 260, 461, 303,
        479, 480, 273, 463, 14, 482, 199, 328, 473, 26, 199, 579, 306, 652, 273, 427, 660, 342, 303, 273, 356, 574,
        635, 31, 199, 199, 328, 438, 439, 26, 221, 199, 433, 356, 400, 598, 307, 549, 221, 4087, 4313, 4477, 278,
        610, 612, 14, 544, 306, 652, 273, 427, 660, 342, 303, 273, 356, 574, 635, 31, 199, 199, 328, 440, 26, 199,
        4087, 4181, 4349, 199, 0],
    [481, 337, 275, 465, 303, 484, 260, 456, 12, 477, 307, 275, 474, 303, 431, 467, 483, 14, 459, 260, 461, 303,
        479, 480, 273, 463, 14, 482, 199, 328, 473, 26, 199, 579, 306, 652, 273, 427, 660, 342, 303, 273, 356, 574,
        635, 31, 199, 199, 328, 438, 439, 26, 221, 199, 433, 356, 400, 598, 307, 549, 221, 4087, 4313, 4477, 12, 221,
        4087, 4181, 4349, 278, 610, 612, 14, 544, 306, 652, 273, 427, 660, 342, 303, 273, 356, 574, 635, 31, 199,
        199, 328, 440, 26, 199, 4087, 4205, 4374, 199, 0],
]
OFFICE_ANSWERS = [[4087, 4181, 4349, 199, 0], [4087, 4205, 4374, 199, 0]]


def test_office_rows_token_ids_and_labels_are_pinned(tmp_path):
    """The cpu quality preset's view of the first two Office train rows: its tokenizer (BPE 4000 on the catalogue and
    the prompt templates, one token per SID code), the minionerec prompt style, SID history -> next SID."""
    from pathlib import Path

    from minionerec.data.formats import find_split, load_item_meta, load_sid_index, load_split, sid_vocabulary
    from minionerec.model.tiny import build_tokenizer

    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "Amazon"
    if not data.is_dir():
        pytest.skip(f"real data not found at {data}")
    category = "Office_Products"
    index = load_sid_index(data / "index" / f"{category}.index.json")
    meta = load_item_meta(data / "index" / f"{category}.item.json")
    build_tokenizer(meta, sid_vocabulary(index), vocab_size=4000).save_pretrained(tmp_path)
    tokenizer = load_tokenizer(tmp_path)  # as sft.py reads it from --base_model: the reload is what the model sees
    df = load_split(find_split(data, "train", category), index, meta).head(2)
    rows = tokenize_dataset(build_text_dataset(["sid_history"], df, prompts=prompts.Prompts("minionerec", category)),
                            tokenizer, cutoff_len=512)
    assert len(tokenizer) == 4600
    for row, ids, answer in zip(rows, OFFICE_ROWS_IDS, OFFICE_ANSWERS):
        assert row["input_ids"] == ids
        assert row["labels"] == [-100] * (len(ids) - len(answer)) + answer


@pytest.mark.parametrize("style, sample", [("upstream", -1), ("minionerec", 40)])
def test_built_task_by_task_equals_tokenising_the_whole_text_dataset(demo_data, tiny_model_dir, tmp_path, style,
                                                                     sample):
    """build_token_datasets (one task at a time, written to disk, piece-memoised tokens) against the text dataset of
    every task tokenised row by row with the tokenizer itself: same rows, same order."""
    from minionerec.data.formats import load_item_meta, load_sid_index, load_split
    from minionerec.data.sft_tasks import build_token_datasets

    tokenizer = load_tokenizer(tiny_model_dir)
    index = load_sid_index(demo_data / "index" / "Demo.index.json")
    meta = load_item_meta(demo_data / "index" / "Demo.item.json")
    df = load_split(demo_data / "train" / "Demo.csv")
    style_prompts = prompts.Prompts(style, "Demo")
    answers, tails = set(), set()
    built = build_token_datasets(list(TASKS), df, index, meta, 7, style_prompts, sample, tokenizer, 64,
                                 str(tmp_path / "scratch"), answers, tails)
    texts = build_text_dataset(list(TASKS), df, index, meta, 7, style_prompts, sample)
    eos = tokenizer.eos_token_id
    expected = []
    for prompt, response in zip(texts["prompt"], texts["response"]):
        p, a = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (prompt, response))
        expected.append(((p + a + [eos])[-64:], ([-100] * len(p) + a + [eos])[-64:]))
    assert list(zip(built["input_ids"], built["labels"])) == expected
    assert answers == set(texts["response"]) and all(t.endswith("### Response:\n") for t in tails)
