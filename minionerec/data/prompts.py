"""Prompt texts for every task, in two styles chosen by `--prompt_style`.

`upstream` (the default) reproduces AkaliKong/MiniOneRec's data.py byte for byte, so that numbers
are comparable with the paper's and checkpoints are interchangeable with upstream ones:
SFT tasks (a)-(e) are its SidSFTDataset, SidItemFeatDataset, FusionSeqRecDataset, SFTData and
TitleHistory2SidSFTDataset; evaluation uses EvalSidDataset's input; RL uses SidDataset,
RLTitle2SidDataset (title and description -> SID) and RLSeqTitle2SidDataset, which have no Alpaca
preamble. `minionerec` is this repo's earlier text: one wording per task, the SFT task (a) prompt
for evaluation and RL as well. docs/pipeline.md "Prompt styles" lists every deviation from upstream.

A prompt ends with "### Response:\\n"; the response is the answer plus "\\n", then the EOS token.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STYLES = ("upstream", "minionerec")

PREAMBLE = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request. \n\n"
)
NEXT_ITEM_INSTRUCTION = "Can you predict the next possible item that the user may expect?"
ITEM_ID_INSTRUCTION = "Answer the question about item identification."
NEXT_TITLE_INSTRUCTION = "Can you recommend the next item for the user based on their interaction history?"
TITLE_HISTORY_SID_INSTRUCTION = ("Based on the user's historical interaction with item titles, predict the semantic ID "
                                 "of the next item they may expect.")

# upstream sft.py / rl.py / evaluate.py `category_dict`
CATEGORY_PHRASES = {
    "Industrial_and_Scientific": "industrial and scientific items",
    "Office_Products": "office products",
    "Toys_and_Games": "toys and games",
    "Sports": "sports and outdoors",
    "Books": "books",
}

# upstream data.py SFTData.instructs: written for video games, kept verbatim (typos included) because the
# upstream style reproduces what upstream checkpoints were trained on; `minionerec` has a neutral text.
_GAMES_INSTRUCTIONS = (
    "Given a list of {c} the user recetenly enjoy, please write a new {c} that the user may bought",
    "Considering the {c} that has recently captured the user's interest, kindly create a compilation of other {c} "
    "that the user might have played prior to this.",
    "Based on the user's current gaming preference, please draft a list of potential {c} they may have experienced "
    "beforehand.",
    "Reflecting on the {c} the user has taken pleasure in recently, we request that you formulate a list of {c} that "
    "may have preceded the user's current enjoyment.",
    "In light of the recent gaming enjoyment expressed by the user, please assemble a list of {c} that could "
    "potentially include past titles the user has engaged with.",
    "Taking into account the {c} that has lately provided enjoyment to the user, please put together an inventory "
    "of {c} the user might have explored previously.",
    "Given the user's newfound enjoyment of a particular {c}, would you kindly generate a roster of other {c} that "
    "might resonate with their past gaming experiences?",
    "In response to the user's recent fondness for a specific {c}, we seek your assistance in listing possible {c} "
    "the user may have delighted in earlier.",
    "With respect to the {c} currently enjoyed by the user, please compile a suggestive list of {c} they may have "
    "played in the past.",
    "Bearing in mind the {c} that the user has recently been enthralled by, please construct a catalog of other {c} "
    "that the user potentially partook in beforehand.",
    "In relation to the user's recent entertainment with a given {c}, it would be appreciated if you could curate a "
    "list of {c} that might form part of the user's previous gaming history.",
)
NUM_TITLE_HISTORY_INSTRUCTIONS = len(_GAMES_INSTRUCTIONS)


def category_phrase(category: str) -> str:
    """Upstream's phrase for its five categories; any other name is spelt out ("Video_Games" -> "video games")."""
    return CATEGORY_PHRASES.get(category, category.replace("_", " ").strip().lower())


def run_category(category: str, sid_index_path: str = "") -> str:
    """--category, or else the dataset name that upstream's file layout puts before ".index.json"."""
    return category or Path(sid_index_path).name.split(".")[0]


def check_style(style: str) -> str:
    if style not in STYLES:
        raise ValueError(f"--prompt_style must be one of {', '.join(STYLES)}, got {style!r}")
    return style


def alpaca_prompt(instruction: str, user_input: str) -> str:
    return f"{PREAMBLE}### Instruction:\n{instruction}\n\n### User Input: \n{user_input}\n\n### Response:\n"


def user_input_prompt(user_input: str) -> str:
    """Upstream's RL layout (BaseDataset.generate_prompt): no preamble, no instruction."""
    return f"### User Input: \n{user_input}\n\n### Response:\n"


def response_text(answer: str) -> str:
    """What the model must write after the prompt (EOS is appended as a token id)."""
    return f"{answer}\n"


_TAB_SEP = ",\t"  # upstream SFTData joins its quoted titles with a comma and a tab


def _quoted(titles: list[str], sep: str = ", ") -> str:
    return sep.join(f'"{t}"' for t in titles)


def sid_history_input(history_sids: list[str]) -> str:
    return (f"The user has interacted with items {', '.join(history_sids)} in chronological order. "
            f"{NEXT_ITEM_INSTRUCTION}")


def title2sid_input(title: str) -> str:
    return f"Which item has the title: {title}?"


@dataclass(frozen=True)
class Prompts:
    """Every task's prompt for one style. `category` is the dataset name (e.g. Industrial_and_Scientific):
    the upstream style writes its phrase into tasks (d) and (e)."""

    style: str = "upstream"
    category: str = ""

    def __post_init__(self):
        check_style(self.style)

    @property
    def upstream(self) -> bool:
        return self.style == "upstream"

    # --- SFT: (a), (b) and (c) are the same text in both styles
    def sid_history(self, history_sids: list[str]) -> str:
        """(a) SID history -> next SID."""
        return alpaca_prompt(NEXT_ITEM_INSTRUCTION, sid_history_input(history_sids))

    def title2sid(self, title: str) -> str:
        """(b1) title -> SID."""
        return alpaca_prompt(ITEM_ID_INSTRUCTION, title2sid_input(title))

    def sid2title(self, sid: str) -> str:
        """(b2) SID -> title."""
        return alpaca_prompt(ITEM_ID_INSTRUCTION, f'What is the title of item "{sid}"?')

    def sid_history_title(self, history_sids: list[str]) -> str:
        """(c) SID history -> next item's title."""
        return alpaca_prompt(NEXT_TITLE_INSTRUCTION,
                             f"The user has sequentially interacted with items {', '.join(history_sids)}. "
                             "Can you recommend the next item for him? Tell me the title of the item")

    def title_history_title(self, history_titles: list[str], variant: int = 0) -> str:
        """(d) title history -> next title. Upstream picks one of 11 instructions per row (`variant`)."""
        if not self.upstream:
            return alpaca_prompt(
                NEXT_TITLE_INSTRUCTION,
                f"The user has interacted with the following items in chronological order: {_quoted(history_titles)}. "
                "Can you recommend the next item for him? Tell me the title of the item")
        c = category_phrase(self.category)
        instruction = _GAMES_INSTRUCTIONS[variant].format(c=c)
        # upstream SFTData: "\n \n" after the instruction, "{category}s", titles joined by ",\t"
        return (f"{PREAMBLE}### Instruction:\n{instruction}\n \n### User Input: \n"
                f"The user has palyed the following {c}s before: {_quoted(history_titles, _TAB_SEP)}"
                "\n\n### Response:\n")

    def title_history_title_answer(self, title: str) -> str:
        """(d)'s answer: upstream SFTData quotes the title."""
        return f'"{title}"' if self.upstream else title

    def title_history_sid(self, history_titles: list[str]) -> str:
        """(e) title history -> next SID."""
        if not self.upstream:
            return alpaca_prompt(
                NEXT_ITEM_INSTRUCTION,
                f"The user has interacted with the following items in chronological order: {_quoted(history_titles)}. "
                f"{NEXT_ITEM_INSTRUCTION}")
        return alpaca_prompt(
            TITLE_HISTORY_SID_INSTRUCTION,
            f"The user has interacted with the following {category_phrase(self.category)} items in chronological "
            f"order: {_quoted(history_titles)}. Can you predict the next item the user may expect?")

    # --- evaluation (evaluate.py): upstream scores with EvalSidDataset's input, not (a)'s
    def eval_input(self, history_sids: list[str]) -> str:
        """The `input` field of a predictions row (upstream writes the user input, not the whole prompt)."""
        if not self.upstream:
            return sid_history_input(history_sids)
        return ("Can you predict the next possible item the user may expect, given the following chronological "
                f"interaction history: {', '.join(history_sids)}")

    def eval_prompt(self, history_sids: list[str]) -> str:
        return alpaca_prompt(NEXT_ITEM_INSTRUCTION, self.eval_input(history_sids))

    # --- RL (rl.py) and its in-training evaluation: upstream drops the preamble and instruction
    def rl_sid_history(self, history_sids: list[str]) -> str:
        if not self.upstream:
            return self.sid_history(history_sids)
        return user_input_prompt(sid_history_input(history_sids))

    def rl_title2sid(self, title: str) -> str:
        return user_input_prompt(title2sid_input(title)) if self.upstream else self.title2sid(title)

    def rl_description2sid(self, description: str) -> str:
        """Upstream RLTitle2SidDataset's second task; the minionerec style has no description task."""
        return user_input_prompt(f'An item can be described as follows: "{description}". Which item is it describing?')

    def rl_title_history(self, history_titles: list[str]) -> str:
        if not self.upstream:
            return self.title_history_sid(history_titles)
        return user_input_prompt("Given the title sequence of user historical interactive items: "
                                 f"{_quoted(history_titles)}, can you recommend a suitable next item for the user?")

    def templates(self) -> list[str]:
        """One example of every prompt (tiny tokenizers are trained on them so prompts take few tokens)."""
        sids, titles = ["X"], ["T"]
        return [self.sid_history(sids), self.title2sid("T"), self.sid2title("X"), self.sid_history_title(sids),
                *[self.title_history_title(titles, v) for v in range(NUM_TITLE_HISTORY_INSTRUCTIONS)],
                self.title_history_sid(titles), self.eval_prompt(sids), self.rl_sid_history(sids),
                self.rl_title2sid("T"), self.rl_description2sid("D"), self.rl_title_history(titles)]


UPSTREAM = Prompts("upstream")  # the default of every builder: the scripts' default --prompt_style
