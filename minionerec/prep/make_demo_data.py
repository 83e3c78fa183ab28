"""Generate a small, deterministic demo dataset in the MiniOneRec layout (no downloads).

The catalogue has a few product families ("tastes"); each item has a title and a description
drawn from its family's words. Users mostly shop in one or two families and follow sequential
habits: after an item they often buy the next item of its family's chain (a refill, the next
size). That gives a recommender something real to learn, so demo metrics beat popularity.

Pipeline: catalogue + interaction log -> .inter files -> SIDs (balanced RQ-Kmeans over TF-IDF/SVD
text vectors, minionerec/rq/) -> minionerec.data.inter.convert -> train/valid/test CSVs, info txt, index json.

    python -m minionerec.prep.make_demo_data --output_dir demo_run/data
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


from minionerec.data.inter import convert, write_inter
from minionerec.prep.make_scale_data import sid_shape
from minionerec.run.atomic import atomic_write_text
from minionerec.run.cli import run
from minionerec.rq.balanced_rqkmeans import quantize
from minionerec.rq.index import codes_to_sids
from minionerec.rq.text2emb import tfidf_embeddings

FAMILIES = {
    "soldering": (["Lead-Free", "Rosin-Core", "Fine", "Thermal", "Digital"], ["Solder Wire", "Soldering Iron", "Flux Pen", "Desoldering Pump", "Tip Cleaner"]),
    "glassware": (["Borosilicate", "Graduated", "Heavy-Wall", "Conical", "Sterile"], ["Beaker", "Flask", "Test Tube Set", "Petri Dish", "Pipette"]),
    "fasteners": (["Stainless", "Zinc-Plated", "Hex", "Metric", "Self-Tapping"], ["Screw Kit", "Bolt Assortment", "Washer Set", "Nut Pack", "Rivet Set"]),
    "safety": (["Nitrile", "Anti-Fog", "Reusable", "Cut-Resistant", "Disposable"], ["Gloves", "Goggles", "Face Shield", "Respirator", "Ear Plugs"]),
    "adhesives": (["Waterproof", "Quick-Set", "Industrial", "Clear", "Two-Part"], ["Epoxy", "Super Glue", "Sealant", "Tape Roll", "Hot Glue Sticks"]),
    "measuring": (["Digital", "Precision", "Stainless", "Laser", "Dial"], ["Caliper", "Micrometer", "Tape Measure", "Thermometer", "Scale"]),
    "3d_printing": (["PLA", "PETG", "Flexible", "Silk", "Carbon-Fiber"], ["Filament", "Nozzle Set", "Build Plate", "Resin Bottle", "Extruder Kit"]),
    "cleaning": (["Ultrasonic", "Lint-Free", "Isopropyl", "Microfiber", "Anti-Static"], ["Wipes", "Cleaner", "Brush Set", "Swabs", "Spray Bottle"]),
}
BRANDS = ["Acme", "Orion", "Vertex", "Nordic", "Helix", "Summit", "Atlas", "Zenith"]


@dataclass
class Args:
    """Write the demo dataset (catalogue, interactions, SIDs) in the MiniOneRec layout."""

    output_dir: str = "demo_run/data"  # MiniOneRec layout written here (raw/ holds the .inter files)
    category: str = "Demo"  # file-name stem of every file
    items_per_family: int = 40  # 8 families -> 320 items
    num_users: int = 600  # users, one interaction sequence each
    min_len: int = 6  # interactions per user, inclusive bounds
    max_len: int = 14  # see --min_len
    max_history: int = 10  # as upstream: at most 10 history items per row
    seed: int = 0  # NumPy generator for catalogue and sequences; also the TF-IDF SVD and SID k-means seed


def make_catalogue(items_per_family: int, rng: np.random.Generator) -> tuple[dict, list[list[str]]]:
    """item.json content and, per family, its items in chain order."""
    meta, chains = {}, []
    for family, (adjectives, nouns) in FAMILIES.items():
        chain = []
        for k in range(items_per_family):
            item_id = str(len(meta))
            adjective, noun = adjectives[rng.integers(len(adjectives))], nouns[k % len(nouns)]
            brand = BRANDS[rng.integers(len(BRANDS))]
            size = (k // len(nouns)) + 1
            title = f"{brand} {adjective} {noun} Size {size} Model {family[:3].upper()}-{k:02d}"
            description = (f"{adjective} {noun.lower()} for {family.replace('_', ' ')} work. "
                           f"Pairs well with other {family.replace('_', ' ')} supplies; size {size}.")
            meta[item_id] = {"title": title, "description": description, "brand": brand, "categories": family}
            chain.append(item_id)
        chains.append(chain)
    return meta, chains


def make_sequences(chains, args: Args, rng: np.random.Generator) -> list[list[str]]:
    """Each user: a main and a side family; next item follows the chain (60%) or the taste (40%)."""
    popularity = 1.0 / np.arange(1, len(chains[0]) + 1) ** 0.8  # Zipf-like within a family
    popularity /= popularity.sum()
    sequences = []
    for _ in range(args.num_users):
        main, side = rng.choice(len(chains), size=2, replace=False)
        length = int(rng.integers(args.min_len, args.max_len + 1))
        family = main
        position = int(rng.choice(len(chains[family]), p=popularity))
        seq = [chains[family][position]]
        while len(seq) < length:
            if rng.random() < 0.6:  # sequential habit: the next item of the chain
                position = (position + 1) % len(chains[family])
            else:  # taste: a popular item of the main (80%) or side family
                family = main if rng.random() < 0.8 else side
                position = int(rng.choice(len(chains[family]), p=popularity))
            seq.append(chains[family][position])
        sequences.append(seq)
    return sequences


def split_rows(sequences, max_history: int, rng: np.random.Generator):
    """Rows (user, history, target) sorted by the target's time, split 8:1:1 as upstream does."""
    timed = []
    for u, seq in enumerate(sequences):
        start = rng.uniform(0, 1000)
        for t in range(1, len(seq)):
            timed.append((start + t * rng.uniform(1, 20), f"U{u:04d}", seq[max(0, t - max_history):t], seq[t]))
    timed.sort(key=lambda r: r[0])
    rows = [r[1:] for r in timed]
    n_train, n_valid = int(len(rows) * 0.8), int(len(rows) * 0.1)
    return {"train": rows[:n_train], "valid": rows[n_train:n_train + n_valid], "test": rows[n_train + n_valid:]}


def make_demo_data(output_dir, category="Demo", items_per_family=40, num_users=600, min_len=6, max_len=14,
                   max_history=10, seed=0) -> dict[str, int]:
    args = Args(str(output_dir), category, items_per_family, num_users, min_len, max_len, max_history, seed)
    rng = np.random.default_rng(seed)
    meta, chains = make_catalogue(items_per_family, rng)
    splits = split_rows(make_sequences(chains, args, rng), max_history, rng)
    raw = Path(output_dir, "raw")
    raw.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        write_inter(rows, raw / f"{category}.{split}.inter")
    item_ids = list(meta)
    texts = [f"{meta[i]['title']}. {meta[i]['description']}" for i in item_ids]
    # 3 levels x 16 codes for the demo's 320 items (4,096 SIDs, collision-free by rq's last-level re-assignment);
    # larger catalogues get larger codebooks (sid_shape: 3 x 64 for 20k items)
    levels, codebook_size = sid_shape(len(meta))
    codes = quantize(tfidf_embeddings(texts, dim=32, seed=seed), levels=levels, codebook_size=codebook_size, seed=seed)
    index = dict(zip(item_ids, codes_to_sids(codes)))
    atomic_write_text(raw / f"{category}.item.json", json.dumps(meta, indent=1))
    atomic_write_text(raw / f"{category}.index.json", json.dumps(index))
    return convert(raw, category, raw / f"{category}.item.json", raw / f"{category}.index.json", output_dir)


def main(args: Args) -> None:
    counts = make_demo_data(**vars(args))
    print(f"demo data in {args.output_dir}: {counts}")


if __name__ == "__main__":
    run(main, Args)
