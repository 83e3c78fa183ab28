"""The quality bench's SID stage: which Semantic IDs a dataset trains on (`python -m bench.quality --sids`).

`release` is the dataset's own index.json, as given. `<encoder>+<quantiser>` (tfidf+rqkmeans, minilm+rqkmeans, ...)
builds an index from the items' title + description: minionerec.rq.text2emb embeds them (ENCODERS: the method and local model),
an rq quantiser (the registry minionerec.rq.QUANTISERS names them) turns the vectors into `--sid_shape` codes (3x256 by
default; collisions re-assigned, rq's default), and minionerec.rq.reindex rewrites the dataset's splits with it into
<out>/sids/<candidate>/, a MiniOneRec-layout data directory the bench reads like any other (same rows and item ids,
new SIDs). The embeddings are cached per dataset and encoder in <out>/sids/embeddings/<encoder>/, so two quantisers
of one encoder embed once. `auto` builds every `--sid_candidates` entry; bench/quality/sid_choice.py trains SFT on
each and keeps the best on valid by item. Each candidate's report is minionerec.rq.index.sid_stats of its index. A catalogue
whose text minionerec.rq.text2emb would refuse (an item with an empty title and description) keeps the release SIDs, with a
note saying why.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path

from minionerec.rq import QUANTISERS  # the quantiser registry: name -> module

ROOT = Path(__file__).resolve().parents[1]
RELEASE = "release"
CANDIDATES = "release,tfidf+rqkmeans,minilm+rqkmeans"  # what --sids auto compares unless told
# encoder name -> (minionerec.rq.text2emb --method, local model directory from the repository root, the make target writing it)
ENCODERS = {"tfidf": ("tfidf", "", ""),
            "minilm": ("sentence_transformers", "models/all-MiniLM-L6-v2", "make minilm"),
            "smollm2": ("causal_lm", "models/SmolLM2-135M", "make pretrained")}
QUANTISER_SEED = 0  # rq's default: a candidate's SIDs are the same for every training seed (other flags: each
# quantiser's own defaults)


@dataclass(frozen=True)
class Candidate:
    """One SID source: the release index, or an encoder + quantiser pair built from item text."""

    encoder: str = ""  # an ENCODERS name; "" = the release
    quantiser: str = ""  # a QUANTISERS name; "" = the release

    @property
    def name(self) -> str:
        return f"{self.encoder}+{self.quantiser}" if self.encoder else RELEASE


@dataclass(frozen=True)
class SidPlan:
    """What --sids asks for: the release as given, one candidate, or the best of several (auto)."""

    mode: str  # release | one | auto
    candidates: tuple[Candidate, ...]
    levels: int  # of every built index
    codebook_size: int  # codes per level of every built index


@dataclass(frozen=True)
class Built:
    """A candidate ready to train on: its data directory and its index's figures."""

    name: str
    data_dir: str
    stats: dict  # minionerec.rq.index.sid_stats


def parse_candidate(spec: str, flag: str = "--sids") -> Candidate:
    """'release' or '<encoder>+<quantiser>'; anything else is a one-line error naming the flag and the choices."""
    spec = spec.strip()
    if spec == RELEASE:
        return Candidate()
    encoder, plus, quantiser = spec.partition("+")
    if not plus or not encoder or not quantiser or "+" in quantiser:
        joined = "; candidates are ','-joined" if flag == "--sid_candidates" else ""
        raise SystemExit(f"error: {flag}: {spec!r} is not release or <encoder>+<quantiser> "
                         f"(e.g. tfidf+rqkmeans{joined})")
    if encoder not in ENCODERS:
        raise SystemExit(f"error: {flag} {spec}: unknown encoder {encoder!r}; encoders: {', '.join(ENCODERS)}")
    if quantiser not in QUANTISERS:
        raise SystemExit(f"error: {flag} {spec}: unknown quantiser {quantiser!r}; quantisers: {', '.join(QUANTISERS)}")
    return Candidate(encoder, quantiser)


def parse_shape(shape: str) -> tuple[int, int]:
    """'3x256' -> (3, 256): levels x codes per level."""
    levels, x, size = str(shape).partition("x")
    if not (x and levels.isdigit() and size.isdigit() and int(levels) >= 1 and int(size) >= 2):
        raise SystemExit(f"error: --sid_shape must be <levels>x<codes per level> like 3x256, got {shape!r}")
    return int(levels), int(size)


def split_candidates(text: str) -> list[str]:
    """','-joined names. fire hands bare words alone ("release,minilm") over as a tuple, which the flag's str() turns
    into "('release', 'minilm')": read back, so the error names the bad entry."""
    if text.startswith("("):
        with contextlib.suppress(ValueError, SyntaxError):
            return [str(x) for x in ast.literal_eval(text)]
    return text.split(",")


def parse(sids: str, candidates: str, shape: str) -> SidPlan:
    """--sids, --sid_candidates (","-joined, used by auto) and --sid_shape -> a SidPlan; every check is a one-line
    error, the encoders' local models included, before anything is built or trained."""
    levels, size = parse_shape(shape)
    if sids == "auto":
        chosen = tuple(parse_candidate(spec, "--sid_candidates") for spec in split_candidates(candidates))
        names = [c.name for c in chosen]
        if len(set(names)) != len(names):
            raise SystemExit(f"error: --sid_candidates repeats a candidate: {candidates!r}")
        mode = "auto"
    else:
        chosen = (parse_candidate(sids),)
        mode = RELEASE if chosen[0].name == RELEASE else "one"
    for encoder in dict.fromkeys(c.encoder for c in chosen if c.encoder):
        _, model, make = ENCODERS[encoder]
        if model and not (ROOT / model / "config.json").is_file():
            raise SystemExit(f"error: --sids: encoder {encoder} needs the local model {model} ({make} writes it; "
                             f"nothing is downloaded)")
    return SidPlan(mode, chosen, levels, size)


def text_problem(meta_path) -> str | None:
    """Why minionerec.rq.text2emb would refuse this catalogue's default text (title + description), else None: a field no item
    has, or an item without usable text (text2emb's own rule, textless_items)."""
    from minionerec.data.formats import load_item_meta
    from minionerec.rq.text2emb import Args, item_text, parse_fields, textless_items

    meta = load_item_meta(meta_path)
    try:
        fields = parse_fields(Args.fields, meta)
    except SystemExit as e:
        return str(e.code).removeprefix("error: ")
    empty = textless_items(list(meta), [item_text(info, fields) for info in meta.values()])
    if empty:
        return f"item {empty[0]} has an empty {' and '.join(fields)} ({len(empty)} of {len(meta)} items)"
    return None


def embeddings(encoder: str, meta_path: Path, cache: Path) -> Path:
    """The encoder's item embeddings (.npy, with its .ids.json), computed once per dataset and encoder: a cached
    file is used again while the item.json it embedded is byte for byte the same (another quantiser, or a rerun);
    its SHA-256 is kept beside the embeddings, written after them."""
    from minionerec.run.atomic import atomic_write_text
    from minionerec.rq import text2emb
    from minionerec.rq.common import ids_path

    path = cache / encoder / "items.emb.npy"
    stamp = path.with_suffix(".item_json.sha256")
    digest = hashlib.sha256(meta_path.read_bytes()).hexdigest()
    if path.is_file() and ids_path(path).is_file() and stamp.is_file() and stamp.read_text() == digest:
        print(f"[sids] {encoder} embeddings: {path} (cached)", flush=True)
        return path
    method, model, _ = ENCODERS[encoder]
    text2emb.main(text2emb.Args(item_meta_path=str(meta_path), output_path=str(path), method=method,
                                model_path=str(ROOT / model) if model else ""))
    atomic_write_text(stamp, digest)
    return path


def build(candidate: Candidate, plan: SidPlan, data_dir: str, category: str, sid_dir: Path) -> Built:
    """Embed (cached), quantise into sid_dir/<name>/index/, and reindex the dataset into sid_dir/<name>/."""
    from minionerec.rq.index import load_index_codes, sid_stats
    from minionerec.rq.reindex import reindex

    out = sid_dir / candidate.name
    meta_path = Path(data_dir) / "index" / f"{category}.item.json"
    emb = embeddings(candidate.encoder, meta_path, sid_dir / "embeddings")
    index_path = out / "index" / f"{category}.index.json"  # where reindex puts the index: it is not copied again
    module = QUANTISERS[candidate.quantiser]
    quantiser = importlib.import_module(module)
    print(f"[sids] {candidate.name}: {module} {plan.levels}x{plan.codebook_size} -> {index_path}", flush=True)
    quantiser.main(quantiser.Args(embedding_path=str(emb), output_path=str(index_path), levels=plan.levels,
                                  codebook_size=str(plan.codebook_size), seed=QUANTISER_SEED))
    reindex(data_dir, category, index_path, out)
    _, codes = load_index_codes(index_path)
    return Built(candidate.name, str(out), sid_stats(codes, [plan.codebook_size] * plan.levels))


def release(data_dir: str, category: str) -> Built:
    """The dataset as given; its index's figures (codebook sizes read off the codes)."""
    from minionerec.rq.index import load_index_codes, sid_stats

    _, codes = load_index_codes(Path(data_dir) / "index" / f"{category}.index.json")
    return Built(RELEASE, data_dir, sid_stats(codes))


def prepare(plan: SidPlan, data_dir: str, category: str, sid_dir: Path) -> tuple[list[Built], str | None]:
    """Every candidate of the plan, built, in the plan's order; without usable item text only the release, and a
    note saying why (the second value, else None)."""
    problem = text_problem(Path(data_dir) / "index" / f"{category}.item.json")
    if problem and any(c.encoder for c in plan.candidates):
        skipped = ", ".join(c.name for c in plan.candidates if c.encoder)
        note = f"no usable item text ({problem}): keeping the release SIDs, not {skipped}"
        return [release(data_dir, category)], note
    return [build(c, plan, data_dir, category, sid_dir) if c.encoder else release(data_dir, category)
            for c in plan.candidates], None


def format_table(title: str, built: list[Built], scores: dict[str, dict], chosen: str) -> str:
    """The candidates table: collisions, codes used per level, items per first-level code (max / median), and where
    scored the valid NDCG@10 by SID and by item and the paired per-user difference by item to the release
    (mean +/- SE)."""
    lines = [f"== {title}",
             f"{'candidate':26s} {'collisions':>16s} {'codes used':>14s} {'1st-level max/median':>21s} "
             f"{'valid NDCG@10 SID / item':>24s} {'vs release (paired SE)':>23s}"]
    for b in built:
        s, score = b.stats, scores.get(b.name, {})
        ndcg = f"{score['ndcg10']:.4f} / {score['ndcg10_by_item']:.4f}" if "ndcg10" in score else "-"
        d = score.get("vs_release")
        paired = f"{d['mean']:+.4f} +/- {d['se']:.4f}" if d else "-"
        lines.append(f"{b.name + (' *' if b.name == chosen else ''):26s} "
                     f"{str(s['collision_groups']) + ' (' + str(s['collided_items']) + ' items)':>16s} "
                     f"{'/'.join(map(str, s['codes_used'])):>14s} "
                     f"{s['first_level_items_max']:>10d} / {s['first_level_items_median']:<8g} "
                     f"{ndcg:>24s} {paired:>23s}")
    lines.append(f"* = the SIDs this dataset trains on: {chosen}")
    return "\n".join(lines)
