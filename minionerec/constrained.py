"""Constrained decoding over a closed item catalogue: a SID prefix trie compiled to tensors.

Every item's answer is a fixed token path: its SID tokens, the response suffix that SFT trains
("\\n" for our prompts, see `prompts.response_text`) and EOS. The trie over those paths is stored
as sorted edges, so one catalogue costs O(items x depth) memory whatever the vocabulary size:

    edge_key[E]   = (parent_node << 32) | token_id, sorted ascending (children of a node are contiguous)
    edge_child[E] = the node reached by that edge
    node_start[n_nodes], node_count[n_nodes] = a node's slice of the edge arrays

Node 0 is the root. A node with no edge for a token sends it to DEAD, whose only allowed token is EOS
(leading back to DEAD); complete paths (after EOS) also allow only EOS. So a beam on an invalid
prefix is forced to finish instead of ever being unconstrained, and every processed row keeps at
least one finite score (sampling never sees an all -inf row).

`SIDLogitsProcessor` finds each row's node with one searchsorted per generated position (a loop over
the <= depth positions, never over rows) and keeps only the allowed scores with one gather + one
fill + one scatter. `exact_rank` is the brute-force oracle: the teacher-forced log-probability of
every item's full path, which is exactly what beam search sums (HF beam search adds the full-vocab
log_softmax of each chosen token; masking happens after the log_softmax).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from minionerec import prompts
from minionerec.data import sid_string

_SHIFT = 32  # edge key = node << 32 | token; token ids < 2**32, node ids < 2**31
_TOKEN_MASK = (1 << _SHIFT) - 1


@dataclass
class SIDTrie:
    """A catalogue's answer paths as tensors (all on one device). Build with `build_sid_trie`."""

    sequences: torch.Tensor  # [N, D] token ids of each distinct SID's path (SID tokens, suffix, EOS)
    sids: list[str]  # [N] the SID strings, e.g. "<a_1><b_2><c_3>"
    eos_token_id: int
    sid_length: int  # L: SID tokens per item (D = L + suffix incl. EOS)
    edge_key: torch.Tensor  # [E] int64, sorted
    edge_child: torch.Tensor  # [E] int64
    node_start: torch.Tensor  # [n_nodes] int64
    node_count: torch.Tensor  # [n_nodes] int64, >= 1 for every node
    item_of_node: torch.Tensor  # [n_nodes] int64: item index for depth-D nodes (complete paths), else -1
    max_children: list[int]  # [D + 1] widest node at each depth (depth D = after EOS: 1)
    dead: int  # id of the DEAD node

    @property
    def depth(self) -> int:
        return self.sequences.shape[1]

    @property
    def num_sids(self) -> int:
        return self.sequences.shape[0]

    @property
    def device(self) -> torch.device:
        return self.edge_key.device

    def to(self, device) -> "SIDTrie":
        tensors = ("sequences", "edge_key", "edge_child", "node_start", "node_count", "item_of_node")
        moved = {k: getattr(self, k).to(device) for k in tensors}
        return SIDTrie(**{**self.__dict__, **moved})

    def walk(self, generated: torch.Tensor) -> torch.Tensor:
        """Node reached by each row of generated tokens: [R, T] -> [R] (DEAD if it left the trie)."""
        node = torch.zeros(generated.shape[0], dtype=torch.long, device=generated.device)
        last = self.edge_key.numel() - 1
        for t in range(generated.shape[1]):  # T <= depth steps; each is vectorised over all rows
            key = (node << _SHIFT) | generated[:, t]
            pos = torch.searchsorted(self.edge_key, key).clamp_(max=last)
            hit = self.edge_key[pos] == key
            node = torch.where(hit, self.edge_child[pos], self.dead)
        return node

    def allowed_tokens(self, node: torch.Tensor, step: int) -> torch.Tensor:
        """[R] nodes at generation step `step` -> [R, W] allowed token ids.

        W is the widest node at that depth, known without a device sync because every beam is at the
        same depth (or DEAD, which has one child). Rows with fewer children repeat their last child, so
        a scatter of duplicates writes the same value twice (deterministic).
        """
        width = self.max_children[min(step, self.depth)]
        offsets = torch.arange(width, device=node.device)  # [W]
        last = (self.node_count[node] - 1).unsqueeze(1)  # [R, 1]
        index = self.node_start[node].unsqueeze(1) + torch.minimum(offsets.unsqueeze(0), last)  # [R, W]
        return self.edge_key[index] & _TOKEN_MASK

    def items_of(self, generated: torch.Tensor, pad_token_id: int | None = None) -> torch.Tensor:
        """Item index of each generated row [R, T], or -1 where the row is not exactly one catalogue path.

        Tokens after the path must be EOS or `pad_token_id` (HF fills finished rows with it).
        """
        if generated.shape[1] < self.depth:
            return torch.full((generated.shape[0],), -1, dtype=torch.long, device=generated.device)
        item = self.item_of_node[self.walk(generated[:, : self.depth])]  # [R]
        rest = generated[:, self.depth:]  # [R, T - D]
        filler = (rest == self.eos_token_id) | (rest == (self.eos_token_id if pad_token_id is None else pad_token_id))
        return torch.where(filler.all(dim=1), item, -1)


def compile_trie(sequences: torch.Tensor, sids: list[str], eos_token_id: int, sid_length: int) -> SIDTrie:
    """Build the edge arrays from item paths [N, D] (last column EOS). Loops over depth, not items."""
    sequences = sequences.to(torch.long).cpu()
    n_items, depth = sequences.shape
    if n_items == 0:
        raise ValueError("cannot build a SID trie for an empty catalogue")
    if sequences.min() < 0 or sequences.max() > _TOKEN_MASK:
        raise ValueError("token ids must be in [0, 2**32)")
    parent = torch.zeros(n_items, dtype=torch.long)  # [N] node of each item's prefix so far (root = 0)
    next_id = 1
    keys, children, max_children = [], [], []
    for d in range(depth):
        key = (parent << _SHIFT) | sequences[:, d]
        uniq, inverse = torch.unique(key, return_inverse=True)  # distinct (parent, token) edges, sorted
        child = torch.arange(next_id, next_id + uniq.numel())
        keys.append(uniq)
        children.append(child)
        max_children.append(int(torch.unique(uniq >> _SHIFT, return_counts=True)[1].max()))
        parent = child[inverse]
        next_id += uniq.numel()
    leaves = parent  # [N] node after the full path
    if torch.unique(leaves).numel() != n_items:
        seen = {}
        for i, s in enumerate(sids):
            if s in seen:
                raise ValueError(f"items {seen[s]} and {i} share the SID {s}; SIDs must be unique")
            seen[s] = i
        raise ValueError("two items have identical token paths; SIDs must be unique")
    dead = next_id
    n_nodes = dead + 1
    # After EOS (a leaf) and on DEAD, the only allowed token is EOS, leading to DEAD.
    stop_parents = torch.cat([torch.sort(leaves).values, torch.tensor([dead])])
    keys.append((stop_parents << _SHIFT) | eos_token_id)
    children.append(torch.full_like(stop_parents, dead))
    max_children.append(1)
    edge_key = torch.cat(keys)
    edge_child = torch.cat(children)
    order = torch.argsort(edge_key)  # already sorted by construction (ids grow with depth); cheap safety
    edge_key, edge_child = edge_key[order], edge_child[order]
    node_start = torch.searchsorted(edge_key, torch.arange(n_nodes) << _SHIFT)
    node_count = torch.diff(node_start, append=torch.tensor([edge_key.numel()]))
    assert bool((node_count >= 1).all()), "every node must allow at least one token"
    item_of_node = torch.full((n_nodes,), -1, dtype=torch.long)
    item_of_node[leaves] = torch.arange(n_items)
    return SIDTrie(sequences=sequences, sids=list(sids), eos_token_id=int(eos_token_id), sid_length=sid_length,
                   edge_key=edge_key, edge_child=edge_child, node_start=node_start, node_count=node_count,
                   item_of_node=item_of_node, max_children=max_children, dead=dead)


def response_suffix_ids(tokenizer, sid_token_ids: list[list[int]], sids: list[str]) -> list[int]:
    """Token ids that follow the SID in a trained response ("\\n" here), checked on every item.

    SFT tokenises `response_text(sid)` on its own and appends EOS; the decoder must force exactly the
    same tokens, so a tokenizer that merges the newline into a SID token is an error, not a guess.
    """
    encoded = tokenizer([prompts.response_text(s) for s in sids], add_special_tokens=False)["input_ids"]
    suffix = None
    for sid, ids, full in zip(sids, sid_token_ids, encoded):
        if full[: len(ids)] != ids:
            raise ValueError(f"tokenizer splits the response of SID {sid} differently from its SID tokens")
        tail = full[len(ids):]
        if suffix is None:
            suffix = tail
        elif tail != suffix:
            raise ValueError(f"the response suffix after SID {sid} tokenises as {tail}, others as {suffix}")
    return suffix


def build_sid_trie(sid_index: dict[str, list[str]], tokenizer, device=None) -> SIDTrie:
    """SID index (item id -> SID tokens) + tokenizer -> trie on `device`, over the *distinct* SIDs.

    Items that share a SID (the public Industrial index has 15 such groups) are one decoding target:
    the decoder can only output the SID, and metrics compare SIDs, as upstream does. Order: first
    occurrence in the index.
    """
    vocab = tokenizer.get_vocab()
    distinct: dict[str, list[str]] = {}
    for tokens in sid_index.values():
        distinct.setdefault(sid_string(tokens), tokens)
    token_lists = list(distinct.values())
    missing = sorted({t for tokens in token_lists for t in tokens if t not in vocab})
    if missing:
        raise ValueError(
            f"{len(missing)} SID token(s) are not single tokens of the tokenizer (e.g. {missing[:3]}); "
            "use a checkpoint from sft.py, or add them with minionerec.modeling.add_sid_tokens"
        )
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; the decoder needs it to end every SID")
    sid_ids = [[vocab[t] for t in tokens] for tokens in token_lists]
    sids = [sid_string(tokens) for tokens in token_lists]
    suffix = response_suffix_ids(tokenizer, sid_ids, sids) + [tokenizer.eos_token_id]
    sequences = torch.tensor([ids + suffix for ids in sid_ids], dtype=torch.long)  # [N, L + len(suffix)]
    trie = compile_trie(sequences, sids, tokenizer.eos_token_id, sid_length=len(token_lists[0]))
    return trie.to(device) if device is not None else trie


class SIDLogitsProcessor(LogitsProcessor):
    """Masks every token that does not continue a catalogue path, for `model.generate`.

    `prompt_len` is the (left-padded) prompt width: rows' generated tokens are input_ids[:, prompt_len:].
    `inplace=True` overwrites the incoming scores (saves a [R, V] allocation per step; safe in HF beam
    search, whose log_softmax output is not reused); leave it False when the caller keeps the scores.
    """

    def __init__(self, trie: SIDTrie, prompt_len: int, inplace: bool = False):
        self.trie = trie
        self.prompt_len = prompt_len
        self.inplace = inplace

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_len:]  # [R, t]
        node = self.trie.walk(generated)  # [R]
        allowed = self.trie.allowed_tokens(node, generated.shape[1])  # [R, W]
        kept = scores.gather(1, allowed)  # [R, W]
        out = scores.fill_(float("-inf")) if self.inplace else torch.full_like(scores, float("-inf"))
        return out.scatter_(1, allowed, kept)  # [R, V]


def _encode_left_padded(tokenizer, texts: list[str], device):
    """Prompts tokenised as SFT does (no special tokens added), padded on the left for generation."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    return batch["input_ids"].to(device), batch["attention_mask"].to(device)


def _shared_prompt_cache(model, input_ids, attention_mask, num_beams: int):
    """KV cache of each prompt minus its last token, computed once and repeated for every beam.

    HF beam search copies each prompt num_beams times *before* its prefill, so the prompt (~100+
    tokens) would be encoded 50 times; here it is encoded once and only the cache rows are copied.
    generate() then sees a cache of P - 1 positions and runs just the last prompt token. Positions
    follow generate's own rule for left padding (cumsum of the mask - 1, pads at 0), so the numbers
    match an uncached run up to float rounding (the oracle test checks the ranking).
    """
    position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # [B, P]
    out = model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                position_ids=position_ids[:, :-1], use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    cache.batch_repeat_interleave(num_beams)  # [B, ...] -> [B * num_beams, ...], beam-major like generate
    return cache


@torch.no_grad()
def beam_search_ids(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, trie: SIDTrie, num_beams: int,
                    max_new_tokens: int | None = None, length_penalty: float = 0.0, pad_token_id: int | None = None,
                    share_prompt_cache: bool = True, output_scores: bool = False, processor=None):
    """One constrained `generate` call on left-padded ids [B, P]; returns HF's beam output.

    `out.sequences` is [B * min(num_beams, N), P + depth], best first within each prompt.
    `share_prompt_cache=False` lets generate() encode each prompt once per beam (HF's default path).
    `processor` replaces the default SIDLogitsProcessor (benchmarks wrap it with a timer).
    """
    processor = processor or SIDLogitsProcessor(trie, prompt_len=input_ids.shape[1], inplace=True)
    cache = {}
    if share_prompt_cache and input_ids.shape[1] > 1:
        cache["cache"] = _shared_prompt_cache(model, input_ids, attention_mask, num_beams)
    return model.generate(
        **cache, input_ids=input_ids, attention_mask=attention_mask,
        logits_processor=LogitsProcessorList([processor]),
        num_beams=num_beams, num_return_sequences=min(num_beams, trie.num_sids), do_sample=False,
        max_new_tokens=max_new_tokens or trie.depth, length_penalty=length_penalty, early_stopping=False,
        # neutral values: a checkpoint's generation_config must not re-weight the scores we rank by
        repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0,
        eos_token_id=trie.eos_token_id, pad_token_id=trie.eos_token_id if pad_token_id is None else pad_token_id,
        return_dict_in_generate=True, output_scores=output_scores,
    )


def constrained_beam_search(model, tokenizer, prompts_: list[str], trie: SIDTrie, num_beams: int,
                            max_new_tokens: int | None = None, length_penalty: float = 0.0, batch_size: int = 8,
                            return_scores: bool = False, share_prompt_cache: bool = True):
    """Top `min(num_beams, N)` catalogue SIDs per prompt, best first (beam-search order).

    Returns list[list[str]] (one list per prompt; a non-catalogue output, which the trie makes
    impossible, would appear as its decoded text so metrics can count it), or with
    `return_scores` a pair (sids, scores) where scores are HF's `sequences_scores`.
    """
    if num_beams < 1:
        raise ValueError("num_beams must be >= 1")
    device = next(model.parameters()).device
    if trie.device != device:
        trie = trie.to(device)
    num_return = min(num_beams, trie.num_sids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else trie.eos_token_id
    all_sids, all_scores = [], []
    for start in range(0, len(prompts_), batch_size):
        input_ids, attention_mask = _encode_left_padded(tokenizer, prompts_[start:start + batch_size], device)
        out = beam_search_ids(model, input_ids, attention_mask, trie, num_beams, max_new_tokens, length_penalty,
                              pad_id, share_prompt_cache, output_scores=return_scores)
        generated = out.sequences[:, input_ids.shape[1]:]  # [B * num_return, T]
        items = trie.items_of(generated, pad_id).tolist()  # one transfer per batch, after generation
        for row, item in enumerate(items):
            if row % num_return == 0:
                all_sids.append([])
            text = trie.sids[item] if item >= 0 else tokenizer.decode(generated[row], skip_special_tokens=True).strip()
            all_sids[-1].append(text)
        if return_scores:
            all_scores.extend(out.sequences_scores.view(-1, num_return).tolist())
    return (all_sids, all_scores) if return_scores else all_sids


@torch.no_grad()
def exact_rank(model, tokenizer, prompt: str, trie: SIDTrie, batch_size: int = 256):
    """Brute force: every item's path log-probability under teacher forcing, best first.

    Scores the same thing as beam search: sum over the path tokens (SID, suffix, EOS) of the
    full-vocabulary log_softmax. Returns (sids, scores) sorted by score descending (ties: index order).
    Cost is one forward per item, so it suits small catalogues and tests.
    """
    device = next(model.parameters()).device
    prompt_ids = torch.tensor(tokenizer(prompt, add_special_tokens=False)["input_ids"], device=device)  # [P]
    paths = trie.sequences.to(device)  # [N, D]
    n_prompt, depth = prompt_ids.numel(), paths.shape[1]
    totals = []
    for start in range(0, paths.shape[0], batch_size):
        chunk = paths[start:start + batch_size]  # [n, D]
        inputs = torch.cat([prompt_ids.expand(chunk.shape[0], -1), chunk], dim=1)  # [n, P + D]
        logits = model(input_ids=inputs).logits[:, n_prompt - 1: n_prompt - 1 + depth].float()  # [n, D, V]
        log_probs = torch.log_softmax(logits, dim=-1).gather(2, chunk.unsqueeze(2)).squeeze(2)  # [n, D]
        totals.append(log_probs.sum(dim=1))
    scores = torch.cat(totals)  # [N]
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    return [trie.sids[i] for i in order], scores[order].tolist()
