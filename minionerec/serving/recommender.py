"""Top-K recommendations from a trained checkpoint: the logic recommend.py and serve.py share.

A `Catalogue` is one index.json (+ item.json for titles) compiled into a SID trie; it is immutable,
so a server can swap in a new one while requests already decoding keep the one they started with.
A `Recommender` loads the model once, resolves histories (item ids or exact titles) against a
catalogue, builds each prompt exactly as evaluate.py does (`history_prompt`) and decodes with the
constrained beam search of minionerec.ranking.constrained. Scores are the beams' sequence log-probabilities
(HF `sequences_scores` with length_penalty 0: the sum of the answer tokens' log-probabilities).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minionerec.data.prompts import Prompts, check_style
from minionerec.ranking.constrained import SIDTrie, build_sid_trie, constrained_beam_search
from minionerec.ranking.shared_sids import representative_items, sid_groups, train_target_counts
from minionerec.data.formats import DataError, load_item_meta, load_sid_index, sid_string
from minionerec.model.loading import best_dtype, load_model, load_tokenizer
from minionerec.run import preflight

# index.json, item.json and the train CSV are read whole into memory (at start-up, and on /catalogue/reload): 1 GiB
# is far above the release catalogues (a few MB) and keeps a wrongly named file from exhausting the server's memory
MAX_CATALOGUE_FILE_BYTES = 1 << 30


class RequestError(ValueError):
    """A bad request (unknown item, empty history, k too large); `field` names the input at fault."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


def history_prompt(history_sids: list[str], prompt_style: str = "upstream") -> str:
    """The next-item prompt, built by the one function evaluate.py builds its prompts with
    (`Prompts.eval_prompt`): serving sends the model byte-identical prompts to evaluation, so the same
    checkpoint and --prompt_style give the same predictions."""
    return Prompts(prompt_style).eval_prompt(history_sids)


def check_model_and_catalogue(args) -> None:
    """recommend.py's and serve.py's shared flags, before anything loads: --base_model, --sid_index_path,
    --item_meta_path, --train_path, --prompt_style (a ValueError is one line, exit 2, via minionerec.run.cli)."""
    check_style(args.prompt_style)
    if not args.base_model or not Path(args.base_model).is_dir():
        raise SystemExit(f"error: --base_model must be a local model directory, got {args.base_model!r}")
    files = ("sid_index_path", "item_meta_path", "train_path")
    preflight.input_files(args, ("sid_index_path",), files)
    for flag in files:  # each is read whole into memory
        path = getattr(args, flag)
        if path and Path(path).stat().st_size > MAX_CATALOGUE_FILE_BYTES:
            raise SystemExit(f"error: --{flag} {path}: larger than the {MAX_CATALOGUE_FILE_BYTES >> 30} GiB limit of "
                             "files read whole")


@dataclass(frozen=True)
class Catalogue:
    """The recommendable items: their SIDs, titles and the compiled trie (build with `build_catalogue`)."""

    sid_index: dict[str, list[str]]  # item id -> SID tokens
    titles: dict[str, str]  # item id -> title ("" when item.json lacks the item)
    trie: SIDTrie
    item_of_sid: dict[str, str]  # SID string -> the item shown for it (`build_catalogue`: items may share a SID)
    items_of_title: dict[str, list[str]] = field(repr=False)
    source: str = ""  # where the index came from (shown by /health)
    target_counts: Counter = field(default_factory=Counter, repr=False)  # item id -> train rows it is the target of

    @property
    def num_items(self) -> int:
        return len(self.sid_index)

    def resolve(self, history: list, field_name: str = "history", max_history: int = 0) -> list[str]:
        """History entries (item ids, or exact titles) -> item ids; RequestError names the entry.

        Every entry is checked; only the last `max_history` (0 = all) are returned: training rows hold at
        most the 10 most recent items, so longer histories are cut the same way.
        """
        if not isinstance(history, (list, tuple)) or not history:
            raise RequestError(field_name, f"{field_name}: expected a non-empty list of item ids or titles")
        items = []
        for position, entry in enumerate(history):
            entry = str(entry)
            if entry in self.sid_index:
                items.append(entry)
                continue
            matches = self.items_of_title.get(entry, [])
            if len(matches) == 1:
                items.append(matches[0])
            elif matches:
                raise RequestError(field_name, f"{field_name}[{position}]: title {entry[:80]!r} matches items "
                                               f"{', '.join(matches[:5])}; give the item id")
            else:
                raise RequestError(field_name, f"{field_name}[{position}]: unknown item {entry[:80]!r} (neither an "
                                               "item id of the SID index nor a title of item.json)")
        return items[-max_history:] if max_history else items

    def prompt(self, item_ids: list[str], prompt_style: str = "upstream") -> str:
        return history_prompt([sid_string(self.sid_index[i]) for i in item_ids], prompt_style)


def build_catalogue(sid_index: dict[str, list[str]], item_meta: dict[str, dict] | None, tokenizer,
                    device=None, source: str = "", target_counts: Counter | None = None) -> Catalogue:
    """ValueError when the tokenizer lacks a SID token or two items' paths collide (from build_sid_trie).

    Items sharing a SID decode as one answer, shown as the group's most frequent train target (`target_counts`,
    from --train_path: the rule bench/quality.py scores "by item" with), else its first item in index order."""
    item_meta = item_meta or {}
    titles = {i: str(item_meta.get(i, {}).get("title", "")) for i in sid_index}
    items_of_title: dict[str, list[str]] = {}
    for item_id, title in titles.items():
        if title:
            items_of_title.setdefault(title, []).append(item_id)
    target_counts = target_counts or Counter()
    groups = sid_groups({item_id: sid_string(tokens) for item_id, tokens in sid_index.items()})
    item_of_sid = representative_items(groups, target_counts)
    trie = build_sid_trie(sid_index, tokenizer, device)
    return Catalogue(sid_index, titles, trie, item_of_sid, items_of_title, source, target_counts)


def load_catalogue(sid_index_path, item_meta_path, tokenizer, device=None, train_path="") -> Catalogue:
    """index.json (+ optional item.json, train CSV) -> Catalogue; DataError/ValueError name the file."""
    sid_index = load_sid_index(sid_index_path)
    item_meta = load_item_meta(item_meta_path) if item_meta_path else None
    sid_of = {item_id: sid_string(tokens) for item_id, tokens in sid_index.items()}
    target_counts = train_target_counts(train_path, sid_of) if train_path else None
    try:
        return build_catalogue(sid_index, item_meta, tokenizer, device, str(sid_index_path), target_counts)
    except ValueError as e:
        raise DataError(f"{sid_index_path}: {e}") from None


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    title: str
    sid: str
    score: float  # sequence log-probability of the SID path (SID tokens, suffix, EOS)

    def as_dict(self) -> dict:
        return {"item_id": self.item_id, "title": self.title, "sid": self.sid, "score": self.score}


def resolve_device(device: str) -> torch.device:
    if device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Recommender:
    """One model + tokenizer, decoding with `num_beams` beams (the largest k it serves)."""

    def __init__(self, model, tokenizer, catalogue: Catalogue, num_beams: int = 50, prompt_style: str = "upstream"):
        if num_beams < 1:
            raise ValueError("num_beams must be >= 1")
        self.model, self.tokenizer, self.catalogue, self.num_beams = model, tokenizer, catalogue, num_beams
        self.prompt_style = prompt_style  # the style the checkpoint was trained with (sft.py --prompt_style)

    @classmethod
    def load(cls, model_dir, sid_index_path, item_meta_path="", num_beams: int = 50, dtype: str = "auto",
             device: str = "auto", prompt_style: str = "upstream", train_path: str = "") -> "Recommender":
        """Catalogue first (a tokenizer without the SID tokens fails in seconds), then the model."""
        tokenizer = load_tokenizer(model_dir)
        target = resolve_device(device)
        catalogue = load_catalogue(sid_index_path, item_meta_path, tokenizer, target, train_path)
        torch_dtype = best_dtype() if dtype == "auto" else getattr(torch, dtype)
        model = load_model(model_dir, dtype=torch_dtype).to(target).eval()
        return cls(model, tokenizer, catalogue, num_beams, prompt_style)

    def check_k(self, k, field_name: str = "k") -> int:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise RequestError(field_name, f"{field_name}: expected a positive integer, got {k!r}")
        if k > self.num_beams:
            raise RequestError(field_name, f"{field_name}: {k} is above the beam limit {self.num_beams} "
                                           "(decode with more beams to return more items)")
        return k

    def decode(self, prompt_texts: list[str], ks: list[int], catalogue: Catalogue) -> list[list[Recommendation]]:
        """One constrained beam search over all prompts (one generate call); the top ks[i] of prompt i."""
        sids, scores = constrained_beam_search(self.model, self.tokenizer, prompt_texts, catalogue.trie,
                                               num_beams=self.num_beams, batch_size=max(len(prompt_texts), 1),
                                               return_scores=True)
        out = []
        for row_sids, row_scores, k in zip(sids, scores, ks):
            ranked = []
            for sid, score in zip(row_sids[:k], row_scores[:k]):
                item_id = catalogue.item_of_sid.get(sid, "")  # "" only for a non-catalogue output (impossible)
                ranked.append(Recommendation(item_id, catalogue.titles.get(item_id, ""), sid, float(score)))
            out.append(ranked)
        return out
