"""minionerec/rq/add_items.py: items held out of SID construction (and of the model) become recommendable.

Pipeline on the demo catalogue minus 6 held-out items: TF-IDF fit -> RQ-Kmeans 4x4x16 (256 codes for
74 near-duplicate demo items: 5 of the 6 held-out items find their nearest code taken) -> tiny model
-> 2 sft.py steps on the train rows that avoid the held-out items. k-means uses every codeword, so to
exercise "the model gets the SID tokens it lacks" the model knows only the items whose last code is
below 12 (its tokenizer lacks <c_12>..<c_15>). Then the 6 items are embedded with the saved fit and added.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from minionerec.ranking.constrained import build_sid_trie, constrained_beam_search, exact_rank
import sft
from minionerec.run.flags import parse_args
from minionerec.data.formats import load_item_meta, load_sid_index, load_split, sid_string, write_split
from minionerec.model.loading import load_model, load_tokenizer
from minionerec.serving.recommender import history_prompt
from minionerec.data.sft_tasks import task_rows
from minionerec.model.tiny import build_tiny_model
from minionerec.rq import add_items, rqkmeans, rqvae, text2emb
from minionerec.rq.common import save_embeddings
from minionerec.rq.index import CollisionError, extend_codes, load_codebooks, quantize_frozen

HELD_OUT = ["5", "18", "31", "44", "57", "70"]


@pytest.fixture(scope="module")
def catalogue(demo_data, demo_category, tmp_path_factory):
    out = tmp_path_factory.mktemp("add_items")
    meta = load_item_meta(demo_data / "index" / f"{demo_category}.item.json")
    (out / "Base.item.json").write_text(json.dumps({i: m for i, m in meta.items() if i not in HELD_OUT}))
    (out / "new.item.json").write_text(json.dumps({i: meta[i] for i in HELD_OUT}))
    text2emb.main(text2emb.Args(item_meta_path=str(out / "Base.item.json"), output_path=str(out / "Base.emb.npy"),
                                method="tfidf", dim=16))
    text2emb.main(text2emb.Args(item_meta_path=str(out / "new.item.json"), output_path=str(out / "new.emb.npy"),
                                method="tfidf", tfidf_fit=str(out / "Base.emb.tfidf.joblib")))
    rqkmeans.main(rqkmeans.Args(embedding_path=str(out / "Base.emb.npy"), output_path=str(out / "Base.index.json"),
                                levels=3, codebook_size="4,4,16", niter=10))
    index = load_sid_index(out / "Base.index.json")
    known = {i: s for i, s in index.items() if int(s[2][3:-1]) < 12}
    (out / "known.index.json").write_text(json.dumps(known))
    build_tiny_model(out / "base", out / "known.index.json", out / "Base.item.json", hidden_size=32, num_layers=1,
                     num_heads=2, num_kv_heads=1, intermediate_size=64, vocab_size=600, seed=0)
    train = load_split(demo_data / "train" / f"{demo_category}.csv")
    train = train[[all(i in known for i in [*h, t]) for h, t in zip(train["history_item_id"], train["item_id"])]]
    train["history_item_sid"] = [[sid_string(known[i]) for i in h] for h in train["history_item_id"]]
    train["item_sid"] = [sid_string(known[i]) for i in train["item_id"]]
    write_split(train, out / "train.csv")
    sft.main(parse_args(sft.Args, dict(  # shrunk: 2 steps of 8 rows; enough for a real sft.py checkpoint
        base_model=str(out / "base"), train_file=str(out / "train.csv"), output_dir=str(out / "sft"),
        sid_index_path=str(out / "known.index.json"), item_meta_path=str(out / "Base.item.json"), sample=16,
        batch_size=8, micro_batch_size=8, max_steps=2, learning_rate=1e-2, warmup_steps=0, logging_steps=1,
        save_steps=1000)))
    shutil.copytree(out / "sft" / "final_checkpoint", out / "model")
    return out


def add(catalogue, tmp_path, **kw):
    return add_items.main(add_items.Args(
        sid_index_path=str(catalogue / "Base.index.json"), embedding_path=str(catalogue / "new.emb.npy"),
        new_items_path=str(catalogue / "new.item.json"), output_path=str(tmp_path / "v2.index.json"), **kw))


def test_saved_tfidf_fit_embeds_the_training_texts_identically(catalogue):
    import joblib

    base = np.load(catalogue / "Base.emb.npy")
    meta = load_item_meta(catalogue / "Base.item.json")
    again = joblib.load(catalogue / "Base.emb.tfidf.joblib").transform([text2emb.item_text(m) for m in meta.values()])
    np.testing.assert_allclose(again, base, atol=1e-5)


def test_held_out_items_become_recommendable_and_old_items_keep_their_sids(catalogue, tmp_path):
    old = load_sid_index(catalogue / "Base.index.json")
    new = add(catalogue, tmp_path, base_model=str(catalogue / "model"), output_model=str(tmp_path / "model_v2"),
              item_meta_path=str(catalogue / "Base.item.json"), output_item_meta_path=str(tmp_path / "v2.item.json"))
    extended = load_sid_index(tmp_path / "v2.index.json")
    assert sorted(new) == sorted(HELD_OUT) and len(extended) == 80
    assert {i: extended[i] for i in old} == old  # existing items keep their SIDs
    assert len({sid_string(s) for s in extended.values()}) == 80 and {len(s) for s in extended.values()} == {3}
    assert sorted(json.loads((tmp_path / "v2.item.json").read_text())) == sorted(extended)

    # where the nearest codewords are free, the new item gets exactly them (hand-computed here in numpy)
    codebooks, mode = load_codebooks(catalogue / "Base.codebooks.npz")
    assert mode == "reassign" and [len(c) for c in codebooks] == [4, 4, 16]
    ids = json.loads((catalogue / "new.emb.ids.json").read_text())
    residual = np.load(catalogue / "new.emb.npy").astype(np.float64)
    taken, free_kept = {sid_string(s) for s in old.values()}, 0
    nearest = []
    for codebook in codebooks:
        idx = ((residual[:, None, :] - codebook[None]) ** 2).sum(-1).argmin(1)
        nearest.append(idx)
        residual = residual - codebook[idx]
    for item, codes in zip(ids, np.stack(nearest, 1).tolist()):
        greedy = f"<a_{codes[0]}><b_{codes[1]}><c_{codes[2]}>"
        if greedy not in taken:
            assert sid_string(new[item]) == greedy
            free_kept += 1
        taken.add(sid_string(new[item]))
    assert 1 <= free_kept < len(HELD_OUT)  # both paths ran: nearest code kept, taken code moved

    # the extended model decodes every item: 80 beams over 80 paths return the whole catalogue
    tokenizer = load_tokenizer(tmp_path / "model_v2")
    model = load_model(tmp_path / "model_v2").eval()
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer)  # every new token has a row
    trie = build_sid_trie(extended, tokenizer)
    prompt = history_prompt([sid_string(old[i]) for i in list(old)[:3]])
    sids = constrained_beam_search(model, tokenizer, [prompt], trie, num_beams=80)[0]
    assert sorted(sids) == sorted(sid_string(s) for s in extended.values())
    assert len(tokenizer) == len(load_tokenizer(catalogue / "model")) + 4  # <c_12>..<c_15> added
    with pytest.raises(ValueError, match="not single tokens"):  # which the base model could not decode
        build_sid_trie(extended, load_tokenizer(catalogue / "model"))


def title2sid_prompt(sid: list[str], meta: dict) -> str:
    """The title -> SID prompt of SFT's alignment task, the one the alignment fine-tune trains."""
    rows = task_rows("item_alignment", None, {"x": sid}, {"x": meta})
    return next(p for p, r in zip(rows["prompt"], rows["response"]) if r.strip() == sid_string(sid))


def test_alignment_fine_tune_raises_the_new_items_title_to_sid_probability(catalogue, tmp_path):
    add(catalogue, tmp_path / "plain", base_model=str(catalogue / "model"), output_model=str(tmp_path / "plain_model"))
    add(catalogue, tmp_path / "aligned", base_model=str(catalogue / "model"), output_model=str(tmp_path / "aligned_model"),
        align_steps=8, align_learning_rate=5e-3, align_batch_size=4)
    extended = load_sid_index(tmp_path / "plain" / "v2.index.json")
    meta = load_item_meta(catalogue / "new.item.json")

    def mean_logprob(model_dir):
        tokenizer, model = load_tokenizer(model_dir), load_model(model_dir).eval()
        trie = build_sid_trie(extended, tokenizer)
        total = 0.0
        for item in HELD_OUT:
            sids, scores = exact_rank(model, tokenizer, title2sid_prompt(extended[item], meta[item]), trie)
            total += scores[sids.index(sid_string(extended[item]))]
        return total / len(HELD_OUT), model

    before, plain = mean_logprob(tmp_path / "plain_model")
    after, aligned = mean_logprob(tmp_path / "aligned_model")
    assert after > before + 0.5, (before, after)
    changed = [n for (n, p), q in zip(plain.named_parameters(), aligned.parameters()) if not torch.equal(p, q)]
    assert changed  # a training step really ran


def test_codes_move_to_the_nearest_free_pair_and_append_numbers_after_existing():
    """2-level toy codebooks, hand-computed."""
    codebooks = [np.array([[0.0, 0.0], [10.0, 0.0]]), np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])]
    x = np.array([[0.9, 0.0], [0.1, 0.9]])  # nearest: (a0, b1) and (a0, b2)
    codes, residuals = quantize_frozen(x, codebooks)
    assert codes.tolist() == [[0, 1], [0, 2]]
    existing = np.array([[0, 1], [1, 0]])  # (a0, b1) is taken
    # item 0 moves: free pairs (a0,b0) cost 0.81, (a0,b2) is the other new item's, (a1,*) ~ 83: -> (0, 0)
    assert extend_codes(existing, codes, residuals, codebooks).tolist() == [[0, 0], [0, 2]]
    appended = extend_codes(np.array([[0, 1, 0], [0, 1, 1], [1, 0, 0]]), codes, residuals, codebooks, "append")
    assert appended.tolist() == [[0, 1, 2], [0, 2, 0]]
    with pytest.raises(ValueError, match="levels"):
        extend_codes(np.array([[0, 1, 0]]), codes, residuals, codebooks, "reassign")
    with pytest.raises(CollisionError):  # every pair taken: no place without moving an existing item
        full = np.array([[a, b] for a in range(2) for b in range(3)])
        extend_codes(full, codes, residuals, codebooks)


def test_rqvae_index_uses_its_saved_encoder(tmp_path):
    rng = np.random.default_rng(0)
    emb = save_embeddings([f"i{k}" for k in range(60)], rng.normal(size=(60, 8)), tmp_path / "x.npy")
    rqvae.main(rqvae.Args(embedding_path=str(emb), output_path=str(tmp_path / "X.index.json"), levels=2,
                          codebook_size="8,16", hidden="16", e_dim=4, epochs=2, batch_size=32))
    assert (tmp_path / "X.encoder.pt").is_file() and (tmp_path / "X.codebooks.npz").is_file()
    new = save_embeddings(["n0", "n1", "n2"], rng.normal(size=(3, 8)), tmp_path / "new.npy")
    out = add_items.main(add_items.Args(sid_index_path=str(tmp_path / "X.index.json"), embedding_path=str(new)))
    extended = load_sid_index(tmp_path / "X.index.json")  # replaced in place
    assert len(extended) == 63 and {i: extended[i] for i in out} == out
    assert len({sid_string(s) for s in extended.values()}) == 63


@pytest.mark.parametrize("change, message", [
    (dict(embedding_path="base"), "is already in the index"),
    (dict(codebooks_path="missing"), "codebooks_path file not found"),
    (dict(output_model="model_only"), "--base_model and --output_model go together"),
    (dict(align_steps=3), "--align_steps needs --base_model"),
])
def test_bad_input_fails_in_one_line_and_writes_nothing(catalogue, tmp_path, change, message):
    paths = {"base": str(catalogue / "Base.emb.npy"), "missing": str(tmp_path / "nope.npz"),
             "model_only": str(tmp_path / "m")}
    kw = {k: paths.get(v, v) for k, v in change.items()}
    with pytest.raises(SystemExit, match=message):
        add_items.main(add_items.Args(**{**dict(sid_index_path=str(catalogue / "Base.index.json"),
                                                embedding_path=str(catalogue / "new.emb.npy"),
                                                output_path=str(tmp_path / "v2.index.json")), **kw}))
    assert not (tmp_path / "v2.index.json").exists()


@pytest.mark.parametrize("fail_on", ["v2.item.json", "Base.index.json"])
def test_a_failure_after_the_model_is_saved_changes_nothing_and_a_rerun_works(catalogue, tmp_path, monkeypatch,
                                                                               fail_on):
    """All or nothing: the model is staged and renamed first, then item.json, then the index (in place here); a
    failed rename takes the renamed model (and item.json) back, so the same command can be rerun."""
    for name in ("Base.index.json", "Base.codebooks.npz"):
        shutil.copy(catalogue / name, tmp_path / name)
    index_before = (tmp_path / "Base.index.json").read_bytes()
    args = add_items.Args(sid_index_path=str(tmp_path / "Base.index.json"),
                          embedding_path=str(catalogue / "new.emb.npy"), new_items_path=str(catalogue / "new.item.json"),
                          item_meta_path=str(catalogue / "Base.item.json"),
                          output_item_meta_path=str(tmp_path / "v2.item.json"), base_model=str(catalogue / "model"),
                          output_model=str(tmp_path / "model_v2"))
    real = add_items._rename

    def failing(src, dst):
        if Path(dst).name == fail_on:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(add_items, "_rename", failing)
    with pytest.raises(OSError, match="No space left"):
        add_items.main(args)
    assert sorted(os.listdir(tmp_path)) == ["Base.codebooks.npz", "Base.index.json"]  # no model, no temporaries
    assert (tmp_path / "Base.index.json").read_bytes() == index_before
    monkeypatch.setattr(add_items, "_rename", real)
    new = add_items.main(args)  # the rerun is not refused ("--output_model already exists")
    assert sorted(new) == sorted(HELD_OUT) and len(load_sid_index(tmp_path / "Base.index.json")) == 80
    assert (tmp_path / "model_v2" / "config.json").is_file() and (tmp_path / "v2.item.json").is_file()
