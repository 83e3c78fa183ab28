"""Balanced RQ-Kmeans: residual k-means where every cluster's size is bounded (k-means-constrained).

Each level clusters all N residuals into K clusters with size_min <= |cluster| <= size_max (a
min-cost-flow assignment step inside k-means), so every code is used and the usage entropy is near
log2(K). By default the bounds are tight: floor(N/K) .. ceil(N/K).

Note: with --collision reassign the last level may move a few colliding items to other codes, so
the last level's sizes can leave the bounds by those items; levels before the last stay in bounds.

    python -m minionerec.rq.balanced_rqkmeans --embedding_path X.npy --output_path Cat.index.json --levels 3 \
        --codebook_size 256 --size_min 8 --size_max 30
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from k_means_constrained import KMeansConstrained
from tqdm import tqdm


from minionerec.run.cli import run
from minionerec.rq.common import QuantArgs, check_common, load_embeddings, parse_sizes
from minionerec.rq.index import finish, make_unique, writing_index


@dataclass
class Args(QuantArgs):
    """Balanced residual k-means (k-means-constrained) SIDs for item embeddings. CPU only."""

    size_min: str = ""  # min items per cluster, one value or one per level; "" = floor(N/K)
    size_max: str = ""  # max items per cluster, one value or one per level; "" = ceil(N/K)
    max_iter: int = 30  # k-means iterations per level (each is a min-cost-flow solve)
    n_init: int = 1  # k-means restarts per level


def size_bounds(n: int, sizes: list[int], size_min="", size_max="") -> list[tuple[int, int]]:
    """(min, max) cluster size per level; checks that K*min <= N <= K*max is feasible."""
    levels = len(sizes)
    mins = parse_sizes(size_min, levels) if str(size_min) != "" else [n // k for k in sizes]
    maxs = parse_sizes(size_max, levels) if str(size_max) != "" else [-(-n // k) for k in sizes]
    bounds = []
    for level, (k, lo, hi) in enumerate(zip(sizes, mins, maxs)):
        if not (k * lo <= n <= k * hi and lo <= hi):
            raise ValueError(f"level {level}: {n} items cannot fill {k} clusters of size {lo}..{hi}")
        bounds.append((lo, hi))
    return bounds


def balanced_residual_kmeans(x: np.ndarray, sizes: list[int], bounds: list[tuple[int, int]], seed: int = 0,
                             max_iter: int = 30, n_init: int = 1):
    """x [N, D] -> (codebooks: L x [K_l, D], codes [N, L], residuals: L x [N, D] = input of each level)."""
    residual = np.asarray(x, dtype=np.float64)
    codebooks, codes, residuals = [], [], []
    for level, (k, (lo, hi)) in enumerate(tqdm(list(zip(sizes, bounds)), desc="balanced levels", leave=False)):
        km = KMeansConstrained(n_clusters=k, size_min=lo, size_max=hi, random_state=seed + level,
                               n_init=n_init, max_iter=max_iter).fit(residual)
        assign = km.labels_.astype(np.int64)
        residuals.append(residual)
        codebooks.append(km.cluster_centers_)
        codes.append(assign)
        residual = residual - km.cluster_centers_[assign]
    return codebooks, np.stack(codes, axis=1), residuals


def quantize(embeddings: np.ndarray, levels: int = 3, codebook_size=256, seed: int = 0, size_min="",
             size_max="", collision: str = "reassign", max_iter: int = 30) -> np.ndarray:
    """Library entry: embeddings [N, D] -> collision-free codes [N, L] (L+1 with collision='append')."""
    sizes = parse_sizes(codebook_size, levels)
    bounds = size_bounds(len(embeddings), sizes, size_min, size_max)
    codebooks, codes, residuals = balanced_residual_kmeans(embeddings, sizes, bounds, seed, max_iter)
    return make_unique(codes, collision, residuals, codebooks)


def main(args: Args) -> np.ndarray:
    item_ids, x = load_embeddings(args.embedding_path)
    sizes = check_common(args, len(x))
    try:
        bounds = size_bounds(len(x), sizes, args.size_min, args.size_max)
    except ValueError as e:
        raise SystemExit(f"error: --size_min/--size_max: {e}") from None
    if args.max_iter < 1 or args.n_init < 1:
        raise SystemExit(f"error: --max_iter and --n_init must be >= 1, got {args.max_iter} and {args.n_init}")
    print("cluster size bounds per level:", bounds, flush=True)
    with writing_index(args.output_path):  # no minionerec.rq.add_items on this index until its files are written
        codebooks, codes, residuals = balanced_residual_kmeans(x, sizes, bounds, args.seed, args.max_iter,
                                                               args.n_init)
        return finish("balanced_rqkmeans", item_ids, codes, args.output_path, args.collision, residuals,
                      codebooks, sizes, x=x)


if __name__ == "__main__":
    run(main, Args)
