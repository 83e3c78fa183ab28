"""RQ-Kmeans: residual k-means with faiss, one codebook per level, then collision-free SIDs.

Level 1 clusters the embeddings, level 2 clusters what level 1 left over (x - c1), and so on; an
item's SID is its cluster id at every level.

    python -m minionerec.rq.rqkmeans --embedding_path X.npy --output_path Cat.index.json --levels 3 --codebook_size 256
"""
from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np


from minionerec.run.cli import run
from minionerec.rq.common import QuantArgs, check_common, load_embeddings, parse_sizes
from minionerec.rq.index import finish, make_unique, writing_index


@dataclass
class Args(QuantArgs):
    """Residual k-means (faiss) SIDs for item embeddings."""

    niter: int = 50  # k-means iterations per level
    device: str = "cpu"  # cpu | cuda (needs a faiss GPU build)


def check_device(device: str) -> bool:
    """True for a usable faiss GPU, False for cpu; ValueError otherwise."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    if device == "cuda" and faiss.get_num_gpus() == 0:
        raise ValueError("this faiss build has no GPU support (faiss-cpu); use --device cpu")
    return device == "cuda"


def residual_kmeans(x: np.ndarray, sizes: list[int], seed: int = 0, niter: int = 50, device: str = "cpu"):
    """x [N, D] -> (codebooks: L x [K_l, D], codes [N, L], residuals: L x [N, D] = input of each level)."""
    use_gpu = check_device(device)
    residual = np.ascontiguousarray(x, dtype=np.float32)
    codebooks, codes, residuals = [], [], []
    for level, k in enumerate(sizes):
        # Cluster every point (faiss would subsample big sets) and skip its "too few points" warning:
        # a catalogue of a few thousand items into 256 codes is the normal case here.
        km = faiss.Kmeans(residual.shape[1], k, niter=niter, seed=seed + level, gpu=use_gpu,
                          max_points_per_centroid=len(residual), min_points_per_centroid=1, verbose=False)
        km.train(residual)
        _, assign = km.index.search(residual, 1)  # [N, 1]
        assign = assign[:, 0].astype(np.int64)
        residuals.append(residual)
        codebooks.append(km.centroids.copy())
        codes.append(assign)
        residual = np.ascontiguousarray(residual - km.centroids[assign])
    return codebooks, np.stack(codes, axis=1), residuals


def quantize(embeddings: np.ndarray, levels: int = 3, codebook_size=256, seed: int = 0,
             collision: str = "reassign", niter: int = 50) -> np.ndarray:
    """Library entry: embeddings [N, D] -> collision-free codes [N, L] (L+1 with collision='append')."""
    sizes = parse_sizes(codebook_size, levels)
    codebooks, codes, residuals = residual_kmeans(embeddings, sizes, seed, niter)
    return make_unique(codes, collision, residuals, codebooks)


def main(args: Args) -> np.ndarray:
    item_ids, x = load_embeddings(args.embedding_path)
    sizes = check_common(args, len(x))
    try:
        check_device(args.device)
    except ValueError as e:
        raise SystemExit(f"error: --device: {e}") from None
    if args.niter < 1:
        raise SystemExit(f"error: --niter must be >= 1 (k-means iterations per level), got {args.niter}")
    with writing_index(args.output_path):  # no minionerec.rq.add_items on this index until its files are written
        codebooks, codes, residuals = residual_kmeans(x, sizes, args.seed, args.niter, args.device)
        return finish("rqkmeans", item_ids, codes, args.output_path, args.collision, residuals, codebooks, sizes,
                      x=x)


if __name__ == "__main__":
    run(main, Args)
