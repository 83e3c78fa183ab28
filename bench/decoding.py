"""Constrained-decoding benchmark: upstream's per-beam algorithm vs our tensor trie, in one run.

    python -m bench.decoding                 # real Industrial catalogue when ../shared/data is present
    python -m bench.decoding --threads 2 --repeats 5

Part 1 times one logits-processor call per decoding step (averaged over the answer's steps) for
8 prompts x 50 beams and 32 prompts x 16 beams, at the tiny model's vocabulary and at Qwen2.5's
(151,936), next to the bare full-vocabulary log_softmax (upstream's processor starts with one, so it
is upstream's floor). Part 2 runs real `generate` beam searches (random tiny Qwen2 models, so the
model's share is the smallest it can be) and reports the share of wall time spent in the processor.

The "upstream" processor is re-implemented here from its description, not copied: for every beam
it turns the generated tokens into a string key (`.tolist()` + join), looks the key up in a dict
of allowed tokens and writes that beam's row of a -inf mask, then adds the mask to the log-probs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import LogitsProcessor, Qwen2Config, Qwen2ForCausalLM


from minionerec.ranking.constrained import SIDLogitsProcessor, beam_search_ids, compile_trie

REAL_INDEX = Path(__file__).resolve().parents[2] / "shared/data/Amazon/index/Industrial_and_Scientific.index.json"
QWEN_VOCAB = 151_936
TINY_BASE_VOCAB = 4_000  # the tiny model's BPE size before SID tokens (minionerec.model.tiny default)
DEMO_BASE_VOCAB = 600  # the test fixtures' tiny BPE (tests/conftest.py)


class UpstreamStyleProcessor(LogitsProcessor):
    """Baseline: per-beam Python loop, string-keyed prefix dict, one mask-row write per beam."""

    def __init__(self, paths: list[list[int]], prompt_len: int, num_beams: int):
        self.allowed: dict[str, list[int]] = {}
        for path in paths:
            for d in range(len(path)):
                key = "-".join(map(str, path[:d]))
                allowed = self.allowed.setdefault(key, [])
                if path[d] not in allowed:
                    allowed.append(path[d])
        self.prompt_len, self.num_beams = prompt_len, num_beams

    def __call__(self, input_ids, scores):
        scores = torch.log_softmax(scores, dim=-1)
        mask = torch.full_like(scores, float("-inf"))
        beams = input_ids.view(-1, self.num_beams, input_ids.shape[-1])
        for b, rows in enumerate(beams):
            for k, row in enumerate(rows):
                key = "-".join(map(str, row[self.prompt_len:].tolist()))
                allowed = self.allowed.get(key, [])
                if allowed:
                    mask[b * self.num_beams + k, allowed] = 0
        return scores + mask


class TimedProcessor(LogitsProcessor):
    """Wraps a processor and accumulates the wall time of its calls."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def __call__(self, input_ids, scores):
        start = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - start
        return out


def catalogue_codes() -> tuple[list[list[str]], str]:
    """SID token lists: the real index when present, else a generated 3 x 256 catalogue of 3,686 items."""
    if REAL_INDEX.is_file():
        index = json.loads(REAL_INDEX.read_text())
        distinct = {"".join(v): v for v in index.values()}
        return list(distinct.values()), f"real Industrial index ({len(index)} items, {len(distinct)} distinct SIDs)"
    gen = torch.Generator().manual_seed(0)
    sids = set()
    while len(sids) < 3686:
        sids.add(tuple(int(c) for c in torch.randint(0, 256, (3,), generator=gen)))
    codes = [[f"<{'abc'[level]}_{c}>" for level, c in enumerate(s)] for s in sorted(sids)]
    return codes, "generated 3 x 256 catalogue (3,686 items; real index not found)"


def token_paths(codes: list[list[str]], vocab: int, newline: int, eos: int) -> torch.Tensor:
    """Map SID tokens to the last ids of a `vocab`-sized vocabulary (as added tokens are), then '\\n', EOS."""
    tokens = sorted({t for c in codes for t in c})
    first = vocab - len(tokens)
    ids = {t: first + i for i, t in enumerate(tokens)}
    return torch.tensor([[ids[t] for t in c] + [newline, eos] for c in codes])  # [N, L + 2]


def make_trie(paths: torch.Tensor, eos: int):
    return compile_trie(paths, [str(i) for i in range(len(paths))], eos_token_id=eos, sid_length=paths.shape[1] - 2)


def median_ms(fn, repeats: int, setup=None) -> float:
    times = []
    for _ in range(repeats):
        arg = setup() if setup else None
        start = time.perf_counter()
        fn(arg)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def per_step_row(paths: torch.Tensor, vocab: int, prompts: int, beams: int, repeats: int, prompt_len: int = 16):
    """Mean over the answer's steps of each method's median per-call time, in ms."""
    gen = torch.Generator().manual_seed(1)
    trie = make_trie(paths, eos=int(paths[0, -1]))
    upstream = UpstreamStyleProcessor(paths.tolist(), prompt_len, beams)
    rows = prompts * beams
    totals = {"upstream": 0.0, "ours": 0.0, "ours_inplace": 0.0, "log_softmax": 0.0, "fill": 0.0}
    for step in range(paths.shape[1]):
        picks = torch.randint(0, len(paths), (rows,), generator=gen)
        input_ids = torch.cat([torch.randint(0, 100, (rows, prompt_len), generator=gen), paths[picks, :step]], dim=1)
        logits = torch.randn(rows, vocab, generator=gen)
        log_probs = torch.log_softmax(logits, dim=-1)  # what HF hands to processors
        ours = SIDLogitsProcessor(trie, prompt_len)
        ours_inplace = SIDLogitsProcessor(trie, prompt_len, inplace=True)
        expected = ours(input_ids, log_probs.clone())
        got_upstream = upstream(input_ids, log_probs.clone())
        finite = torch.isfinite(expected)  # same allowed set; upstream re-normalises (a no-op on log-probs)
        assert torch.equal(finite, torch.isfinite(got_upstream)), "baseline and ours allow different tokens"
        assert torch.allclose(expected[finite], got_upstream[finite], atol=1e-4), "baseline and ours disagree"
        totals["upstream"] += median_ms(lambda _: upstream(input_ids, log_probs), max(3, repeats // 2))
        totals["ours"] += median_ms(lambda _: ours(input_ids, log_probs), repeats)
        totals["ours_inplace"] += median_ms(lambda x: ours_inplace(input_ids, x), repeats, setup=log_probs.clone)
        totals["log_softmax"] += median_ms(lambda _: torch.log_softmax(logits, dim=-1), repeats)
        # the floor of any processor that returns [R, V] scores: writing -inf over them once
        totals["fill"] += median_ms(lambda x: x.fill_(float("-inf")), repeats, setup=log_probs.clone)
        del logits, log_probs, expected, got_upstream
    return {k: v / paths.shape[1] for k, v in totals.items()}


def generate_share(paths: torch.Tensor, vocab: int, prompts: int, beams: int, prompt_len: int, baseline: bool):
    """(processor seconds, generate seconds) for one beam search with a random 2-layer Qwen2 model."""
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=256, tie_word_embeddings=True,
                         eos_token_id=int(paths[0, -1]), pad_token_id=int(paths[0, -1]))
    model = Qwen2ForCausalLM(config).eval()
    trie = make_trie(paths, eos=int(paths[0, -1]))
    input_ids = torch.randint(1, 3000, (prompts, prompt_len))
    mask = torch.ones_like(input_ids)
    inner = (UpstreamStyleProcessor(paths.tolist(), prompt_len, beams) if baseline
             else SIDLogitsProcessor(trie, prompt_len, inplace=True))
    beam_search_ids(model, input_ids[:1], mask[:1], trie, beams)  # warm-up
    timed = TimedProcessor(inner)
    start = time.perf_counter()
    out = beam_search_ids(model, input_ids, mask, trie, beams, processor=timed)
    total = time.perf_counter() - start
    valid = (trie.items_of(out.sequences[:, prompt_len:]) >= 0).all().item()
    assert valid, "a beam left the catalogue"
    return timed.seconds, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on a shared box)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per step (median)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codes, source = catalogue_codes()
    n_sid_tokens = len({t for c in codes for t in c})
    vocabs = {"demo": DEMO_BASE_VOCAB + n_sid_tokens, "tiny": TINY_BASE_VOCAB + n_sid_tokens, "qwen": QWEN_VOCAB}
    paths = {name: token_paths(codes, v, newline=198, eos=151_643 if name == "qwen" else 0) for name, v in vocabs.items()}
    print(f"catalogue: {source}; torch {torch.__version__}, {args.threads} CPU thread(s), "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("\nper decoding step, one processor call (ms; mean over the 5 answer steps of the median of calls)")
    header = f"{'vocab':>12} {'prompts x beams':>15} {'upstream':>9} {'ours':>8} {'ours inpl':>9} " \
             f"{'log_softmax':>11} {'fill':>7} {'upstream/ours':>13} {'ours/lsm':>8} {'inpl/lsm':>8}"
    print(header)
    print("-" * len(header))
    for name, vocab in vocabs.items():
        for prompts, beams in ((8, 50), (32, 16)):
            r = per_step_row(paths[name], vocab, prompts, beams, args.repeats)
            print(f"{vocab:>12,} {f'{prompts} x {beams}':>15} {r['upstream']:>9.2f} {r['ours']:>8.2f} "
                  f"{r['ours_inplace']:>9.2f} {r['log_softmax']:>11.2f} {r['fill']:>7.2f} "
                  f"{r['upstream'] / r['ours_inplace']:>12.1f}x "
                  f"{r['ours'] / r['log_softmax']:>8.2f} {r['ours_inplace'] / r['log_softmax']:>8.2f}")
    print("  upstream/ours uses the in-place variant (the one generate uses); lsm = bare log_softmax [R, V];\n"
          "  fill = writing -inf over [R, V] once, the floor of any processor returning full-vocab scores")

    print("\nshare of generate() wall time inside the processor (random 2-layer hidden-64 Qwen2, prompt 128 "
          "tokens, 8 prompts x 50 beams; a real model only lowers the share)")
    header = f"{'vocab':>12} {'processor':>10} {'generate s':>10} {'processor s':>11} {'share':>7}"
    print(header)
    print("-" * len(header))
    for name, vocab in vocabs.items():
        if name == "demo":
            continue
        for baseline in (True, False):
            proc_s, total_s = generate_share(paths[name], vocab, 8, 50, prompt_len=128, baseline=baseline)
            label = "upstream" if baseline else "ours"
            print(f"{vocab:>12,} {label:>10} {total_s:>10.3f} {proc_s:>11.3f} {100 * proc_s / total_s:>6.1f}%")


if __name__ == "__main__":
    main()
