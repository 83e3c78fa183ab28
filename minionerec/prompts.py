"""Prompt texts for every task, in the upstream MiniOneRec Alpaca layout.

Keeping these strings byte-identical to upstream keeps checkpoints interchangeable: a model
fine-tuned here answers upstream prompts and vice versa. A prompt ends with "### Response:\n";
the response is the answer plus "\n", followed by the tokenizer's EOS token.
"""
from __future__ import annotations

PREAMBLE = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request. \n\n"
)
NEXT_ITEM_INSTRUCTION = "Can you predict the next possible item that the user may expect?"
ITEM_ID_INSTRUCTION = "Answer the question about item identification."
NEXT_TITLE_INSTRUCTION = "Can you recommend the next item for the user based on their interaction history?"


def alpaca_prompt(instruction: str, user_input: str) -> str:
    return f"{PREAMBLE}### Instruction:\n{instruction}\n\n### User Input: \n{user_input}\n\n### Response:\n"


def response_text(answer: str) -> str:
    """What the model must write after the prompt (EOS is appended as a token id)."""
    return f"{answer}\n"


def _quoted(titles: list[str]) -> str:
    return ", ".join(f'"{t}"' for t in titles)


def sid_history_prompt(history_sids: list[str]) -> str:
    """Task (a): SID history -> next SID. Also the evaluation and RL prompt."""
    return alpaca_prompt(
        NEXT_ITEM_INSTRUCTION,
        f"The user has interacted with items {', '.join(history_sids)} in chronological order. "
        f"{NEXT_ITEM_INSTRUCTION}",
    )


def title2sid_prompt(title: str) -> str:
    """Task (b1): title -> SID."""
    return alpaca_prompt(ITEM_ID_INSTRUCTION, f"Which item has the title: {title}?")


def sid2title_prompt(sid: str) -> str:
    """Task (b2): SID -> title."""
    return alpaca_prompt(ITEM_ID_INSTRUCTION, f'What is the title of item "{sid}"?')


def sid_history_title_prompt(history_sids: list[str]) -> str:
    """Task (c): SID history -> next item's title."""
    return alpaca_prompt(
        NEXT_TITLE_INSTRUCTION,
        f"The user has sequentially interacted with items {', '.join(history_sids)}. "
        "Can you recommend the next item for him? Tell me the title of the item",
    )


def title_history_title_prompt(history_titles: list[str]) -> str:
    """Task (d): title history -> next title."""
    return alpaca_prompt(
        NEXT_TITLE_INSTRUCTION,
        f"The user has interacted with the following items in chronological order: {_quoted(history_titles)}. "
        "Can you recommend the next item for him? Tell me the title of the item",
    )


def title_history_sid_prompt(history_titles: list[str]) -> str:
    """Task (e): title history -> next SID."""
    return alpaca_prompt(
        NEXT_ITEM_INSTRUCTION,
        f"The user has interacted with the following items in chronological order: {_quoted(history_titles)}. "
        f"{NEXT_ITEM_INSTRUCTION}",
    )
