"""Baseline — SASRec, the self-attentive sequential recommender, on the same splits as MiniOneRec.

    python sasrec.py --train_file train.csv --eval_file valid.csv --test_file test.csv \
        --sid_index_path Category.index.json --output_dir output/sasrec_Category

Each CSV row is one example: its item history -> its target item, learnt with full softmax
cross-entropy over every catalogue item. Training stops early on valid NDCG@10 (the best epoch is
kept); test is then scored with the shared metrics code (minionerec/ranking/metrics.py) on the top-50 items
of `forward_eval`, excluding nothing. Items are rows of the catalogue (index.json order), as the RL
`sasrec` reward expects, so `output_dir/sasrec.pt` is the `--sasrec_path` of rl.py. Also writes
`output_dir/metrics.json` (per-epoch valid curve, best valid and test metrics).
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from minionerec.run import preflight
from minionerec.run.atomic import atomic_write_text
from minionerec.run.cli import run
from minionerec.data.formats import DataError, load_catalogue
from minionerec.ranking.evaluation import popularity_ranking
from minionerec.ranking.metrics import DEFAULT_KS, compute_metrics, format_table
from minionerec.ranking.sasrec import TOP_K, SASRec, encode_split, save_sasrec, score, top_items



@dataclass
class Args:
    """Train SASRec on the train CSV, early-stop on valid NDCG@10, score test, save the RL reward's model."""

    train_file: str = ""  # train CSV (MiniOneRec format): one example per row
    eval_file: str = ""  # valid CSV: early stopping on NDCG@10
    test_file: str = ""  # test CSV: scored once, with the best-valid weights
    sid_index_path: str = ""  # index.json: the catalogue, item rows in file order (one of this or --info_file)
    info_file: str = ""  # info txt (sid<TAB>title<TAB>item_id), if no --sid_index_path; must list index.json's order
    output_dir: str = "output/sasrec"  # writes sasrec.pt (rl.py --sasrec_path) and metrics.json
    hidden_size: int = 128  # item / position embedding width (tuned on valid, Industrial: 64 -> 128)
    num_blocks: int = 2  # self-attention blocks
    num_heads: int = 1  # attention heads per block
    dropout: float = 0.5  # on embeddings and inside each block (tuned on valid: 0.2 -> 0.5)
    max_len: int = 10  # the most recent items of a history the model reads
    batch_size: int = 256  # training rows per step
    learning_rate: float = 1e-3  # Adam
    weight_decay: float = 0.0  # Adam L2 penalty
    epochs: int = 200  # upper bound; early stopping usually ends sooner
    patience: int = 10  # stop after this many epochs without a better valid NDCG@10
    seed: int = 42  # torch seed: weight init, dropout and the per-epoch shuffle of training rows
    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:N


def check_args(args: Args) -> None:
    """Fail in one line before anything is loaded."""
    preflight.input_files(args, ("train_file", "eval_file", "test_file"),
                          ("train_file", "eval_file", "test_file", "sid_index_path", "info_file"))
    if not (args.sid_index_path or args.info_file):
        raise SystemExit("error: give the catalogue with --sid_index_path or --info_file")
    for flag in ("hidden_size", "num_blocks", "num_heads", "max_len", "batch_size", "epochs", "patience"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"error: --{flag} must be >= 1, got {getattr(args, flag)}")
    if args.hidden_size % args.num_heads:
        raise SystemExit(f"error: --hidden_size {args.hidden_size} is not divisible by --num_heads {args.num_heads}")
    preflight.writable_dir(args.output_dir, "output_dir")
    preflight.device(args.device)


def main(args: Args) -> dict:
    check_args(args)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    torch.manual_seed(args.seed)

    # data: every item id must be a catalogue row, checked before training starts
    try:
        items = list(load_catalogue(args.sid_index_path, args.info_file))
        item_to_row = {item_id: row for row, item_id in enumerate(items)}
        train = encode_split(args.train_file, item_to_row, args.max_len)
        valid = encode_split(args.eval_file, item_to_row, args.max_len)
        test = encode_split(args.test_file, item_to_row, args.max_len)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"[sasrec] {len(items)} items; train/valid/test rows {len(train[2])}/{len(valid[2])}/{len(test[2])}; "
          f"device {device}")

    model = SASRec(len(items), args.hidden_size, args.max_len, args.num_blocks, args.num_heads, args.dropout).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    shuffler = torch.Generator().manual_seed(args.seed)

    best, best_epoch, best_state, curve = -1.0, 0, None, []
    start = time.perf_counter()
    bar = tqdm(range(1, args.epochs + 1), desc="sasrec epochs", unit="epoch")
    for epoch in bar:
        model.train()
        order = torch.randperm(len(train[2]), generator=shuffler)
        total = 0.0
        for lo in range(0, len(order), args.batch_size):
            idx = order[lo:lo + args.batch_size]
            loss = model.loss(*(t[idx].to(device) for t in train))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        valid_metrics = score(top_items(model, valid[0], valid[1], device), valid[2], items)
        curve.append({"epoch": epoch, "train_loss": total / len(order), **valid_metrics})
        if valid_metrics["NDCG@10"] > best:  # strictly better: ties keep the earlier (cheaper) epoch
            best, best_epoch, best_state = valid_metrics["NDCG@10"], epoch, copy.deepcopy(model.state_dict())
        bar.set_postfix(loss=f"{total / len(order):.3f}", valid_ndcg10=f"{valid_metrics['NDCG@10']:.4f}",
                        best=f"{best:.4f}@{best_epoch}")
        if epoch - best_epoch >= args.patience:
            break
    bar.close()
    train_seconds = time.perf_counter() - start

    model.load_state_dict(best_state)
    cf_path = save_sasrec(model, Path(args.output_dir) / "sasrec.pt")
    rows = {
        "SASRec (test)": score(top_items(model, test[0], test[1], device), test[2], items),
        "SASRec (valid, best epoch)": curve[best_epoch - 1],
    }
    # the TOP_K most frequent train targets, for everyone: the floor any recommender must beat
    popular = popularity_ranking([items[t] for t in train[2].tolist()], TOP_K)
    rows["popularity (train, test)"] = compute_metrics([popular] * len(test[2]), [items[t] for t in test[2].tolist()],
                                                       DEFAULT_KS, set(items))
    result = {"args": asdict(args), "n_items": len(items), "best_epoch": best_epoch, "epochs_run": len(curve),
              "train_seconds": round(train_seconds, 1), "cf_path": str(cf_path), "test": rows["SASRec (test)"],
              "valid": rows["SASRec (valid, best epoch)"], "popularity_test": rows["popularity (train, test)"],
              "valid_curve": curve}
    metrics_path = Path(args.output_dir) / "metrics.json"
    atomic_write_text(metrics_path, json.dumps(result, indent=1))
    print(f"[sasrec] best valid NDCG@10 {best:.4f} at epoch {best_epoch}/{len(curve)} ({train_seconds:.0f}s); "
          f"model -> {cf_path} (rl.py --sasrec_path); metrics -> {metrics_path}")
    print(format_table(rows, DEFAULT_KS))
    return result


if __name__ == "__main__":
    run(main, Args)
