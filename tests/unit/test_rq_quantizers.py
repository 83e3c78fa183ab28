"""Each quantiser on a small random matrix: unique, fixed-length SIDs (via the CLIs' main)."""
import importlib

import numpy as np
import pytest
import torch

from minionerec.data.formats import load_sid_index
from minionerec.run.file_lock import LockHeld, locked
from minionerec import rq
from minionerec.rq import balanced_rqkmeans, rqkmeans, rqkmeans_plus, rqvae
from minionerec.rq.common import QuantArgs, save_embeddings
from minionerec.rq.index import collision_groups

N, D = 200, 16  # shrunk: 200 items, 3 levels of 8/8/16 codes -> ~1k possible SIDs, collisions still happen
SIZES = "8,8,16"


@pytest.fixture(scope="module")
def embeddings():
    return np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)


@pytest.fixture(scope="module")
def embedding_path(embeddings, tmp_path_factory):
    return save_embeddings([f"i{k}" for k in range(N)], embeddings, tmp_path_factory.mktemp("emb") / "x.npy")


def assert_unique_fixed_length(path, levels):
    index = load_sid_index(path)  # also validates token format and equal length
    assert len(index) == N and {len(s) for s in index.values()} == {levels}
    assert len({tuple(s) for s in index.values()}) == N
    assert [t[1] for t in index["i0"]] == list("abcd"[:levels])


def common(embedding_path, tmp_path, **kw):
    return dict(embedding_path=str(embedding_path), output_path=str(tmp_path / "x.index.json"), levels=3,
                codebook_size=SIZES, **kw)


def test_rqkmeans_reassign_and_append(embedding_path, tmp_path):
    codes = rqkmeans.main(rqkmeans.Args(**common(embedding_path, tmp_path)))
    assert codes.shape == (N, 3)
    assert_unique_fixed_length(tmp_path / "x.index.json", 3)
    rqkmeans.main(rqkmeans.Args(**common(embedding_path, tmp_path, collision="append")))
    assert_unique_fixed_length(tmp_path / "x.index.json", 4)


def test_rqkmeans_is_deterministic(embeddings):
    a = rqkmeans.quantize(embeddings, 3, SIZES, seed=1)
    assert np.array_equal(a, rqkmeans.quantize(embeddings, 3, SIZES, seed=1))


def test_balanced_sizes_within_bounds(embedding_path, embeddings, tmp_path):
    balanced_rqkmeans.main(balanced_rqkmeans.Args(**common(embedding_path, tmp_path, size_min="20,20,10",
                                                          size_max="30,30,15")))
    assert_unique_fixed_length(tmp_path / "x.index.json", 3)
    bounds = balanced_rqkmeans.size_bounds(N, [8, 8, 16], "20,20,10", "30,30,15")
    _, raw, _ = balanced_rqkmeans.balanced_residual_kmeans(embeddings, [8, 8, 16], bounds)
    for level, (lo, hi) in enumerate(bounds):  # every level, before collision re-assignment
        counts = np.bincount(raw[:, level], minlength=[8, 8, 16][level])
        assert counts.min() >= lo and counts.max() <= hi, (level, counts)
    default = balanced_rqkmeans.quantize(embeddings, 3, SIZES)  # tight default: floor(N/K)..ceil(N/K)
    assert set(np.bincount(default[:, 0])) == {25}


def test_balanced_infeasible_bounds_are_one_line_error(embedding_path, tmp_path):
    with pytest.raises(SystemExit, match="200 items cannot fill 8 clusters of size 30..40"):
        balanced_rqkmeans.main(balanced_rqkmeans.Args(**common(embedding_path, tmp_path, size_min=30, size_max=40)))


def test_rqvae_trains_and_resumes_exactly(embedding_path, tmp_path):
    tiny = dict(hidden="32", e_dim=8, epochs=4, batch_size=64, save_every=2)  # shrunk for CPU tests
    full = rqvae.main(rqvae.Args(**common(embedding_path, tmp_path / "a", ckpt_dir=str(tmp_path / "ca"), **tiny)))
    assert_unique_fixed_length(tmp_path / "a" / "x.index.json", 3)
    # Stop after 2 epochs, then resume to 4: same weights, same SIDs as the uninterrupted run.
    rqvae.main(rqvae.Args(**common(embedding_path, tmp_path / "b", ckpt_dir=str(tmp_path / "cb"), **{**tiny, "epochs": 2})))
    resumed = rqvae.main(rqvae.Args(**common(embedding_path, tmp_path / "b", ckpt_dir=str(tmp_path / "cb"), resume=True,
                                             **tiny)))
    a, b = torch.load(tmp_path / "ca" / "last.pt"), torch.load(tmp_path / "cb" / "last.pt")
    assert a["epoch"] == b["epoch"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert np.array_equal(full, resumed)


def test_rqvae_resume_without_checkpoint_fails(embedding_path, tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint"):
        rqvae.main(rqvae.Args(**common(embedding_path, tmp_path, hidden="32", e_dim=8, epochs=1, resume=True,
                                       ckpt_dir=str(tmp_path / "none"))))


def test_rqkmeans_plus_starts_at_rqkmeans_and_then_learns(embeddings, embedding_path, tmp_path):
    x = torch.as_tensor(embeddings)
    model = rqkmeans_plus.build(x, [8, 8, 16], [32], beta=0.25, seed=0, niter=50)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    codes0, _ = model.encode_all(x)  # identity encoder: exactly the RQ-Kmeans assignment
    _, km_codes, _ = rqkmeans.residual_kmeans(embeddings, [8, 8, 16], seed=0)
    assert np.array_equal(codes0.numpy(), km_codes)
    rqvae.train(model, x, epochs=3, batch_size=64, reset_dead=False)
    assert not torch.equal(before["encoder.mlp.2.weight"], model.state_dict()["encoder.mlp.2.weight"])
    rqkmeans_plus.main(rqkmeans_plus.Args(**common(embedding_path, tmp_path, hidden="32", epochs=2)))
    assert_unique_fixed_length(tmp_path / "x.index.json", 3)


def test_bad_flags_are_one_line_errors(embedding_path, tmp_path):
    with pytest.raises(SystemExit, match="--codebook_size 512 exceeds the 200 items"):
        rqkmeans.main(rqkmeans.Args(**{**common(embedding_path, tmp_path), "codebook_size": "512"}))
    with pytest.raises(SystemExit, match="--collision must be"):
        rqkmeans.main(rqkmeans.Args(**common(embedding_path, tmp_path, collision="drop")))
    with pytest.raises(SystemExit, match="embedding file not found"):
        rqkmeans.main(rqkmeans.Args(**{**common(embedding_path, tmp_path), "embedding_path": str(tmp_path / "no.npy")}))
    with pytest.raises(SystemExit, match="--e_dim does not apply to RQ-Kmeans"):
        rqkmeans_plus.main(rqkmeans_plus.Args(**common(embedding_path, tmp_path, e_dim=8)))
    with pytest.raises(SystemExit, match="--output_path .*: is a directory, not a file"):
        rqkmeans.main(rqkmeans.Args(**{**common(embedding_path, tmp_path), "output_path": str(tmp_path)}))
    with pytest.raises(SystemExit, match="--niter must be >= 1"):
        rqkmeans.main(rqkmeans.Args(**common(embedding_path, tmp_path, niter=0)))
    with pytest.raises(SystemExit, match="--max_iter and --n_init must be >= 1"):
        balanced_rqkmeans.main(balanced_rqkmeans.Args(**common(embedding_path, tmp_path, n_init=0)))


@pytest.mark.parametrize("flags, message", [
    (dict(save_every=0, ckpt_dir="ck"), "--batch_size and --save_every >= 1; got 1, 1024, 0"),
    (dict(save_every=5), "--resume and --save_every need --ckpt_dir"),
    (dict(resume=True), "--resume and --save_every need --ckpt_dir"),
    (dict(batch_size=0), "--batch_size and --save_every >= 1"),
    (dict(lr=0.0), "--lr must be > 0"),
    (dict(e_dim=0), "--e_dim must be >= 1"),
])
def test_rqvae_training_flags_are_checked_before_training(embedding_path, tmp_path, flags, message):
    with pytest.raises(SystemExit, match=message):
        rqvae.main(rqvae.Args(**common(embedding_path, tmp_path, hidden="32", epochs=1, **flags)))
    assert not (tmp_path / "x.index.json").exists()


def test_a_damaged_checkpoint_is_one_line_on_resume(embedding_path, tmp_path):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "last.pt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(SystemExit, match=r"^error: --resume: .*last.pt: not an rq training checkpoint \("):
        rqvae.main(rqvae.Args(**common(embedding_path, tmp_path, hidden="32", e_dim=8, epochs=1, resume=True,
                                       ckpt_dir=str(tmp_path / "ck"))))
    torch.save({"model": {}}, tmp_path / "ck" / "last.pt")
    with pytest.raises(SystemExit, match="not an rq training checkpoint \\(no 'optimizer' entry\\)"):
        rqvae.main(rqvae.Args(**common(embedding_path, tmp_path, hidden="32", e_dim=8, epochs=1, resume=True,
                                       ckpt_dir=str(tmp_path / "ck"))))
    assert not (tmp_path / "x.index.json").exists()


def test_a_quantiser_does_not_write_an_index_another_run_is_writing(embedding_path, tmp_path):
    """minionerec.rq.add_items extending x.index.json holds its lock: a quantiser replacing it meanwhile would leave the old
    SIDs beside new codebooks. Refused before any clustering; afterwards the run goes through."""
    (tmp_path / "x.index.json").write_text("{}")
    with locked(tmp_path / "x.index.json"):
        with pytest.raises(LockHeld, match="x.index.json is being written by pid"):
            rqkmeans.main(rqkmeans.Args(**common(embedding_path, tmp_path)))
    assert (tmp_path / "x.index.json").read_text() == "{}" and not (tmp_path / "x.codebooks.npz").exists()
    rqkmeans.main(rqkmeans.Args(**common(embedding_path, tmp_path)))
    assert_unique_fixed_length(tmp_path / "x.index.json", 3)


def test_an_earlier_runs_encoder_is_removed_with_the_index_it_belonged_to(embedding_path, tmp_path):
    """minionerec.rq.add_items maps new items through X.encoder.pt when it exists: after rqvae, an rqkmeans index on the same
    path must not keep rqvae's encoder (new items would be encoded into the wrong space)."""
    rqvae.main(rqvae.Args(**common(embedding_path, tmp_path, hidden="32", e_dim=8, epochs=1)))
    assert (tmp_path / "x.encoder.pt").is_file()
    rqkmeans.main(rqkmeans.Args(**common(embedding_path, tmp_path)))
    assert not (tmp_path / "x.encoder.pt").exists() and (tmp_path / "x.codebooks.npz").is_file()


def test_clustered_data_with_big_prefix_groups_still_gets_l_level_sids():
    # 10 tight clusters, 8 first-level codes: some (a, b) prefix groups outgrow the 16 last codes,
    # so reassign must spill items to free (b, c) pairs instead of failing.
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(10, D))[rng.integers(10, size=N)] + 0.3 * rng.normal(size=(N, D))).astype(np.float32)
    codes = rqkmeans.quantize(x, 3, SIZES)
    assert codes.shape == (N, 3) and not collision_groups(codes)


@pytest.mark.parametrize("name", sorted(rq.QUANTISERS))
def test_every_registered_quantiser_is_a_module_with_args_and_main(name):
    """rq.QUANTISERS (bench/sids.py picks quantisers from it by name): each entry imports, takes the shared flags."""
    module = importlib.import_module(rq.QUANTISERS[name])
    assert issubclass(module.Args, QuantArgs) and callable(module.main)
