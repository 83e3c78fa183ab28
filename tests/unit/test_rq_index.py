"""minionerec.rq.index: collision handling, the report, and index.json writing (hand-made codes)."""
import json

import numpy as np
import pytest

from minionerec.data.formats import load_sid_index
from minionerec.rq.common import load_embeddings, parse_sizes, save_embeddings
from minionerec.rq.index import (CollisionError, codes_to_sids, collision_groups, level_stats, load_index_codes, make_unique,
                      reconstruction_error, report, sid_stats, write_index)

# Items 0 and 1 collide on (0, 0, 1); item 2 shares their prefix (0, 0) with last code 0.
CODES = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 0], [1, 2, 1]])
# Last-level residuals [4, 2] and codebook [3, 2]: item 0 sits on codeword 1, item 1 between 1 and 2.
# reassign reads only the last two levels; the level before is a placeholder here.
RESIDUALS = [None, np.zeros((4, 2)), np.array([[1.0, 0.0], [0.6, 0.6], [0.0, 0.0], [1.0, 0.0]])]
CODEBOOKS = [None, np.zeros((3, 2)), np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])]


def test_tokens_use_level_letters():
    assert codes_to_sids(np.array([[12, 40, 7]])) == [["<a_12>", "<b_40>", "<c_7>"]]


def test_reassign_moves_only_the_colliding_group_to_nearest_free_codes():
    out = make_unique(CODES, "reassign", RESIDUALS, CODEBOOKS)
    # Hungarian on the prefix group {0, 1, 2}: item 0 -> 1 (cost 0), item 1 -> 2 (0.52), item 2 -> 0 (0).
    assert out.tolist() == [[0, 0, 1], [0, 0, 2], [0, 0, 0], [1, 2, 1]]
    assert out.shape == CODES.shape and not collision_groups(out)


def test_append_adds_a_level_to_every_item():
    out = make_unique(CODES, "append")
    assert out.tolist() == [[0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0], [1, 2, 1, 0]]


def test_overflowing_group_spills_to_the_nearest_free_pair():
    # 3 items share code (0, 0) but level b has 2 codes: Hungarian keeps items 0 and 1 in prefix (0,)
    # (cost 0 + 0.01); item 2 (residual x=2) takes the nearest free pair: (1, 0) -> e_b + e_c = (10, 0).
    residual = np.array([[0.0, 0.0], [1.0, 0.1], [2.0, 0.0]])  # input of level a == of level b (e_a0 = 0)
    codebooks = [np.array([[0.0, 0.0], [10.0, 0.0]]), np.array([[0.0, 0.0], [1.0, 0.0]])]
    out = make_unique(np.zeros((3, 2), dtype=int), "reassign", [residual, residual], codebooks)
    assert out.tolist() == [[0, 0], [0, 1], [1, 0]]


def test_reassign_fails_when_no_free_codes_are_left():
    codes = np.zeros((5, 2), dtype=int)  # 5 items, but 2 x 2 codes can tell apart only 4
    with pytest.raises(CollisionError, match="more than the last two levels can tell apart"):
        make_unique(codes, "reassign", [np.zeros((5, 2))] * 2, [np.zeros((2, 2))] * 2)


def test_unknown_mode_is_one_line_error():
    with pytest.raises(ValueError, match="collision mode"):
        make_unique(CODES, "shuffle")


def test_report_counts_collisions_and_entropy():
    uniform = np.array([[0, 0], [1, 1], [2, 2], [3, 3]])
    stats = level_stats(uniform, [4, 8])
    assert [(s["used"], s["entropy"], s["max_entropy"]) for s in stats] == [(4, 2.0, 2.0), (4, 2.0, 3.0)]
    text = report("t", CODES, make_unique(CODES, "append"))
    assert "collision groups before: 1 (2 items)   after: 0 (0 items)" in text


# First-level codes 0 (3 items) and 4 (2 items; codes 1-3 unused); items 3 and 4 share the SID (4, 0).
SHARED = np.array([[0, 0], [0, 1], [0, 2], [4, 0], [4, 0]])


def test_sid_stats_counts_items_per_used_first_level_code():
    stats = sid_stats(SHARED, [8, 4])
    assert {k: v for k, v in stats.items() if k != "levels"} == {
        "items": 5, "num_levels": 2, "collision_groups": 1, "collided_items": 2, "codes_used": [2, 3],
        "first_level_items_max": 3, "first_level_items_median": 2.5}  # median of (3, 2): unused codes don't count
    assert stats["levels"] == level_stats(SHARED, [8, 4])
    before = sid_stats(SHARED[:3], codes_before=np.zeros((3, 2), dtype=int))
    assert (before["collision_groups_before"], before["collided_items_before"], before["collision_groups"]) == (1, 3, 0)
    assert json.loads(json.dumps(stats)) == stats  # plain data: a bench stores it and adds its own columns


def test_report_prints_items_per_first_level_code():
    text = report("t", SHARED, SHARED, [8, 4])
    assert text.splitlines()[1:3] == ["collision groups: 1 (2 items)",
                                      "items per first-level code: max 3, median 2.5 (over 2 used codes)"]
    assert text.splitlines()[3].split() == ["level", "size", "used", "used%", "entropy", "max", "largest"]


def test_report_cli_json(tmp_path, capsys):
    from minionerec.rq import report as report_cli

    path = tmp_path / "X.index.json"  # written by hand: write_index refuses the shared SID
    path.write_text(json.dumps(dict(zip("abcde", codes_to_sids(SHARED)))))
    report_cli.main(report_cli.Args(index_path=str(path), codebook_size="8,4", json=True))
    assert json.loads(capsys.readouterr().out) == sid_stats(SHARED, [8, 4])


def test_reconstruction_error_sums_codewords_then_decodes():
    x, codes = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0], [1]])
    codebooks = [np.array([[1.0, 0.0], [0.0, 0.0]])]  # item 1 is reconstructed as 0: error 1 of total 2
    assert reconstruction_error(x, codes, codebooks) == 0.5
    assert reconstruction_error(x, codes, codebooks, decode=lambda z: 2 * z) == 1.0  # (1 + 1) / 2


def test_write_index_round_trips_and_refuses_duplicates(tmp_path):
    codes = make_unique(CODES, "reassign", RESIDUALS, CODEBOOKS)
    path = write_index(["10", "11", "12", "13"], codes, tmp_path / "X.index.json")
    assert load_sid_index(path)["11"] == ["<a_0>", "<b_0>", "<c_2>"]
    ids, back = load_index_codes(path)
    assert ids == ["10", "11", "12", "13"] and back.tolist() == codes.tolist()
    with pytest.raises(CollisionError, match="duplicate SIDs"):
        write_index(["a", "b", "c", "d"], CODES, tmp_path / "bad.json")


def test_embeddings_round_trip_with_ids_and_bad_sizes_fail(tmp_path):
    path = save_embeddings(["7", "3"], np.eye(2), tmp_path / "e.npy")
    assert json.loads((tmp_path / "e.ids.json").read_text()) == ["7", "3"]
    ids, x = load_embeddings(path)
    assert ids == ["7", "3"] and x.dtype == np.float32
    assert parse_sizes((8, 4), 2) == [8, 4] and parse_sizes("16", 3) == [16, 16, 16]
    with pytest.raises(ValueError, match="need 3 positive sizes"):
        parse_sizes("8,4", 3)


def test_a_damaged_embedding_pair_is_one_line_naming_the_file(tmp_path):
    path = save_embeddings(["7", "3"], np.eye(2), tmp_path / "e.npy")
    (tmp_path / "e.ids.json").write_text('["7", "3"')
    with pytest.raises(SystemExit, match=r"^error: .*e.ids.json: invalid JSON"):
        load_embeddings(path)
    (tmp_path / "e.ids.json").write_text('{"7": 0, "3": 1}')
    with pytest.raises(SystemExit, match=r"e.npy: shape \(2, 2\) does not match no JSON list of item ids in .*ids"):
        load_embeddings(path)
    (tmp_path / "e.ids.json").write_text('["7", "3"]')
    np.savez(tmp_path / "z.npz", x=np.eye(2))
    (tmp_path / "z.npz").rename(path)  # an .npz under the .npy's name
    with pytest.raises(SystemExit, match=r"e.npy: not a readable .npy array"):
        load_embeddings(path)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(SystemExit, match=r"e.npy: not a readable .npy array"):
        load_embeddings(path)
    np.save(path, np.eye(2))
    path.write_bytes(path.read_bytes()[:-8])  # a cut .npy
    with pytest.raises(SystemExit, match=r"e.npy: not a readable .npy array"):
        load_embeddings(path)
