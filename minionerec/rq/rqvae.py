"""RQ-VAE: MLP encoder -> residual vector quantiser (L codebooks) -> MLP decoder.

Loss = MSE(x, decode(z_q)) + sum over levels of ||sg(r_l) - e_l||^2 + beta * ||r_l - sg(e_l)||^2
(codebook + commitment terms; r_l is the level-l residual, e_l its nearest codeword, gradients reach
the encoder through the straight-through estimator). Codebooks start from residual k-means of the
initial latents; a codeword unused for a whole epoch is re-seeded from a random residual, which keeps
the first level from collapsing onto a few codes (the public release uses 48 of 256).

Checkpoints (`--ckpt_dir`) hold model, optimiser, epoch and RNG state, so `--resume true` continues
exactly where a run stopped.

    python -m minionerec.rq.rqvae --embedding_path X.npy --output_path Cat.index.json --epochs 200 --ckpt_dir ckpt/
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


from minionerec.run.atomic import atomic_path
from minionerec.run.cli import run
from minionerec.rq.common import QuantArgs, check_common, load_embeddings, parse_int_list, reason, seed_everything
from minionerec.rq.index import finish, index_sibling, writing_index
from minionerec.rq.rqkmeans import residual_kmeans


@dataclass
class Args(QuantArgs):
    """Train an RQ-VAE on item embeddings and write collision-free SIDs."""

    hidden: str = "512,256,128"  # encoder hidden widths (decoder mirrors them)
    e_dim: int = 32  # latent / codeword dimension
    beta: float = 0.25  # commitment weight
    epochs: int = 200  # full passes over the embeddings (with --resume: the total, not extra)
    batch_size: int = 1024  # embeddings per Adam step
    lr: float = 1e-3  # Adam learning rate
    reset_dead: bool = True  # re-seed codewords unused for a whole epoch
    device: str = "cpu"  # cpu | cuda
    ckpt_dir: str = ""  # write last.pt here every save_every epochs and at the end ("" = no checkpoints)
    save_every: int = 10  # epochs between writes of ckpt_dir/last.pt (only with --ckpt_dir)
    resume: bool = False  # continue from ckpt_dir/last.pt


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers dims[0] -> ... -> dims[-1], ReLU between them (none after the last)."""
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ResidualMLP(nn.Module):
    """x + mlp(x) with the last layer zero-initialised: exactly the identity before training (RQ-Kmeans+)."""

    def __init__(self, dim: int, hidden: list[int]):
        super().__init__()
        self.mlp = mlp([dim, *hidden, dim])
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x):
        return x + self.mlp(x)


class ResidualQuantizer(nn.Module):
    """L codebooks [K_l, D]; level l quantises what the levels before it left over."""

    def __init__(self, sizes: list[int], dim: int, beta: float):
        super().__init__()
        self.codebooks = nn.ParameterList([nn.Parameter(torch.randn(k, dim) * 0.1) for k in sizes])
        self.beta = beta

    def forward(self, z):
        """z [B, D] -> (z_q straight-through [B, D], codes [B, L], loss, residuals: L x [B, D])."""
        residual, quantized, loss = z, torch.zeros_like(z), z.new_zeros(())
        codes, residuals = [], []
        for codebook in self.codebooks:
            idx = torch.cdist(residual.detach(), codebook.detach()).argmin(dim=1)  # [B]
            q = codebook[idx]  # [B, D]
            loss = loss + F.mse_loss(q, residual.detach()) + self.beta * F.mse_loss(residual, q.detach())
            residuals.append(residual)
            codes.append(idx)
            quantized = quantized + q
            residual = residual - q.detach()
        z_q = z + (quantized - z).detach()  # forward: quantised; backward: identity to the encoder
        return z_q, torch.stack(codes, dim=1), loss, residuals


class RQVAE(nn.Module):
    """Plain MLP encoder/decoder (RQ-VAE) or identity-initialised residual ones (RQ-Kmeans+)."""

    def __init__(self, in_dim: int, hidden: list[int], e_dim: int, sizes: list[int], beta: float = 0.25,
                 residual: bool = False):
        super().__init__()
        self.config = {"in_dim": in_dim, "hidden": list(hidden), "e_dim": e_dim, "residual": residual}  # save_encoder
        if residual:  # latent space = input space, so RQ-Kmeans codebooks apply unchanged
            self.encoder, self.decoder = ResidualMLP(in_dim, hidden), ResidualMLP(in_dim, hidden[::-1])
        else:
            self.encoder, self.decoder = mlp([in_dim, *hidden, e_dim]), mlp([e_dim, *hidden[::-1], in_dim])
        self.quantizer = ResidualQuantizer(sizes, in_dim if residual else e_dim, beta)

    def forward(self, x):
        z_q, codes, quant_loss, _ = self.quantizer(self.encoder(x))
        return self.decoder(z_q), codes, quant_loss

    @torch.no_grad()
    def set_codebooks(self, codebooks: list[np.ndarray]) -> None:
        for param, init in zip(self.quantizer.codebooks, codebooks):
            param.copy_(torch.as_tensor(np.asarray(init), dtype=param.dtype))

    @torch.no_grad()
    def encode_all(self, x: torch.Tensor, batch_size: int = 4096):
        """codes [N, L] and every level's residuals (L x [N, D]) for the whole catalogue."""
        self.eval()
        codes, residuals = [], []
        for start in range(0, len(x), batch_size):
            _, c, _, r = self.quantizer(self.encoder(x[start:start + batch_size]))
            codes.append(c)
            residuals.append(r)
        self.train()
        return torch.cat(codes), [torch.cat(level) for level in zip(*residuals)]


@torch.no_grad()
def kmeans_init(model: RQVAE, x: torch.Tensor, sizes: list[int], seed: int) -> None:
    """Codebooks <- residual k-means of the initial encoder's latents (faiss)."""
    latents = model.encoder(x).cpu().numpy()
    codebooks, _, _ = residual_kmeans(latents, sizes, seed=seed)
    model.set_codebooks(codebooks)


@torch.no_grad()
def reset_dead_codes(model: RQVAE, x: torch.Tensor, used: list[torch.Tensor], generator: torch.Generator) -> int:
    """Codewords with zero use this epoch <- residuals of random items at their level; returns how many."""
    _, residuals = model.encode_all(x)
    n_reset = 0
    for codebook, level_used, residual in zip(model.quantizer.codebooks, used, residuals):
        dead = (level_used == 0).nonzero().flatten()
        if len(dead):
            pick = torch.randint(len(residual), (len(dead),), generator=generator)
            codebook[dead.to(codebook.device)] = residual[pick.to(residual.device)]
            n_reset += len(dead)
    return n_reset


def train(model: RQVAE, x: torch.Tensor, epochs: int, batch_size: int = 1024, lr: float = 1e-3, seed: int = 0,
          reset_dead: bool = True, ckpt_dir: str = "", save_every: int = 10, resume: bool = False) -> RQVAE:
    """Adam on reconstruction + quantisation loss with a tqdm bar; checkpoint/resume via ckpt_dir/last.pt."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)  # batch order and dead-code picks, saved in checkpoints
    start_epoch = 0
    ckpt = Path(ckpt_dir, "last.pt") if ckpt_dir else None
    if resume:
        if ckpt is None or not ckpt.is_file():
            raise SystemExit(f"error: --resume: no checkpoint at {ckpt or '(set --ckpt_dir)'}")
        try:
            state = load_saved(ckpt, "an rq training checkpoint", ("model", "optimizer", "generator", "epoch"))
        except ValueError as e:
            raise SystemExit(f"error: --resume: {e}") from None
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise SystemExit(f"error: {ckpt}: does not match this model ({str(e).splitlines()[0]})") from None
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start_epoch = state["epoch"]

    def save(epoch: int) -> None:
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                        "generator": generator.get_state()}, ckpt)

    bar = tqdm(range(start_epoch, epochs), desc="rq training", initial=start_epoch, total=epochs)
    for epoch in bar:
        used = [torch.zeros(len(cb), device=x.device) for cb in model.quantizer.codebooks]
        total = 0.0
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            recon, codes, quant_loss = model(x[batch.to(x.device)])
            loss = F.mse_loss(recon, x[batch.to(x.device)]) + quant_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            for level, level_used in enumerate(used):
                level_used += torch.bincount(codes[:, level], minlength=len(level_used))
        n_reset = reset_dead_codes(model, x, used, generator) if reset_dead else 0
        bar.set_postfix(loss=f"{total / len(x):.4f}", reset=n_reset)
        if (epoch + 1) % save_every == 0 or epoch + 1 == epochs:
            save(epoch + 1)
    return model


def codes_for(model: RQVAE, x: torch.Tensor):
    """(codes [N, L], residuals L x [N, D], codebooks L x [K_l, D]) as numpy, for minionerec.rq.index.make_unique."""
    codes, residuals = model.encode_all(x)
    codebooks = [cb.detach().cpu().numpy() for cb in model.quantizer.codebooks]
    return codes.cpu().numpy(), [r.cpu().numpy() for r in residuals], codebooks


def decoder_fn(model: RQVAE):
    """numpy [N, D_latent] -> numpy [N, D]: the trained decoder, for minionerec.rq.index.reconstruction_error."""

    @torch.no_grad()
    def decode(z_q: np.ndarray) -> np.ndarray:
        param = next(model.parameters())
        return model.decoder(torch.as_tensor(z_q, dtype=param.dtype, device=param.device)).cpu().numpy()

    return decode


def encoder_path(index_path) -> Path:
    """X.index.json -> X.encoder.pt (beside X.codebooks.npz)."""
    return index_sibling(index_path, ".encoder.pt")


def save_encoder(index_path, model: RQVAE) -> Path:
    """The trained encoder (config + weights), so minionerec/rq/add_items.py maps new items into the codebooks' space."""
    path = encoder_path(index_path)
    state = {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"config": model.config, "encoder": state}, tmp)
    return path


def load_saved(path, what: str, keys: tuple[str, ...]) -> dict:
    """torch.load of a dict rq wrote (tensors only, no pickled code); a truncated, corrupt or foreign file is a
    ValueError naming it and `what` it should be."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, ... by damage
        raise ValueError(f"{path}: not {what} ({reason(e)})") from None
    missing = [key for key in keys if not isinstance(saved, dict) or key not in saved]
    if missing:
        raise ValueError(f"{path}: not {what} (no {missing[0]!r} entry)")
    return saved


def load_encoder(path):
    """numpy [M, D] -> numpy latents [M, e_dim], with the encoder save_encoder wrote; ValueError for a bad file or
    embeddings of another width."""
    what = "an encoder minionerec.rq.rqvae / minionerec.rq.rqkmeans_plus wrote"
    saved = load_saved(path, what, ("config", "encoder"))
    try:
        config = saved["config"]
        encoder = RQVAE(config["in_dim"], config["hidden"], config["e_dim"], [1], residual=config["residual"]).encoder
        encoder.load_state_dict(saved["encoder"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise ValueError(f"{path}: not {what} ({reason(e)})") from None
    encoder.eval()

    @torch.no_grad()
    def encode(x: np.ndarray) -> np.ndarray:
        if x.shape[1] != config["in_dim"]:
            raise ValueError(f"new embeddings have dimension {x.shape[1]}, the encoder {path} takes "
                             f"{config['in_dim']}: embed the new items with the catalogue's embedding model")
        return encoder(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy()

    return encode


def resolve_device(device: str) -> torch.device:
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise SystemExit(f"error: --device must be cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: no CUDA device is visible")
    return torch.device(device)


def parse_hidden(value) -> list[int]:
    try:
        widths = parse_int_list(value)
        if not widths or min(widths) < 1:
            raise ValueError
        return widths
    except ValueError:
        raise SystemExit(f"error: --hidden: expected comma-separated widths, got {value!r}") from None


def check_training(args: Args) -> None:
    """The training flags rqvae and rqkmeans_plus share, before any k-means or epoch."""
    if args.epochs < 0 or args.batch_size < 1 or args.save_every < 1:
        raise SystemExit(f"error: --epochs must be >= 0, --batch_size and --save_every >= 1; got {args.epochs}, "
                         f"{args.batch_size}, {args.save_every}")
    if not (args.lr > 0 and args.beta >= 0):
        raise SystemExit(f"error: --lr must be > 0 and --beta >= 0, got {args.lr} and {args.beta}")
    if (args.resume or args.save_every != Args.save_every) and not args.ckpt_dir:
        raise SystemExit("error: --resume and --save_every need --ckpt_dir (where the checkpoints are)")


def main(args: Args) -> np.ndarray:
    seed_everything(args.seed)
    item_ids, x_np = load_embeddings(args.embedding_path)
    sizes = check_common(args, len(x_np))
    check_training(args)
    if args.e_dim < 1:
        raise SystemExit(f"error: --e_dim must be >= 1 (the latent / codeword width), got {args.e_dim}")
    device, hidden = resolve_device(args.device), parse_hidden(args.hidden)
    with writing_index(args.output_path):  # no minionerec.rq.add_items on this index until all three files are written
        x = torch.as_tensor(x_np, device=device)
        model = RQVAE(x.shape[1], hidden, args.e_dim, sizes, args.beta).to(device)
        if not args.resume:
            kmeans_init(model, x, sizes, args.seed)
        train(model, x, args.epochs, args.batch_size, args.lr, args.seed, args.reset_dead, args.ckpt_dir,
              args.save_every, args.resume)
        codes, residuals, codebooks = codes_for(model, x)
        return finish("rqvae", item_ids, codes, args.output_path, args.collision, residuals, codebooks, sizes,
                      x=x_np, decode=decoder_fn(model), write_encoder=lambda: save_encoder(args.output_path, model))


if __name__ == "__main__":
    run(main, Args)
