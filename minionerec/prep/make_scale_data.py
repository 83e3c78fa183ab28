"""Generate a synthetic dataset of the size you ask for, in the MiniOneRec layout (no downloads).

For measuring how every stage grows with the data (bench/scale.py): catalogues of 10k to 1M items and 100k to
10M train rows. It is the demo generator's world made big: item families ("tastes") with a chain order, a Zipf
popularity over families and within each family, users who mostly shop in a main family, follow its chain
(a refill, the next size) or pick one of its popular items, and sometimes visit a side family. History lengths
vary per user (at least 2 interactions, a long tail up to --max_length); titles and descriptions come from
family, brand, adjective and noun vocabularies, so TF-IDF vectors cluster by family.

Every draw is vectorised over users (one NumPy step per position in the sequence), so the 1M-row set takes
about a minute, most of it writing the CSVs. Deterministic by --seed.

SIDs come from our own quantiser (faiss residual k-means over TF-IDF/SVD vectors, minionerec/rq/) at a shape that
fits the catalogue (`sid_shape`): 3 levels whose codebooks grow with the item count (16 codes for the demo's 320
items, 128 for 100k, 256 from 262k), a 4th level past what 3 levels of 256 hold comfortably.

    python -m minionerec.prep.make_scale_data --output_dir scale_run/data --num_items 100000 --train_rows 1000000
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minionerec.data.inter import convert, write_inter
from minionerec.run.atomic import atomic_write_text
from minionerec.run.cli import run
from minionerec.rq.index import codes_to_sids
from minionerec.rq.rqkmeans import quantize
from minionerec.rq.text2emb import tfidf_embeddings

ADJECTIVES = ("Lead-Free Rosin-Core Fine Thermal Digital Borosilicate Graduated Heavy-Wall Conical Sterile Stainless "
              "Zinc-Plated Hex Metric Self-Tapping Nitrile Anti-Fog Reusable Cut-Resistant Disposable Waterproof "
              "Quick-Set Industrial Clear Two-Part Precision Laser Dial Flexible Silk Carbon-Fiber Ultrasonic "
              "Lint-Free Isopropyl Microfiber Anti-Static Compact Portable Cordless Magnetic Insulated Adjustable "
              "Rechargeable Heavy-Duty Ergonomic Modular Foldable Transparent Reinforced Lightweight").split()
NOUNS = ("Solder-Wire Soldering-Iron Flux-Pen Desoldering-Pump Tip-Cleaner Beaker Flask Test-Tube-Set Petri-Dish "
         "Pipette Screw-Kit Bolt-Assortment Washer-Set Nut-Pack Rivet-Set Gloves Goggles Face-Shield Respirator "
         "Ear-Plugs Epoxy Super-Glue Sealant Tape-Roll Glue-Sticks Caliper Micrometer Tape-Measure Thermometer Scale "
         "Filament Nozzle-Set Build-Plate Resin-Bottle Extruder-Kit Wipes Cleaner Brush-Set Swabs Spray-Bottle "
         "Multimeter Oscilloscope Power-Supply Breadboard Jumper-Wires Clamp Vise Drill-Bits Saw-Blade Sandpaper "
         "Label-Maker Notebook Binder Stapler Pen-Set Marker Folder Envelope Desk-Lamp Shelf").split()
BRANDS = ("Acme Orion Vertex Nordic Helix Summit Atlas Zenith Apex Boreal Cobalt Delta Ember Falcon Granite Harbor "
          "Iris Juniper Kestrel Lumen Meridian Nimbus Onyx Pioneer Quartz Radiant Sierra Titan Umbra Vector").split()
SYLLABLES = "ka lo mi ne ru ta vo shi pe da zu ri mo ga le fi no sa ko be".split()


@dataclass
class Args:
    """Write a synthetic dataset of a chosen size (catalogue, interactions, SIDs) in the MiniOneRec layout."""

    output_dir: str = "scale_run/data"  # MiniOneRec layout written here (raw/ holds the .inter files)
    category: str = "Scale"  # file-name stem of every file
    num_items: int = 10_000  # catalogue size
    train_rows: int = 100_000  # train rows, to within one user's rows (valid and test get an eighth of it each: an 8:1:1 split by time)
    items_per_family: int = 100  # items per family (taste); the last family may be smaller
    mean_length: float = 8.0  # mean interactions per user (>= 2; geometric tail)
    max_length: int = 50  # longest interaction sequence of a user
    max_history: int = 10  # as upstream: at most 10 history items per row
    popularity_exponent: float = 1.0  # Zipf exponent of family and within-family popularity
    sid_levels: int = 0  # SID levels; 0 = sid_shape's choice for the catalogue
    codebook_size: int = 0  # codes per level; 0 = sid_shape's choice
    embedding_dim: int = 64  # TF-IDF/SVD dimensions the SIDs are quantised from
    seed: int = 0  # NumPy generator for catalogue and sequences; also the SVD and k-means seed


def sid_shape(num_items: int) -> tuple[int, int]:
    """(levels, codes per level) for a catalogue: the smallest power of two >= 16 with codes^3 >= 4x the items (room
    for the collision re-assignment), at most 256 codes (one byte, as upstream), and a 4th level beyond that."""
    codes = 16
    while codes < 256 and codes ** 3 < 4 * num_items:
        codes *= 2
    return (3 if codes ** 3 >= 4 * num_items else 4), codes


def check_args(args: Args) -> None:
    for flag, low in (("num_items", 2), ("train_rows", 8), ("items_per_family", 1), ("max_length", 2),
                      ("max_history", 1), ("embedding_dim", 2)):
        if getattr(args, flag) < low:
            raise SystemExit(f"error: --{flag} must be an integer >= {low}, got {getattr(args, flag)}")
    if not 2 <= args.mean_length <= args.max_length:
        raise SystemExit(f"error: --mean_length must be in [2, --max_length {args.max_length}], got {args.mean_length}")
    if not math.isfinite(args.popularity_exponent) or args.popularity_exponent < 0:
        raise SystemExit(f"error: --popularity_exponent must be a finite number >= 0, got {args.popularity_exponent}")
    if args.sid_levels < 0 or args.codebook_size < 0 or (args.sid_levels > 0) != (args.codebook_size > 0):
        raise SystemExit("error: give both --sid_levels and --codebook_size (>= 1), or neither (sid_shape chooses)")


def family_layout(num_items: int, items_per_family: int) -> tuple[np.ndarray, np.ndarray]:
    """(first item, size) of each family; item ids are 0..num_items-1, each family a contiguous chain."""
    starts = np.arange(0, num_items, items_per_family)
    return starts, np.minimum(items_per_family, num_items - starts)


def family_name(f: int) -> str:
    """A pronounceable made-up word per family (3 syllables, distinct for up to 8,000 families)."""
    n = len(SYLLABLES)
    return (SYLLABLES[f % n] + SYLLABLES[f // n % n] + SYLLABLES[f // n // n % n]).capitalize()


def make_catalogue(num_items: int, items_per_family: int, rng: np.random.Generator) -> dict[str, dict]:
    """item.json content: a family's items share its name, two nouns and a brand pool, so their texts cluster."""
    starts, sizes = family_layout(num_items, items_per_family)
    nouns = rng.integers(len(NOUNS), size=(len(starts), 2))
    brands = rng.integers(len(BRANDS), size=(len(starts), 3))
    adjective = rng.integers(len(ADJECTIVES), size=num_items)
    noun_pick, brand_pick = rng.integers(2, size=num_items), rng.integers(3, size=num_items)
    meta = {}
    for f, (start, size) in enumerate(zip(starts.tolist(), sizes.tolist())):
        name = family_name(f)
        for k in range(size):
            i = start + k
            noun = NOUNS[nouns[f, noun_pick[i]]].replace("-", " ")
            brand = BRANDS[brands[f, brand_pick[i]]]
            title = f"{brand} {ADJECTIVES[adjective[i]]} {noun} {name} Size {k // 10 + 1} Model {name[:3].upper()}-{k}"
            description = f"{ADJECTIVES[adjective[i]]} {noun.lower()} of the {name} line; pairs well with other {name} supplies."
            meta[str(i)] = {"title": title, "description": description, "brand": brand, "categories": name}
    return meta


def zipf_draw(rng: np.random.Generator, sizes: np.ndarray, exponent: float) -> np.ndarray:
    """One rank in [0, sizes[j]) per entry, P(rank r) ~ 1 / (r + 1)^exponent (inverse CDF over the largest size)."""
    weights = 1.0 / np.arange(1, int(sizes.max()) + 1) ** exponent
    cdf = np.cumsum(weights)
    # draw within each entry's own range: scale the uniform by that range's share of the CDF
    u = rng.random(len(sizes)) * cdf[sizes - 1]
    return np.searchsorted(cdf, u, side="right").clip(max=sizes - 1)


def user_lengths(rows_needed: int, mean_length: float, max_length: int, rng: np.random.Generator) -> np.ndarray:
    """Interactions per user (2 + a geometric tail, capped) until their rows (length - 1 each) reach rows_needed."""
    p = 1.0 / (mean_length - 1)  # 2 + Geometric(p) - 1 has mean 1 + 1/p = mean_length
    lengths = np.empty(0, dtype=np.int64)
    while (lengths - 1).sum() < rows_needed:
        more = (1 + rng.geometric(p, size=max(1024, int(rows_needed / (mean_length - 1) * 1.1)))).clip(max=max_length)
        lengths = np.concatenate([lengths, more])
    cut = int(np.searchsorted(np.cumsum(lengths - 1), rows_needed)) + 1
    return lengths[:cut]


def make_sequences(args: Args, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(items [U, max_len] with -1 past each user's end, lengths [U]). Per user: a main and a side family; the
    next item continues the chain (50%) or is a popular item of the main (80%) or side family."""
    starts, sizes = family_layout(args.num_items, args.items_per_family)
    lengths = user_lengths(math.ceil(args.train_rows / 0.8), args.mean_length, args.max_length, rng)
    users, width = len(lengths), int(lengths.max())
    main = zipf_draw(rng, np.full(users, len(starts)), args.popularity_exponent)
    side = (main + 1 + rng.integers(max(len(starts) - 1, 1), size=users)) % len(starts)
    family = main.copy()
    position = zipf_draw(rng, sizes[family], args.popularity_exponent)
    items = np.full((users, width), -1, dtype=np.int64)
    items[:, 0] = starts[family] + position
    for t in range(1, width):
        chain = rng.random(users) < 0.5
        family = np.where(chain, family, np.where(rng.random(users) < 0.8, main, side))
        popular = zipf_draw(rng, sizes[family], args.popularity_exponent)
        position = np.where(chain, (position + 1) % sizes[family], popular)
        items[:, t] = np.where(t < lengths, starts[family] + position, -1)
    return items, lengths


def split_rows(items: np.ndarray, lengths: np.ndarray, max_history: int, rng: np.random.Generator):
    """Rows (user, history, target) sorted by the target's time, split 8:1:1 as upstream does."""
    users = np.repeat(np.arange(len(lengths)), lengths - 1)  # one row per (user, t >= 1)
    t = np.concatenate([np.arange(1, n) for n in lengths.tolist()])
    start = rng.uniform(0, 1000, size=len(lengths))
    gaps = rng.uniform(1, 20, size=len(users))
    order = np.argsort(start[users] + t * gaps, kind="stable")
    users, t = users[order], t[order]
    names = [f"U{u:07d}" for u in range(len(lengths))]
    rows = [(names[u], [str(x) for x in items[u, max(0, s - max_history):s].tolist()], str(items[u, s]))
            for u, s in zip(users.tolist(), t.tolist())]
    n_train, n_valid = int(len(rows) * 0.8), int(len(rows) * 0.1)
    return {"train": rows[:n_train], "valid": rows[n_train:n_train + n_valid], "test": rows[n_train + n_valid:]}


def make_sids(meta: dict[str, dict], args: Args) -> dict[str, list[str]]:
    """TF-IDF/SVD text vectors -> faiss residual k-means codes at the catalogue's shape -> collision-free SIDs."""
    levels, codes = (args.sid_levels, args.codebook_size) if args.sid_levels else sid_shape(len(meta))
    texts = [f"{m['title']}. {m['description']}" for m in meta.values()]
    vectors = tfidf_embeddings(texts, dim=args.embedding_dim, seed=args.seed)
    # 20 iterations: the default 50 triples the time on 1M items for no change a benchmark needs
    return dict(zip(meta, codes_to_sids(quantize(vectors, levels=levels, codebook_size=codes, seed=args.seed,
                                                 niter=20))))


def make_scale_data(args: Args) -> dict[str, int]:
    check_args(args)
    rng = np.random.default_rng(args.seed)
    meta = make_catalogue(args.num_items, args.items_per_family, rng)
    items, lengths = make_sequences(args, rng)
    splits = split_rows(items, lengths, args.max_history, rng)
    raw = Path(args.output_dir, "raw")
    raw.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        write_inter(rows, raw / f"{args.category}.{split}.inter")
    del splits
    index = make_sids(meta, args)
    atomic_write_text(raw / f"{args.category}.item.json", json.dumps(meta, indent=1))
    atomic_write_text(raw / f"{args.category}.index.json", json.dumps(index))
    return convert(raw, args.category, raw / f"{args.category}.item.json", raw / f"{args.category}.index.json",
                   args.output_dir)


def main(args: Args) -> None:
    counts = make_scale_data(args)
    print(f"scale data in {args.output_dir}: {counts} rows, {args.num_items:,} items")


if __name__ == "__main__":
    run(main, Args)
