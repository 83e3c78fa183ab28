"""Golden prompt tests: on a 3-row CSV, every task's prompt and response under both styles equals a
literal string.

The upstream strings reproduce AkaliKong/MiniOneRec (read at commit 0606902; the texts are those of
81b4ba9, which the issue compared): each test names the upstream file, class and source line whose
output it spells out. The minionerec strings are this repo's earlier texts, unchanged.
"""
import random

import pytest

from conftest import three_row_split

from minionerec.data import rl_tasks
from minionerec.data.prompts import NUM_TITLE_HISTORY_INSTRUCTIONS, Prompts, category_phrase
from minionerec.data.sft_tasks import TASKS, item_alignment_pairs, task_rows

INDEX = {"1": ["<a_1>", "<b_1>", "<c_0>"], "2": ["<a_1>", "<b_2>", "<c_0>"], "3": ["<a_2>", "<b_1>", "<c_0>"]}
META = {"1": {"title": "Red Beaker", "description": "['A glass beaker.']"},
        "2": {"title": "Blue Flask", "description": ""},
        "3": {"title": "Solder Wire", "description": "Flux-core wire."}}
CATEGORY = "Industrial_and_Scientific"
SEED = 42  # upstream sft.py's default seed: SFTData draws its instruction per row from random.seed(seed)

# upstream data.py: every SFT dataset's `instruction` opens with this text (note the space before \n\n)
ALPACA = ("Below is an instruction that describes a task, paired with an input that provides further context. "
          "Write a response that appropriately completes the request. \n\n### Instruction:\n")
HISTORY = "<a_1><b_1><c_0>, <a_1><b_2><c_0>"  # row 2's SID history, joined by ", " as upstream does


@pytest.fixture(scope="module")
def three_rows(tmp_path_factory):
    return three_row_split(tmp_path_factory.mktemp("golden") / "three.csv", INDEX, META)


def sft(three_rows, style, task, row=1):
    rows = task_rows(task, three_rows, INDEX, META, Prompts(style, CATEGORY), seed=SEED)
    return rows["prompt"][row], rows["response"][row]


# ---------------------------------------------------------------- SFT, upstream style
def test_upstream_a_sid_history(three_rows):
    # data.py SidSFTDataset.get_history: "input": f"The user has interacted with items {history} in chronological
    # order. Can you predict the next possible item that the user may expect?", "output": target_item + "\n"
    assert sft(three_rows, "upstream", "sid_history") == (
        ALPACA + "Can you predict the next possible item that the user may expect?\n\n### User Input: \n"
        "The user has interacted with items <a_1><b_1><c_0>, <a_1><b_2><c_0> in chronological order. "
        "Can you predict the next possible item that the user may expect?\n\n### Response:\n",
        "<a_2><b_1><c_0>\n")


def test_upstream_b_item_alignment(three_rows):
    # data.py SidItemFeatDataset.generate_prompt: prompt = f'What is the title of item "{data_point["input"]}"?'
    # and f"Which item has the title: {data_point['input']}?"; rows: every sid2title, then every title2sid
    head = ALPACA + "Answer the question about item identification.\n\n### User Input: \n"
    assert sft(three_rows, "upstream", "item_alignment", row=0) == (
        head + 'What is the title of item "<a_1><b_1><c_0>"?\n\n### Response:\n', "Red Beaker\n")
    assert sft(three_rows, "upstream", "item_alignment", row=3) == (
        head + "Which item has the title: Red Beaker?\n\n### Response:\n", "<a_1><b_1><c_0>\n")


def test_upstream_c_sid_history_title(three_rows):
    # data.py FusionSeqRecDataset.generate_prompt_title: f"The user has sequentially interacted with items
    # {history}. Can you recommend the next item for him? Tell me the title of the item"
    assert sft(three_rows, "upstream", "sid_history_title") == (
        ALPACA + "Can you recommend the next item for the user based on their interaction history?\n\n"
        "### User Input: \nThe user has sequentially interacted with items <a_1><b_1><c_0>, <a_1><b_2><c_0>. "
        "Can you recommend the next item for him? Tell me the title of the item\n\n### Response:\n",
        "Solder Wire\n")


def test_upstream_d_title_history_title(three_rows):
    # data.py SFTData.pre: f"...### Instruction:\n{self.instructs[random.randint(0, len(self.instructs)-1)]}\n \n"
    # SFTData.get_history: "input": f"The user has palyed the following {self.category}s before: {history}",
    # titles joined by ",\t", target_item = "\"" + target_item + "\"\n"; category = sft.py category_dict phrase.
    # Row 2 draws instruction 1 (random.seed(42), second randint(0, 10)).
    assert sft(three_rows, "upstream", "title_history_title") == (
        ALPACA + "Considering the industrial and scientific items that has recently captured the user's interest, "
        "kindly create a compilation of other industrial and scientific items that the user might have played prior "
        "to this.\n \n### User Input: \nThe user has palyed the following industrial and scientific itemss before: "
        '"Red Beaker",\t"Blue Flask"\n\n### Response:\n',
        '"Solder Wire"\n')


def test_upstream_d_draws_instructions_like_upstream(three_rows):
    # data.py BaseDataset.__init__: random.seed(seed); SFTData.pre: one random.randint(0, 10) per row, in order
    draws = random.Random(SEED)
    expected = [Prompts("upstream", CATEGORY).title_history_title(h, draws.randint(0, 10))
                for h in three_rows["history_item_title"]]
    assert task_rows("title_history_title", three_rows, INDEX, META, Prompts("upstream", CATEGORY),
                     seed=SEED)["prompt"] == expected
    texts = {Prompts("upstream", CATEGORY).title_history_title(["x"], v) for v in range(NUM_TITLE_HISTORY_INSTRUCTIONS)}
    assert len(texts) == 11


def test_upstream_e_title_history_sid(three_rows):
    # data.py TitleHistory2SidSFTDataset.get_history: "input": f"The user has interacted with the following
    # {self.category} items in chronological order: {history_titles}. Can you predict the next item the user may
    # expect?"; its pre(): "Based on the user's historical interaction with item titles, predict the semantic ID..."
    assert sft(three_rows, "upstream", "title_history_sid") == (
        ALPACA + "Based on the user's historical interaction with item titles, predict the semantic ID of the next "
        "item they may expect.\n\n### User Input: \nThe user has interacted with the following industrial and "
        'scientific items items in chronological order: "Red Beaker", "Blue Flask". Can you predict the next item '
        "the user may expect?\n\n### Response:\n",
        "<a_2><b_1><c_0>\n")


# ---------------------------------------------------------------- SFT, minionerec style (this repo's texts)
MINIONEREC_SFT = {
    "sid_history": (
        ALPACA + "Can you predict the next possible item that the user may expect?\n\n### User Input: \n"
        f"The user has interacted with items {HISTORY} in chronological order. "
        "Can you predict the next possible item that the user may expect?\n\n### Response:\n", "<a_2><b_1><c_0>\n"),
    "item_alignment": (
        ALPACA + "Answer the question about item identification.\n\n### User Input: \n"
        "Which item has the title: Blue Flask?\n\n### Response:\n", "<a_1><b_2><c_0>\n"),
    "sid_history_title": (
        ALPACA + "Can you recommend the next item for the user based on their interaction history?\n\n"
        f"### User Input: \nThe user has sequentially interacted with items {HISTORY}. "
        "Can you recommend the next item for him? Tell me the title of the item\n\n### Response:\n", "Solder Wire\n"),
    "title_history_title": (
        ALPACA + "Can you recommend the next item for the user based on their interaction history?\n\n"
        '### User Input: \nThe user has interacted with the following items in chronological order: "Red Beaker", '
        '"Blue Flask". Can you recommend the next item for him? Tell me the title of the item\n\n### Response:\n',
        "Solder Wire\n"),
    "title_history_sid": (
        ALPACA + "Can you predict the next possible item that the user may expect?\n\n### User Input: \n"
        'The user has interacted with the following items in chronological order: "Red Beaker", "Blue Flask". '
        "Can you predict the next possible item that the user may expect?\n\n### Response:\n", "<a_2><b_1><c_0>\n"),
}


@pytest.mark.parametrize("task", TASKS)
def test_minionerec_sft(three_rows, task):
    assert sft(three_rows, "minionerec", task) == MINIONEREC_SFT[task]


def test_minionerec_item_alignment_order(three_rows):
    rows = task_rows("item_alignment", three_rows, INDEX, META, Prompts("minionerec"))
    assert rows["prompt"][3].endswith('What is the title of item "<a_1><b_1><c_0>"?\n\n### Response:\n')
    assert rows["response"][:3] == ["<a_1><b_1><c_0>\n", "<a_1><b_2><c_0>\n", "<a_2><b_1><c_0>\n"]


def test_upstream_alignment_keeps_the_last_item_per_sid_and_title():
    # data.py SidItemFeatDataset.__init__: self.sid2title[combined_sid] = title; self.title2sid[title] = combined_sid
    index = {"1": ["<a_1>"], "2": ["<a_1>"], "3": ["<a_2>"], "4": ["<a_3>"]}  # items 1, 2 share a SID
    meta = {"1": {"title": "A"}, "2": {"title": "B"}, "3": {"title": "B"}, "4": {"title": "C"}}  # 2, 3 share a title
    title2sid, sid2title = item_alignment_pairs(index, meta, upstream=True)
    assert sid2title == [("<a_1>", "B"), ("<a_2>", "B"), ("<a_3>", "C")]
    assert title2sid == [("A", "<a_1>"), ("B", "<a_2>"), ("C", "<a_3>")]
    assert len(item_alignment_pairs(index, meta, upstream=False)[0]) == 4  # minionerec: every item


# ---------------------------------------------------------------- evaluation prompt and result rows
def test_upstream_eval_prompt():
    # data.py EvalSidDataset.get_history: f"Can you predict the next possible item the user may expect, given the
    # following chronological interaction history: {history}"; its pre() instruction is task (a)'s
    p = Prompts("upstream")
    assert p.eval_input(HISTORY.split(", ")) == (
        "Can you predict the next possible item the user may expect, given the following chronological interaction "
        "history: <a_1><b_1><c_0>, <a_1><b_2><c_0>")
    assert p.eval_prompt(HISTORY.split(", ")) == (
        ALPACA + "Can you predict the next possible item that the user may expect?\n\n### User Input: \n"
        "Can you predict the next possible item the user may expect, given the following chronological interaction "
        "history: <a_1><b_1><c_0>, <a_1><b_2><c_0>\n\n### Response:\n")


def test_minionerec_eval_prompt_is_task_a(three_rows):
    p = Prompts("minionerec")
    assert p.eval_prompt(HISTORY.split(", ")) == MINIONEREC_SFT["sid_history"][0]
    assert p.eval_input(HISTORY.split(", ")) == (
        f"The user has interacted with items {HISTORY} in chronological order. "
        "Can you predict the next possible item that the user may expect?")


# ---------------------------------------------------------------- RL prompts
def rl(three_rows, style, task, row):
    rows = rl_tasks.task_rows(task, three_rows, INDEX, META, Prompts(style, CATEGORY))
    return rows["prompt"][row], rows["target"][row]


def test_upstream_rl_sid_history(three_rows):
    # data.py SidDataset.get_history (input as SidSFTDataset's) + BaseDataset.generate_prompt:
    # f"""### User Input: \n{data_point["input"]}\n\n### Response:\n{data_point["output"]}""" with output ''
    assert rl(three_rows, "upstream", "sid_history", 1) == (
        "### User Input: \nThe user has interacted with items <a_1><b_1><c_0>, <a_1><b_2><c_0> in chronological "
        "order. Can you predict the next possible item that the user may expect?\n\n### Response:\n",
        "<a_2><b_1><c_0>")


def test_upstream_rl_title2sid_and_description2sid(three_rows):
    # data.py RLTitle2SidDataset.generate_prompt: f"Which item has the title: {data_point['input']}?" and
    # f"An item can be described as follows: \"{data_point['input']}\". Which item is it describing?";
    # a description stored as "['...']" is eval'd to its first entry
    assert rl(three_rows, "upstream", "title2sid", 1) == (
        "### User Input: \nWhich item has the title: Blue Flask?\n\n### Response:\n", "<a_1><b_2><c_0>")
    rows = rl_tasks.task_rows("description2sid", three_rows, INDEX, META, Prompts("upstream"))
    assert list(zip(rows["prompt"], rows["target"])) == [  # item 2's empty description: no row (docs/pipeline.md)
        ('### User Input: \nAn item can be described as follows: "A glass beaker.". Which item is it describing?'
         "\n\n### Response:\n", "<a_1><b_1><c_0>"),
        ('### User Input: \nAn item can be described as follows: "Flux-core wire.". Which item is it describing?'
         "\n\n### Response:\n", "<a_2><b_1><c_0>")]


def test_upstream_rl_title_history(three_rows):
    # data.py RLSeqTitle2SidDataset.generate_prompt: f"Given the title sequence of user historical interactive
    # items: {inter_titles}, can you recommend a suitable next item for the user?", titles quoted, joined by ", "
    assert rl(three_rows, "upstream", "title_history", 1) == (
        '### User Input: \nGiven the title sequence of user historical interactive items: "Red Beaker", '
        '"Blue Flask", can you recommend a suitable next item for the user?\n\n### Response:\n', "<a_2><b_1><c_0>")


@pytest.mark.parametrize("task, sft_task", [("sid_history", "sid_history"), ("title_history", "title_history_sid")])
def test_minionerec_rl_reuses_sft_prompts(three_rows, task, sft_task):
    assert rl(three_rows, "minionerec", task, 1) == (MINIONEREC_SFT[sft_task][0], "<a_2><b_1><c_0>")


def test_minionerec_rl_title2sid(three_rows):
    assert rl(three_rows, "minionerec", "title2sid", 1) == (
        ALPACA + "Answer the question about item identification.\n\n### User Input: \n"
        "Which item has the title: Blue Flask?\n\n### Response:\n", "<a_1><b_2><c_0>")


def test_in_training_eval_uses_the_rl_prompt(three_rows):
    # rl.py: eval_data = SidDataset(eval_file, ...): the in-training evaluation scores upstream's RL prompt
    ds = rl_tasks.build_eval_dataset(three_rows, Prompts("upstream"))
    assert ds[1]["prompt"] == rl(three_rows, "upstream", "sid_history", 1)[0]
    assert rl_tasks.build_eval_dataset(three_rows, Prompts("minionerec"))[1]["prompt"] == MINIONEREC_SFT["sid_history"][0]


# ---------------------------------------------------------------- category phrase and bad style
def test_category_phrase():
    # sft.py / rl.py / evaluate.py category_dict; other names: their own words (upstream would use the raw name)
    assert category_phrase("Industrial_and_Scientific") == "industrial and scientific items"
    assert category_phrase("Office_Products") == "office products"
    assert category_phrase("Video_Games") == "video games"


def test_unknown_style_is_an_error():
    with pytest.raises(ValueError, match="--prompt_style must be one of upstream, minionerec, got 'alpaca'"):
        Prompts("alpaca")


def test_scripts_reject_an_unknown_style_before_loading(tmp_path):
    import rl
    import sft

    (tmp_path / "config.json").write_text("{}")  # a model directory as far as the earlier checks go
    with pytest.raises(SystemExit, match="--prompt_style must be one of upstream, minionerec, got 'x'"):
        sft.check_args(sft.Args(base_model=str(tmp_path), train_file="t.csv", sid_index_path="i.json",
                                 item_meta_path="m.json", prompt_style="x"), list(TASKS))
    with pytest.raises(SystemExit, match="--prompt_style must be one of upstream, minionerec, got 'x'"):
        rl.check_args(rl.Args(model_path=str(tmp_path), train_file="t.csv", sid_index_path="i.json",
                              prompt_style="x"), world_size=1)
