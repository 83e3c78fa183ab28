"""RQ-Kmeans+ (as in GPR): RQ-Kmeans codebooks + an identity-initialised residual encoder, fine-tuned.

1. RQ-Kmeans (faiss) on the embeddings gives L codebooks in the embedding space.
2. An RQ-VAE whose encoder and decoder are `x + MLP(x)` with the MLP's last layer zero-initialised
   starts as the identity, so before training its codes are exactly the RQ-Kmeans codes.
3. Fine-tuning with reconstruction + commitment loss lets the encoder move items so they sit
   closer to their codewords (lower quantisation error) without losing the k-means structure.

    python -m minionerec.rq.rqkmeans_plus --embedding_path X.npy --output_path Cat.index.json --epochs 50
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


from minionerec.run.cli import run
from minionerec.rq.common import check_common, load_embeddings, parse_sizes, seed_everything
from minionerec.rq.index import finish, make_unique, writing_index
from minionerec.rq.rqkmeans import residual_kmeans
from minionerec.rq.rqvae import (RQVAE, check_training, codes_for, decoder_fn, parse_hidden, resolve_device, save_encoder,
                      train)
from minionerec.rq.rqvae import Args as RQVAEArgs


@dataclass
class Args(RQVAEArgs):
    """RQ-Kmeans codebooks + identity-initialised residual encoder, fine-tuned (RQ-Kmeans+)."""

    hidden: str = "256"  # hidden widths of the residual MLPs (latent dim = embedding dim)
    e_dim: int = 0  # not used: the latent space is the embedding space (kept so RQ-VAE flags line up)
    epochs: int = 50  # fine-tuning passes over the embeddings after the k-means warm start
    reset_dead: bool = False  # codebooks come from k-means, so every code starts in use
    niter: int = 50  # k-means iterations per level for the warm start


def build(x: torch.Tensor, sizes: list[int], hidden: list[int], beta: float, seed: int, niter: int) -> RQVAE:
    """RQ-VAE with residual encoder/decoder whose codebooks are RQ-Kmeans' (x [N, D])."""
    codebooks, _, _ = residual_kmeans(x.cpu().numpy(), sizes, seed=seed, niter=niter)
    model = RQVAE(x.shape[1], hidden, x.shape[1], sizes, beta, residual=True).to(x.device)
    model.set_codebooks(codebooks)
    return model


def quantize(embeddings: np.ndarray, levels: int = 3, codebook_size=256, seed: int = 0, epochs: int = 50,
             hidden=(256,), collision: str = "reassign") -> np.ndarray:
    """Library entry: embeddings [N, D] -> collision-free codes [N, L] (CPU)."""
    seed_everything(seed)
    sizes = parse_sizes(codebook_size, levels)
    x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    model = train(build(x, sizes, list(hidden), 0.25, seed, 50), x, epochs, seed=seed, reset_dead=False)
    codes, residuals, codebooks = codes_for(model, x)
    return make_unique(codes, collision, residuals, codebooks)


def main(args: Args) -> np.ndarray:
    if args.e_dim:
        raise SystemExit("error: --e_dim does not apply to RQ-Kmeans+ (the latent space is the embedding space)")
    seed_everything(args.seed)
    item_ids, x_np = load_embeddings(args.embedding_path)
    sizes = check_common(args, len(x_np))
    check_training(args)
    device, hidden = resolve_device(args.device), parse_hidden(args.hidden)
    with writing_index(args.output_path):  # no minionerec.rq.add_items on this index until all three files are written
        x = torch.as_tensor(x_np, device=device)
        model = build(x, sizes, hidden, args.beta, args.seed, args.niter)
        train(model, x, args.epochs, args.batch_size, args.lr, args.seed, args.reset_dead, args.ckpt_dir,
              args.save_every, args.resume)
        codes, residuals, codebooks = codes_for(model, x)
        return finish("rqkmeans_plus", item_ids, codes, args.output_path, args.collision, residuals, codebooks,
                      sizes, x=x_np, decode=decoder_fn(model),
                      write_encoder=lambda: save_encoder(args.output_path, model))


if __name__ == "__main__":
    run(main, Args)
