"""A small SASRec (self-attentive sequential recommender) and its save/load helpers.

Used here as the collaborative-filtering scorer of the `sasrec` RL reward: given a user's history
of item rows it scores every catalogue item. Item rows are positions in index.json order (for the
public release these equal the integer item ids); row `n_items` is padding, as upstream.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from minionerec.data.formats import DataError, load_split
from minionerec.ranking.metrics import DEFAULT_KS, compute_metrics

TOP_K = 50  # ranking length scored, as evaluate.py's 50 beams


class SASRec(nn.Module):
    """Item + position embeddings, causal self-attention blocks, a linear head over the items."""

    def __init__(self, n_items: int, hidden_size: int = 64, max_len: int = 10, num_blocks: int = 2,
                 num_heads: int = 1, dropout: float = 0.2):
        super().__init__()
        self.config = dict(n_items=n_items, hidden_size=hidden_size, max_len=max_len, num_blocks=num_blocks,
                           num_heads=num_heads, dropout=dropout)
        self.n_items, self.max_len = n_items, max_len
        self.item_emb = nn.Embedding(n_items + 1, hidden_size, padding_idx=n_items)  # last row: padding
        self.pos_emb = nn.Embedding(max_len, hidden_size)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(hidden_size, num_heads, dim_feedforward=hidden_size, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, n_items)

    def forward(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """history [B, T] right-padded with n_items, lengths [B] (>= 1) -> scores [B, n_items]."""
        history = history[:, : self.max_len]
        T = history.shape[1]
        positions = torch.arange(T, device=history.device)
        x = self.dropout(self.item_emb(history) + self.pos_emb(positions))  # [B, T, H]
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=history.device), diagonal=1)
        padding = history == self.n_items  # [B, T]
        # Causal attention never looks right, so right padding does not touch valid positions.
        x = self.norm(self.blocks(x, mask=causal, src_key_padding_mask=padding))  # [B, T, H]
        last = (lengths.clamp(min=1, max=T) - 1).to(history.device)  # [B]
        state = x[torch.arange(x.shape[0], device=x.device), last]  # [B, H]: state after the last real item
        return self.head(state)  # [B, n_items]

    def loss(self, history: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Next-item training loss: full softmax cross-entropy over every catalogue item.

        history [B, T], lengths [B] as in `forward`; targets [B] item rows -> mean loss (scalar).
        """
        return nn.functional.cross_entropy(self.forward(history, lengths), targets)

    @torch.no_grad()
    def forward_eval(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Inference scores (dropout off), the interface the RL reward calls."""
        was_training = self.training
        self.eval()
        scores = self.forward(history, lengths)
        self.train(was_training)
        return scores


def pad_histories(histories: list[list[int]], n_items: int, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists of item rows -> (history [B, max_len] right-padded with n_items, lengths [B]); keeps the last max_len."""
    rows = [h[-max_len:] for h in histories]
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    padded = torch.full((len(rows), max_len), n_items, dtype=torch.long)
    for i, r in enumerate(rows):
        padded[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return padded, lengths


def save_sasrec(model: SASRec, path) -> Path:
    """One file with the constructor arguments and the weights, so `load_sasrec` needs nothing else."""
    from minionerec.run.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:  # rl.py may read it while a new one is written
        torch.save({"config": model.config, "state_dict": model.state_dict()}, tmp)
    return path


def load_sasrec(path, device: str | torch.device = "cpu") -> SASRec:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SASRec checkpoint not found")
    blob = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(blob, dict) or "config" not in blob or "state_dict" not in blob:
        raise ValueError(f"{path}: not a SASRec checkpoint written by minionerec.ranking.sasrec.save_sasrec")
    model = SASRec(**blob["config"]).to(device)
    model.load_state_dict(blob["state_dict"])
    return model.eval()


def encode_split(path: str, item_to_row: dict[str, int], max_len: int):
    """A split CSV -> (history [N, max_len] right-padded, lengths [N], targets [N]) in item rows."""
    df = load_split(path)
    histories, targets = [], []
    for i, (history, target) in enumerate(zip(df["history_item_id"], df["item_id"]), start=2):
        unknown = [x for x in [*history, target] if x not in item_to_row]
        if unknown:
            raise DataError(f"{path}: row {i}: item id {unknown[0]} is not in the catalogue")
        if not history:
            raise DataError(f"{path}: row {i}: empty history (SASRec needs at least one item)")
        histories.append([item_to_row[x] for x in history])
        targets.append(item_to_row[target])
    history, lengths = pad_histories(histories, len(item_to_row), max_len)
    return history, lengths, torch.tensor(targets, dtype=torch.long)


@torch.no_grad()
def top_items(model: SASRec, history, lengths, device, batch_size: int = 1024) -> torch.Tensor:
    """Top-TOP_K item rows per history, best first: [N, TOP_K]. Nothing is masked (history items may repeat)."""
    out = []
    for start in range(0, len(history), batch_size):
        scores = model.forward_eval(history[start:start + batch_size].to(device),
                                    lengths[start:start + batch_size].to(device))  # [b, n_items]
        out.append(scores.topk(min(TOP_K, scores.shape[1]), dim=1).indices.cpu())
    return torch.cat(out)


def score(ranked_rows: torch.Tensor, targets: torch.Tensor, items: list[str]) -> dict:
    """Shared HR/NDCG over item ids (the same code evaluate.py uses on SIDs)."""
    predictions = [[items[r] for r in row] for row in ranked_rows.tolist()]
    return compute_metrics(predictions, [items[t] for t in targets.tolist()], DEFAULT_KS, set(items))


def score_by_sid(ranked_rows: torch.Tensor, targets: torch.Tensor, items: list[str], sid_of: dict[str, str]) -> dict:
    """The same ranked items scored as MiniOneRec is, by SID: each item becomes its SID string (`sid_of`), a SID
    already listed is dropped, and a hit is the target item's SID. Items that share a SID then count as one, as they
    do for a model that writes SIDs; scored by item id (`score`) SASRec must still tell them apart."""
    from minionerec.ranking.shared_sids import as_sids

    predictions = as_sids([[items[r] for r in row] for row in ranked_rows.tolist()], sid_of)
    return compute_metrics(predictions, [sid_of[items[t]] for t in targets.tolist()], DEFAULT_KS,
                           set(sid_of.values()))
