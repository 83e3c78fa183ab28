"""Constrained decoding: tensor trie vs a Python-dict reference, invalid prefixes, and the exactness oracle."""
from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from minionerec.data import prompts
from minionerec.ranking.constrained import (SIDLogitsProcessor, build_sid_trie, compile_trie, constrained_beam_search,
                                    exact_rank)
from minionerec.data.formats import load_sid_index, load_split, sid_string

EOS = 0


class SlowReferenceProcessor:
    """The obvious implementation: a dict from generated-prefix tuples to allowed tokens, one row at a time."""

    def __init__(self, paths: list[list[int]], prompt_len: int, eos: int):
        self.allowed: dict[tuple, set[int]] = {}
        for path in paths:
            for d in range(len(path)):
                self.allowed.setdefault(tuple(path[:d]), set()).add(path[d])
        self.prompt_len, self.eos = prompt_len, eos

    def __call__(self, input_ids, scores):
        out = torch.full_like(scores, float("-inf"))
        for row in range(input_ids.shape[0]):
            prefix = tuple(input_ids[row, self.prompt_len:].tolist())
            for token in self.allowed.get(prefix, {self.eos}):  # off the trie, or complete: EOS only
                out[row, token] = scores[row, token]
        return out


def random_catalogue(n_items: int, levels: int, codebook: int, vocab: int, seed: int):
    """Distinct random SID paths over ids 1..vocab-1 (0 is EOS), each followed by a suffix token and EOS."""
    assert codebook ** levels >= n_items
    rng = random.Random(seed)
    sids = set()
    while len(sids) < n_items:
        sids.add(tuple(1 + rng.randrange(codebook) + level * codebook for level in range(levels)))
    newline = vocab - 1
    return [list(s) + [newline, EOS] for s in sorted(sids)]


def compile_paths(paths):
    return compile_trie(torch.tensor(paths), [str(p) for p in paths], eos_token_id=EOS, sid_length=len(paths[0]) - 2)


@pytest.mark.parametrize("levels,codebook,n_items", [(3, 4, 20), (4, 3, 50), (1, 30, 12), (3, 16, 300), (6, 3, 100)])
def test_fast_processor_matches_slow_reference(levels, codebook, n_items):
    vocab = levels * codebook + 5
    paths = random_catalogue(n_items, levels, codebook, vocab, seed=levels * 100 + n_items)
    trie = compile_paths(paths)
    rng = random.Random(0)
    prompt_len = 3
    for step in range(len(paths[0]) + 2):  # includes steps after EOS
        rows = []
        for r in range(64):
            path = rng.choice(paths) + [EOS, EOS]
            prefix = path[:step]
            if r % 3 == 1 and step:  # corrupt one token: an invalid prefix
                prefix[rng.randrange(step)] = rng.randrange(vocab)
            rows.append([rng.randrange(vocab) for _ in range(prompt_len)] + prefix)
        input_ids = torch.tensor(rows)
        scores = torch.randn(len(rows), vocab)
        expected = SlowReferenceProcessor(paths, prompt_len, EOS)(input_ids, scores)
        fast = SIDLogitsProcessor(trie, prompt_len)(input_ids, scores.clone())
        inplace = SIDLogitsProcessor(trie, prompt_len, inplace=True)(input_ids, scores.clone())
        assert torch.equal(fast, expected), f"step {step}"
        assert torch.equal(inplace, expected), f"step {step}"


def test_invalid_prefix_and_finished_paths_allow_only_eos():
    paths = [[1, 4, 9, 0], [1, 5, 9, 0], [2, 4, 9, 0]]  # SID of 2 tokens, suffix 9, EOS 0
    trie = compile_paths(paths)
    processor = SIDLogitsProcessor(trie, prompt_len=1)
    scores = torch.zeros(5, 10)
    input_ids = torch.tensor([[7, 3, 4], [7, 2, 5], [7, 1, 4], [7, 1, 7], [7, 1, 4]])
    out = processor(input_ids, scores)
    finite = [torch.isfinite(row).nonzero().flatten().tolist() for row in out]
    assert finite[:4] == [[0], [0], [9], [0]]  # never-valid first token, invalid 2nd, valid, invalid 2nd
    root = processor(torch.tensor([[7]]), torch.zeros(1, 10))
    assert torch.isfinite(root[0]).nonzero().flatten().tolist() == [1, 2]
    for finished in ([1, 4, 9, 0], [1, 4, 9, 0, 0]):  # complete path (then padding): EOS only, never free
        done = SIDLogitsProcessor(trie, prompt_len=0)(torch.tensor([finished]), torch.zeros(1, 10))
        assert torch.isfinite(done[0]).nonzero().flatten().tolist() == [0]
    assert trie.items_of(torch.tensor([[1, 5, 9, 0], [1, 5, 9, 3], [2, 4, 9, 0], [2, 5, 9, 0]])).tolist() == [1, -1, 2, -1]


def test_too_deep_for_int64_prefix_codes_is_an_error():
    paths = torch.arange(256).unsqueeze(1) + 256 * torch.arange(9)  # 9 levels x 256 codes: 257**9 > 2**62
    paths = torch.cat([paths, torch.full((256, 1), 5000)], dim=1)
    with pytest.raises(ValueError, match="overflow"):
        compile_trie(paths, [str(i) for i in range(256)], eos_token_id=5000, sid_length=9)


def test_duplicate_sids_are_rejected():
    with pytest.raises(ValueError, match="share the SID"):
        compile_trie(torch.tensor([[1, 2, 0], [1, 2, 0]]), ["<a_1><b_2>", "<a_1><b_2>"], EOS, sid_length=2)


# ---- with the shared tiny model (real tokenizer: SID tokens are single normal tokens) ----

@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def sid_index(demo_data, demo_category):
    return load_sid_index(demo_data / "index" / f"{demo_category}.index.json")


def test_build_sid_trie_forces_sid_newline_eos(model_and_tokenizer, sid_index):
    _, tokenizer = model_and_tokenizer
    trie = build_sid_trie(sid_index, tokenizer)
    first = next(iter(sid_index.values()))
    expected = tokenizer(prompts.response_text(sid_string(first)), add_special_tokens=False)["input_ids"]
    assert trie.sequences[0].tolist() == expected + [tokenizer.eos_token_id]
    assert trie.depth == len(first) + 2  # SID tokens, "\n", EOS
    assert trie.num_sids == len(sid_index)


def test_items_sharing_a_sid_are_one_target(model_and_tokenizer, sid_index):
    _, tokenizer = model_and_tokenizer
    first_id, first_sid = next(iter(sid_index.items()))
    trie = build_sid_trie({**sid_index, "twin": first_sid}, tokenizer)  # a collision, as in the real index
    assert trie.num_sids == len(sid_index) and trie.sids[0] == sid_string(first_sid)


def test_build_sid_trie_names_missing_tokens(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    with pytest.raises(ValueError, match="not single tokens"):
        build_sid_trie({"1": ["<zz_1>", "<zz_2>"]}, tokenizer)


def _history_prompts(demo_data, n):
    df = load_split(demo_data / "test" / "Demo.csv")
    return [prompts.Prompts().sid_history(h) for h in df["history_item_sid"][:n]]


@pytest.mark.parametrize("n_items,num_beams,share_cache", [(12, 12, True), (12, 16, True), (12, 12, False),
                                                          (None, None, True)])
def test_beam_search_equals_exact_ranking(model_and_tokenizer, sid_index, demo_data, n_items, num_beams, share_cache):
    """The oracle: with num_beams >= items, beam search returns every item in brute-force order."""
    model, tokenizer = model_and_tokenizer
    catalogue = dict(list(sid_index.items())[:n_items]) if n_items else sid_index
    num_beams = num_beams or len(catalogue)
    trie = build_sid_trie(catalogue, tokenizer)
    texts = _history_prompts(demo_data, 3)  # different lengths: exercises left padding
    beams, beam_scores = constrained_beam_search(model, tokenizer, texts, trie, num_beams=num_beams, batch_size=2,
                                                 return_scores=True, share_prompt_cache=share_cache)
    for text, got, got_scores in zip(texts, beams, beam_scores):
        want, want_scores = exact_rank(model, tokenizer, text, trie)
        assert got == want
        # length_penalty 0: HF's sequence score is the plain sum of log-probs
        assert got_scores == pytest.approx(want_scores, abs=1e-4)


def test_beam_search_returns_distinct_valid_sids(model_and_tokenizer, sid_index, demo_data):
    model, tokenizer = model_and_tokenizer
    trie = build_sid_trie(sid_index, tokenizer)
    texts = _history_prompts(demo_data, 4)
    beams = constrained_beam_search(model, tokenizer, texts, trie, num_beams=10, batch_size=4)
    catalogue = {sid_string(s) for s in sid_index.values()}
    for got in beams:
        assert len(got) == 10 and len(set(got)) == 10 and set(got) <= catalogue
