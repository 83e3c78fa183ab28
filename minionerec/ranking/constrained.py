"""Constrained decoding over a closed item catalogue: a SID prefix trie compiled to tensors.

Every item's answer is a fixed token path of D tokens: its L SID tokens, the response suffix that
SFT trains ("\\n" for our prompts, see `prompts.response_text`) and EOS. The trie is stored per depth:

    code_table[D, V']      token id -> its digit at depth d (0..S_d-1, or S_d if the token never
                           occurs at depth d), pre-multiplied by the mixed-radix weight of depth d
    prefix_keys[t]         sorted codes of the distinct length-t prefixes (the trie's depth-t nodes);
                           a prefix's code is the sum of its weighted digits, unique per length
    allowed[t]             [n_t + 1, W_t] next-token ids of every depth-t node, rows padded by
                           repeating their last token; the extra last row is DEAD: EOS only

so finding every row's node costs one index + one sum + one searchsorted whatever the depth, and
memory is O(sum_t n_t x W_t + D x V') independent of the number of beams. A prefix that leaves the
trie is DEAD: only EOS is allowed (so a beam on an invalid prefix is forced to finish, never left
unconstrained), and after a complete path only EOS is allowed, so every processed row keeps at
least one finite score (sampling never sees an all -inf row).

`exact_rank` is the brute-force oracle: the teacher-forced log-probability of every item's full
path, which is exactly what beam search sums (HF beam search adds the full-vocab log_softmax of each
chosen token; the processor masks after that log_softmax, so scores are not renormalised).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from minionerec.data import prompts
from minionerec.data.formats import sid_string

_MAX_CODE = 1 << 62  # mixed-radix prefix codes must fit in int64


@dataclass
class SIDTrie:
    """A catalogue's answer paths as tensors (all on one device). Build with `build_sid_trie`."""

    sequences: torch.Tensor  # [N, D] token ids of each distinct SID's path (SID tokens, suffix, EOS)
    sids: list[str]  # [N] the SID strings, e.g. "<a_1><b_2><c_3>"
    eos_token_id: int
    sid_length: int  # L: SID tokens per path (D = L + suffix incl. EOS)
    code_table: torch.Tensor  # [D, V'] int64 weighted digit of each token id at each depth (V' = max id + 2)
    prefix_keys: list[torch.Tensor]  # D + 1 sorted int64 tensors [n_t]: codes of the length-t prefixes
    allowed: list[torch.Tensor]  # D tensors [n_t + 1, W_t]: next tokens per node; last row DEAD (EOS)
    leaf_items: torch.Tensor  # [N] path index of each code in prefix_keys[D]

    @property
    def depth(self) -> int:
        return self.sequences.shape[1]

    @property
    def num_sids(self) -> int:
        return self.sequences.shape[0]

    @property
    def device(self) -> torch.device:
        return self.code_table.device

    def to(self, device) -> "SIDTrie":
        def move(value):
            if isinstance(value, torch.Tensor):
                return value.to(device)
            if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
                return [v.to(device) for v in value]
            return value

        return SIDTrie(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    def codes(self, generated: torch.Tensor) -> torch.Tensor:
        """Prefix code of each row: [R, t] token ids -> [R] int64 (t <= D)."""
        t = generated.shape[1]
        tokens = generated.clamp(max=self.code_table.shape[1] - 1)  # ids beyond the table: "not at this depth"
        depth_index = torch.arange(t, device=generated.device)  # [t]
        return self.code_table[depth_index, tokens].sum(dim=1)  # [R, t] -> [R]

    def nodes(self, generated: torch.Tensor) -> torch.Tensor:
        """Depth-t node index of each row ([R, t], t <= D), or n_t (DEAD) if the prefix left the trie."""
        keys = self.prefix_keys[generated.shape[1]]  # [n_t]
        code = self.codes(generated)  # [R]
        pos = torch.searchsorted(keys, code).clamp_(max=keys.numel() - 1)  # [R]
        return torch.where(keys[pos] == code, pos, keys.numel())

    def allowed_tokens(self, generated: torch.Tensor) -> torch.Tensor | None:
        """[R, t] generated tokens -> [R, W_t] allowed next ids; None when t >= D (EOS only)."""
        t = generated.shape[1]
        if t >= self.depth:
            return None
        if t == 0:  # every row is at the root
            return self.allowed[0][:1].expand(generated.shape[0], -1)
        return self.allowed[t][self.nodes(generated)]

    def items_of(self, generated: torch.Tensor, pad_token_id: int | None = None) -> torch.Tensor:
        """Path index of each generated row [R, T], or -1 where the row is not exactly one catalogue path.

        Tokens after the path must be EOS or `pad_token_id` (HF fills finished rows with it).
        """
        if generated.shape[1] < self.depth:
            return torch.full((generated.shape[0],), -1, dtype=torch.long, device=generated.device)
        node = self.nodes(generated[:, : self.depth])  # [R], n_D when invalid
        item = torch.cat([self.leaf_items, self.leaf_items.new_tensor([-1])])[node]
        rest = generated[:, self.depth:]  # [R, T - D]
        pad = self.eos_token_id if pad_token_id is None else pad_token_id
        filler = (rest == self.eos_token_id) | (rest == pad)
        return torch.where(filler.all(dim=1), item, -1)


def compile_trie(sequences: torch.Tensor, sids: list[str], eos_token_id: int, sid_length: int) -> SIDTrie:
    """Build the per-depth tables from paths [N, D] (last column EOS). Loops over depth, not items."""
    sequences = sequences.to(torch.long).cpu()
    n_paths, depth = sequences.shape
    if n_paths == 0:
        raise ValueError("cannot build a SID trie for an empty catalogue")
    if sequences.min() < 0:
        raise ValueError("token ids must be >= 0")
    width = int(sequences.max()) + 2  # last column: every id beyond the catalogue's tokens
    code_table = torch.empty(depth, width, dtype=torch.long)
    weight = 1
    digits = torch.empty_like(sequences)  # [N, D] weighted digit of each path token
    for d in range(depth):
        tokens = torch.unique(sequences[:, d])  # [S_d] sorted
        if (tokens.numel() + 1) * weight >= _MAX_CODE:
            raise ValueError(f"SID paths of depth {depth} with these codebooks overflow int64 prefix codes")
        code_table[d] = tokens.numel() * weight  # "not at this depth": digit S_d
        code_table[d, tokens] = torch.arange(tokens.numel()) * weight
        digits[:, d] = code_table[d, sequences[:, d]]
        weight *= tokens.numel() + 1
    prefix_codes = torch.cumsum(digits, dim=1)  # [N, D]: code of each path's prefix of length t + 1
    prefix_keys = [torch.zeros(1, dtype=torch.long)] + [torch.unique(prefix_codes[:, t]) for t in range(depth)]
    if prefix_keys[depth].numel() != n_paths:
        seen = {}
        for i, s in enumerate(sids):
            if s in seen:
                raise ValueError(f"items {seen[s]} and {i} share the SID {s}; SIDs must be unique")
            seen[s] = i
        raise ValueError("two paths have identical tokens; SIDs must be unique")
    allowed = []
    for t in range(depth):
        parent_codes = prefix_codes[:, t - 1] if t else torch.zeros(n_paths, dtype=torch.long)
        parent = torch.searchsorted(prefix_keys[t], parent_codes.contiguous())  # [N] node index at depth t
        n_nodes = prefix_keys[t].numel()
        edges = torch.unique(parent * width + sequences[:, t])  # distinct (node, next token), sorted by node
        edge_node, edge_token = edges // width, edges % width
        count = torch.bincount(edge_node, minlength=n_nodes)  # [n_t] >= 1 (every node has a child)
        start = torch.cumsum(count, 0) - count
        max_width = int(count.max())
        slot = torch.minimum(torch.arange(max_width).unsqueeze(0), (count - 1).unsqueeze(1))  # [n_t, W_t]
        table = edge_token[start.unsqueeze(1) + slot]  # rows repeat their last token as padding
        dead = torch.full((1, max_width), eos_token_id, dtype=torch.long)
        allowed.append(torch.cat([table, dead]))  # [n_t + 1, W_t]
    leaf_items = torch.empty(n_paths, dtype=torch.long)
    leaf_items[torch.searchsorted(prefix_keys[depth], prefix_codes[:, -1].contiguous())] = torch.arange(n_paths)
    return SIDTrie(sequences=sequences, sids=list(sids), eos_token_id=int(eos_token_id), sid_length=sid_length,
                   code_table=code_table, prefix_keys=prefix_keys, allowed=allowed, leaf_items=leaf_items)


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
            "use a checkpoint from sft.py, or add them with minionerec.model.loading.add_sid_tokens"
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
        allowed = self.trie.allowed_tokens(generated)  # [R, W_t], None past the path
        if allowed is None:
            allowed = torch.full((scores.shape[0], 1), self.trie.eos_token_id, device=scores.device)
        kept = scores.gather(1, allowed)  # [R, W_t]
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


@contextmanager
def library_generation_defaults(model):
    """Hide the checkpoint's generation_config.json while we decode (upstream issue #49).

    transformers fills every setting a `generate` call leaves unset from `model.generation_config`
    (`_prepare_generation_config`), so a checkpoint saved with do_sample / temperature / top_k /
    renormalize_logits / suppress_tokens ... would silently change constrained decoding. Inside this
    block the model carries library defaults only, and our callers pass every setting they rely on.
    """
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield model
    finally:
        model.generation_config = saved


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
    with library_generation_defaults(model):
        return model.generate(
            **cache, input_ids=input_ids, attention_mask=attention_mask,
            logits_processor=LogitsProcessorList([processor]),
            num_beams=num_beams, num_return_sequences=min(num_beams, trie.num_sids), do_sample=False,
            max_new_tokens=max_new_tokens or trie.depth, length_penalty=length_penalty, early_stopping=False,
            # neutral values, explicit: nothing may re-weight the scores we rank by
            repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0, renormalize_logits=False,
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
