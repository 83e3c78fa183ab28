"""Reward functions on hand-written groups; expected values are computed by hand in comments."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from minionerec.rl import rewards
from minionerec.ranking.sasrec import SASRec, load_sasrec, pad_histories, save_sasrec

A, B, C, D = "<a_1><b_1>", "<a_1><b_2>", "<a_2><b_1>", "<a_2><b_2>"
INDEX = {"10": ["<a_1>", "<b_1>"], "11": ["<a_1>", "<b_2>"], "12": ["<a_2>", "<b_1>"], "13": ["<a_2>", "<b_2>"]}


def test_rule_reward_exact_match_only():
    got = rewards.rule_reward([A + "\n", B, " " + A, "<a_1>"], target=[A, A, A, A])
    assert got == [1.0, 0.0, 1.0, 0.0]


def test_rank_weights_are_normalised_over_the_group():
    # G=4: 1/log2(2..5) = 1, 0.63093, 0.5, 0.43068; sum 2.56161
    assert rewards.rank_weights(4) == pytest.approx([-0.39038, -0.24630, -0.19519, -0.16813], abs=1e-5)
    assert sum(rewards.rank_weights(7)) == pytest.approx(-1.0)


def test_ranking_only_hand_computed_groups():
    # group 1 holds the target at rank 1; group 2 misses it entirely
    completions = [B, A, C, D] + [B, C, D, B]
    got = rewards.ranking_only_reward(completions, target=[A] * 8, num_generations=4)
    assert got[:4] == pytest.approx([-0.39038, 0.0, -0.19519, -0.16813], abs=1e-5)
    assert got[4:] == [0.0] * 4


def test_ranking_type_is_rule_plus_ranking_only():
    funcs = rewards.build_reward_funcs("ranking", num_generations=2, sid_index=INDEX)
    assert [f.__name__ for f in funcs] == ["rule", "ranking_only"]
    completions, target = [A, B, C, D], [B, B, A, A]
    total = [sum(f(completions=completions, target=target)[k] for f in funcs) for k in range(4)]  # weights 1 each
    # group 1: target at rank 1 -> rank 0 gets -1/(1 + 1/log2 3) = -0.61315; group 2: no target
    assert total == pytest.approx([-0.61315, 1.0, 0.0, 0.0], abs=1e-5)


def test_ranking_rejects_partial_group():
    with pytest.raises(ValueError, match="not a multiple of num_generations=4"):
        rewards.ranking_only_reward([A, B, C], target=[A] * 3, num_generations=4)


def test_unknown_reward_type_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown reward_type 'ndcg'; valid: rule, ranking, ranking_only, prefix, semantic, "
                                         r"sasrec"):
        rewards.build_reward_funcs("ndcg", num_generations=2, sid_index=INDEX)


T3 = "<a_1><b_2><c_3>"  # a 3-level target; INDEX3 holds it and three near misses
INDEX3 = {"20": ["<a_1>", "<b_2>", "<c_3>"], "21": ["<a_1>", "<b_2>", "<c_9>"], "22": ["<a_1>", "<b_9>", "<c_3>"],
          "23": ["<a_9>", "<b_2>", "<c_3>"]}


def test_prefix_reward_hand_computed():
    completions = [T3 + "\n",  # exact: all 3 levels -> 1.0
                   "<a_1><b_2><c_9>",  # first two levels -> 0.5
                   "<a_1><b_9><c_3>",  # first level only (the third matching does not count) -> 0.2
                   "<a_9><b_2><c_3>",  # first level wrong, the others right -> 0
                   "a_1 b_2 c_3", "<a_1><b_2>", ""]  # malformed: no SID tokens, a truncated SID, nothing -> 0
    got = rewards.prefix_reward(completions, target=[T3] * 7, level_weights=(0.2, 0.5, 1.0))
    assert got == [1.0, 0.5, 0.2, 0.0, 0.0, 0.0, 0.0]


def test_prefix_registry_entry_binds_its_weights_flag():
    # default 0.2,0.5,1.0; the flag's weights when given (rl.py passes reward_options(args)); combinable with +
    prefix, rule = rewards.build_reward_funcs("prefix+rule", 2, INDEX3)
    completions = [T3, "<a_1><b_2><c_9>", "<a_1><b_9><c_3>", "<a_9><b_2><c_3>"]
    assert prefix(completions=completions, target=[T3] * 4) == [1.0, 0.5, 0.2, 0.0]
    assert rule(completions=completions, target=[T3] * 4) == [1.0, 0.0, 0.0, 0.0]
    args = SimpleNamespace(reward_type="rule+prefix", prefix_reward_weights="0,0.25,1")
    assert rewards.reward_options(args) == {"prefix_reward_weights": "0,0.25,1"}
    assert rewards.reward_options(SimpleNamespace(reward_type="ranking")) == {}
    (prefix,) = rewards.build_reward_funcs("prefix", 2, INDEX3, **rewards.reward_options(args))
    assert prefix(completions=completions, target=[T3] * 4) == [1.0, 0.25, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"needs 2 number\(s\), one per SID level"):  # INDEX has 2 levels
        rewards.build_reward_funcs("prefix", 2, INDEX)


@pytest.mark.parametrize("spec, message", [
    ("0.2,0.5", r"needs 3 number\(s\), one per SID level of the index, got '0.2,0.5'"),
    ("0.2,0.5,1.0,1.0", r"needs 3 number\(s\)"),
    ("0.2+0.5+1", r"must be comma-separated numbers like 0.2,0.5,1.0"),
    ("0.5,0.2,1.0", r"must be non-decreasing numbers in \[0, 1\] ending above 0"),
    ("0.2,0.5,1.5", r"non-decreasing numbers in \[0, 1\]"),
    ("-0.1,0.5,1.0", r"non-decreasing numbers in \[0, 1\]"),
    ("0.2,nan,1.0", r"non-decreasing numbers in \[0, 1\]"),
    ("0,0,0", r"ending above 0"),
])
def test_prefix_weights_are_checked(spec, message):
    with pytest.raises(ValueError, match=message):
        rewards.parse_prefix_weights(spec, levels=3)
    assert rewards.parse_prefix_weights("0,0.5,1", levels=3) == (0.0, 0.5, 1.0)


def test_semantic_reward_is_cosine_of_item_embeddings(tmp_path):
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 0.0]], dtype=np.float32)  # rows follow INDEX order
    np.save(tmp_path / "emb.npy", emb)
    (func,) = rewards.build_reward_funcs("semantic", 2, INDEX, item_embeddings_path=str(tmp_path / "emb.npy"))
    got = func(completions=[A, B, C, D, "<z_9>"], target=[A, A, A, A, A])
    assert got == pytest.approx([1.0, 0.0, 1 / math.sqrt(2), -1.0, 0.0], abs=1e-6)


def test_semantic_target_row_comes_from_item_id_column(tmp_path):
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 0.0]], dtype=np.float32)
    np.save(tmp_path / "emb.npy", emb)
    (func,) = rewards.build_reward_funcs("semantic", 2, INDEX, item_embeddings_path=str(tmp_path / "emb.npy"))
    # item 13 is the target (row 3); its SID column is ignored when item_id is present
    assert func(completions=[A, D], target=[A, A], item_id=["13", "13"]) == pytest.approx([-1.0, 1.0])


def test_semantic_needs_matching_embedding_rows(tmp_path):
    np.save(tmp_path / "emb.npy", np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"expected \[4, dim\] item embeddings"):
        rewards.build_reward_funcs("semantic", 2, INDEX, item_embeddings_path=str(tmp_path / "emb.npy"))


def test_sasrec_reward_scores_completion_given_history(tmp_path):
    torch.manual_seed(0)
    model = SASRec(n_items=4, hidden_size=16, max_len=5, num_blocks=1, num_heads=1, dropout=0.0)
    path = save_sasrec(model, tmp_path / "sasrec.pt")
    (func,) = rewards.build_reward_funcs("sasrec", 2, INDEX, sasrec_path=str(path))
    history = [["10", "12"], ["10", "12"], [], ["13"]]
    got = func(completions=[B, D, A, "<z_9>"], history_item_id=history, target=[A] * 4)
    # expected: the model's own scores, rows 1 and 3 after history rows [0, 2]; no history / unknown item -> 0
    padded, lengths = pad_histories([[0, 2]], n_items=4, max_len=5)
    scores = load_sasrec(path).forward_eval(padded, lengths)[0]
    assert got == pytest.approx([scores[1].item(), scores[3].item(), 0.0, 0.0], abs=1e-6)


def test_sasrec_model_shapes_and_padding_invariance():
    torch.manual_seed(0)
    model = SASRec(n_items=6, hidden_size=16, max_len=4, num_blocks=1, dropout=0.0)
    padded, lengths = pad_histories([[1, 2], [5, 4, 3, 2, 1]], n_items=6, max_len=4)
    assert padded.tolist() == [[1, 2, 6, 6], [4, 3, 2, 1]] and lengths.tolist() == [2, 4]
    scores = model.forward_eval(padded, lengths)
    assert scores.shape == (2, 6)
    alone = model.forward_eval(torch.tensor([[1, 2]]), torch.tensor([2]))  # same history, no padding
    assert torch.allclose(scores[0], alone[0], atol=1e-5)


def test_sasrec_load_rejects_foreign_file(tmp_path):
    torch.save({"weights": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a SASRec checkpoint"):
        load_sasrec(tmp_path / "x.pt")


def test_rewards_read_sids_from_ids_when_decode_drops_them():
    class Tok:  # a tokenizer whose SID tokens would be stripped as special tokens by TRL's decode
        def get_vocab(self):
            return {"<a_1>": 5, "<b_2>": 6, "\n": 7, "<|endoftext|>": 0}

    (func,) = rewards.build_reward_funcs("rule", 1, INDEX, tokenizer=Tok())
    assert func(completions=["", ""], completion_ids=[[5, 6, 7, 0], [5, 7, 0]], target=[B, B]) == [1.0, 0.0]


def popularity_reward(completions, target, counts, sid_to_row, **kwargs):
    """A toy reward: the completed item's count, read from a file (0 for no catalogue item)."""
    return [float(counts[sid_to_row[c]]) if c in sid_to_row else 0.0 for c in completions]


def bind_counts(ctx, path):
    return dict(counts=np.load(path), sid_to_row=ctx.sid_to_row)


def test_a_registered_reward_is_picked_up_by_name(monkeypatch, tmp_path):
    # one function + one registry entry (and its file flag): no other code knows the name
    entry = rewards.Reward(popularity_reward, files={"popularity_path": "an .npy of item counts"}, bind=bind_counts)
    monkeypatch.setitem(rewards.REWARDS, "popularity", entry)
    np.save(tmp_path / "counts.npy", np.array([5, 7, 0, 1]))  # rows follow INDEX order
    assert rewards.check_reward_type("ranking+popularity") == ("rule", "ranking_only", "popularity")
    args = SimpleNamespace(reward_type="rule+popularity", popularity_path=str(tmp_path / "counts.npy"))
    assert rewards.reward_files(args) == {"popularity_path": str(tmp_path / "counts.npy")}  # what rl.check_args checks
    funcs = rewards.build_reward_funcs(args.reward_type, 2, INDEX, **rewards.reward_files(args))  # as rl.main does
    assert [f.__name__ for f in funcs] == ["rule", "popularity"]
    assert funcs[1](completions=[B, D, "<z_9>"], target=[A] * 3) == [7.0, 1.0, 0.0]
    with pytest.raises(ValueError, match=r"reward_type popularity needs --popularity_path \(an \.npy of item counts\), "
                                         r"got ''"):
        rewards.build_reward_funcs("popularity", 2, INDEX)
    with pytest.raises(ValueError, match=r"valid: rule, ranking, ranking_only, prefix, semantic, sasrec, popularity \("):
        rewards.check_reward_type("ndcg")


def test_reward_files_are_the_registry_flags_of_the_chosen_rewards():
    args = SimpleNamespace(reward_type="semantic+rule+sasrec", item_embeddings_path="e.npy", sasrec_path="s.pt")
    assert rewards.reward_files(args) == {"item_embeddings_path": "e.npy", "sasrec_path": "s.pt"}
    assert rewards.reward_files(SimpleNamespace(reward_type="ranking")) == {}
    with pytest.raises(TypeError, match="no reward reads ada_pth"):  # a misspelt file flag is not silently dropped
        rewards.build_reward_funcs("rule", 2, INDEX, ada_pth="e.npy")
