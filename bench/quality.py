"""Quality benchmark: does MiniOneRec beat SASRec, and does RL beat SFT? Every figure over several training seeds.

    python -m bench.quality --preset cpu            # Industrial + Office (../shared/data/Amazon), 3 seeds, SIDs chosen per dataset
    python -m bench.quality --preset cpu --category Office_Products --stages sft --seeds 42+1+2+3+4 --threads 1
    python -m bench.quality --preset cpu --set "sft.learning_rate=1e-3,rl.beta=0,tiny.hidden_size=64"
    python -m bench.quality --preset smoke --data_dir DIR --category Demo   # seconds (the test)
    python -m bench.quality --preset cpu --sid_candidates release,tfidf+rqkmeans,minilm+rqkmeans
                                                    # per dataset, the SIDs with the best SFT valid NDCG@10 by item (first seed)
    python -m bench.quality --preset cpu --sids release --category Office_Products --seeds 2   # one piece, SIDs pinned
    python -m bench.quality --preset gpu            # bigger model, more steps (untested here: no GPU was lent)
    python -m bench.quality --preset gpu_pretrained # SmolLM2-135M vs its random-weight twin vs SASRec (docs/pretrained.md)
    python -m bench.quality --preset smoke --base_model DIR --category Industrial_and_Scientific --threads 1
                                                    # the same two arms on CPU in minutes (DIR: any model directory)

Stages, each timed: popularity -> SASRec (sasrec.py) -> tiny from-scratch Qwen2 (minionerec.model.tiny; with a
pretrained base model, `--base_model` or the preset's, that directory instead) -> SFT (sft.py) -> evaluate (evaluate.py) -> GRPO (rl.py, from the SFT checkpoint) -> evaluate.
The stages run once per training seed (`--seeds 42+1+2`, the preset's by default): the seed sets the tiny
model's random init, the data order of SFT and GRPO and SASRec's init, so each seed is a full, independent
run. Tables give every seed's figure, their mean and spread (max - min); differences (RL - SFT, and
`bench/compare_seeds.py` between two bench runs) are paired over seeds and users (minionerec.ranking.paired.over_seeds).
Every method is scored on the same seeded sample of valid and of test rows with the shared
HR/NDCG code (minionerec/ranking/metrics.py); the LLM by constrained beam search, SASRec by its top-k scores.
SASRec is scored twice: by item id, and by SID ("SASRec by SID": its ranked items written as their SIDs, as
MiniOneRec is scored, so items that share a SID count as one); each ratio to SASRec is printed both ways.
With a pretrained base model the SFT -> GRPO stages run twice per seed (`--scratch_arm auto`, the default; on | off):
the "MiniOneRec" arm from its weights, then the "scratch" arm from the same architecture and tokenizer with random
weights (sft.train_from_scratch, seeded), every other flag the same, in seed_<s>/scratch/. Each dataset then prints
one table of popularity, SASRec and both arms (NDCG@10 and HR@10 per seed and mean, valid and test) and the
differences pretrained - scratch (SFT, SFT+RL) and pretrained SFT+RL - SASRec, paired over seeds and users
(SASRec's ranked item ids against the target item, as its table figure), with each SFT+RL / SASRec ratio.
Each dataset (`--category`, "+"-joined) gets output_dir/<category>/: results.json and, per seed, seed_<s>/
with that run's predictions, quality.png (bars), curves.csv + curves.png (SFT train loss and valid NDCG@10, RL reward and valid NDCG@10 per step: the
reference curves in bench/reference/). RL runs with rl.py's regression guard when the preset sets
keep_best: its final checkpoint is the best valid NDCG@10 of its evaluations, the SFT weights included.
Tune on valid only: the test table is for reporting.
SIDs (`--sids`, bench/sids.py; the preset's by default: auto for cpu, release for the others): `release` trains on
each dataset's own index.json; `<encoder>+<quantiser>` (tfidf+rqkmeans, minilm+balanced_rqkmeans, ...) on an index
built from the items' text, the dataset re-indexed into <category dir>/sids/<candidate>/; `auto` builds every
`--sid_candidates` entry, trains SFT on each with the first seed (valid sample only), prints the candidates table
(collisions, codes used per level, items per first-level code, valid NDCG@10 by SID and by item, paired per-user
difference by item to the release) into results.json's "sids", and runs the bench on the best by item. The chosen
candidate's SFT run is the first seed's SFT (the same seed, steps and rows: it is not trained twice; that seed's
"sft_dir" in results.json says where it lies). Split a run into pieces (one seed or dataset per call) with the SIDs
pinned to the choice (`--sids <chosen>`): each piece then trains what the whole run would.
Each preset is the recipe recipes/quality_<preset>.yaml (`--recipe PATH` runs another), read by the scripts' own
code (minionerec.run.config): sections sft, rl, evaluate, sasrec and tiny (minionerec.model.tiny) hold those
scripts' own flags; `--set section.flag=value,...` overrides any of them, by the same names. The repo must be
importable (`pip install -e .`, which `make install` runs, or PYTHONPATH=.).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import sids

ROOT = Path(__file__).resolve().parents[1]

# "SASRec by SID": SASRec's ranked items scored by their SIDs, as MiniOneRec is (items sharing a SID count as one; the
# release indexes have 15 such groups, and on Industrial one of them is the most frequent target)
METHODS = ("popularity", "SASRec", "SASRec by SID", "MiniOneRec SFT", "MiniOneRec SFT+RL")
KS = (1, 3, 5, 10, 20)

# The bench's own values per preset, flags of no script (those are the recipe's): the training seeds (each trains
# the whole pipeline: init, data order, SASRec, GRPO; tables give mean and spread) and the valid/test rows every
# method is scored on (a seeded sample; -1 = all), and the SIDs (release unless a preset says). --seeds,
# --eval_sample, --sids and --sid_candidates override them.
PRESETS = {
    "smoke": dict(seeds="42+1", eval_sample=100),
    # SIDs per dataset on valid (bench/RESULTS.md, SID candidates): TF-IDF wins on Industrial, the release on Office
    "cpu": dict(seeds="42+1+2", eval_sample=-1, sids="auto", sid_candidates="release,tfidf+rqkmeans"),
    "gpu": dict(seeds="42+1+2", eval_sample=-1),
    # a pretrained base model instead of the tiny one (relative paths: from the repository root)
    "gpu_pretrained": dict(seeds="42", eval_sample=1000, base_model="models/SmolLM2-135M"),
}
# Flags the bench sets itself, per seed and dataset (paths, seed) or as its protocol (the curves score with
# evaluate's num_beams, the RL guard on the bench's own valid rows; no intermediate checkpoints; fp32 scoring;
# SASRec on the CPU): a recipe or --set giving one is an error, not a value silently replaced.
BENCH_SETS = {
    "sft": ("base_model", "train_file", "eval_file", "output_dir", "sid_index_path", "item_meta_path", "category",
            "seed", "save_steps", "eval_steps", "logging_steps", "test_beam"),
    "rl": ("model_path", "train_file", "eval_file", "output_dir", "sid_index_path", "item_meta_path", "category",
           "seed", "cf_path", "title2sid", "gradient_checkpointing", "save_steps", "logging_steps", "eval_sample",
           "test_beam"),
    "evaluate": ("base_model", "test_file", "sid_index_path", "result_json", "seed", "dtype"),
    "tiny": ("output_dir", "sid_index_path", "item_meta_path", "seed"),
    "sasrec": ("train_file", "eval_file", "test_file", "sid_index_path", "output_dir", "seed", "device"),
}
SAMPLE_SEED = 42  # the valid/test rows scored: the same for every training seed and configuration (paired users)


@dataclass(frozen=True)
class Arm:
    """One MiniOneRec pipeline of a seed: SFT -> evaluate -> guarded GRPO -> evaluate."""

    name: str  # prefix of its methods ("MiniOneRec SFT"); the scratch arm's also of its stages and subdirectory
    from_scratch: bool = False  # SFT from base_model's architecture with random weights (sft.train_from_scratch)

    @property
    def methods(self) -> tuple[str, str]:
        return f"{self.name} SFT", f"{self.name} SFT+RL"

    def dir(self, seed_dir: Path) -> Path:
        """The main arm keeps a single-arm run's layout (compare_seeds reads either); the scratch arm a subdirectory."""
        return seed_dir / self.name if self.from_scratch else seed_dir

    def stage(self, label: str) -> str:
        return f"{self.name}: {label}" if self.from_scratch else label


MAIN, SCRATCH = Arm("MiniOneRec"), Arm("scratch", from_scratch=True)
# With the scratch arm, per dataset: B - A per user, paired over seeds and users (label, A, B)
ARM_PAIRS = (("pretrained SFT - scratch SFT", SCRATCH.methods[0], MAIN.methods[0]),
             ("pretrained SFT+RL - scratch SFT+RL", SCRATCH.methods[1], MAIN.methods[1]),
             ("pretrained SFT+RL - SASRec", "SASRec", MAIN.methods[1]))


def arms(plan: Plan) -> list[Arm]:
    """The main arm first: it trains from the state a single-arm run would (same seed, nothing run before it)."""
    return [MAIN, SCRATCH] if plan.scratch_arm else [MAIN]


def method_order(plan: Plan) -> list[str]:
    """Table rows: the baselines, then scratch, then the (pretrained) main arm; a single-arm run: METHODS."""
    return ["popularity", "SASRec", "SASRec by SID", *(m for arm in reversed(arms(plan)) for m in arm.methods)]


def script_args() -> dict:
    """Recipe section -> the args dataclass of the script it configures (imported here: they load torch)."""
    import evaluate
    import rl
    import sasrec
    import sft
    from minionerec.model import tiny

    return {"tiny": tiny.Args, "sasrec": sasrec.Args, "sft": sft.Args, "rl": rl.Args, "evaluate": evaluate.Args}


@dataclass
class Args:
    """Popularity vs SASRec vs MiniOneRec SFT vs SFT+RL on valid and test, over several training seeds (with a
    pretrained base model, also its random-weight twin)."""

    data_dir: str = str(ROOT.parent / "shared" / "data" / "Amazon")  # MiniOneRec layout: train/valid/test/index
    category: str = "Industrial_and_Scientific+Office_Products"  # "+"-joined file prefixes inside data_dir
    preset: str = "cpu"  # smoke | cpu | gpu | gpu_pretrained: the recipe recipes/quality_<preset>.yaml and PRESETS' seeds, eval sample
    recipe: str = ""  # a recipe file (sections sft, rl, evaluate, sasrec, tiny); "" = recipes/quality_<preset>.yaml
    set: str = ""  # recipe overrides, section.flag=value by the scripts' own names: "sft.learning_rate=1e-3,rl.beta=0"
    output_dir: str = ""  # default bench/out/quality_<preset>; one subdirectory per category
    eval_sample: int = 0  # valid/test rows scored (seeded sample); 0 = preset default; -1 = all
    seeds: str = ""  # "+"-joined training seeds (42+1+2): init, data order, SASRec, GRPO; "" = the preset's
    threads: int = 2  # torch intra-op threads (2 shared cores here)
    stages: str = "all"  # all | sft (tiny model, SFT and its evaluation only: no SASRec, no RL)
    base_model: str = ""  # SFT from this local model directory, not a tiny one; "" = the preset's (gpu_pretrained: models/SmolLM2-135M); "tiny" = build one
    scratch_arm: str = "auto"  # auto | on | off: beside a pretrained base model, its architecture from random weights trained the same way; auto = on with a pretrained base model
    sids: str = ""  # release (each dataset's own index) | <encoder>+<quantiser> built from item text, e.g. tfidf+rqkmeans (bench/sids.py) | auto: per dataset the --sid_candidates entry with the best SFT valid NDCG@10 by item (first seed); "" = the preset's (cpu: auto; others: release)
    sid_candidates: str = ""  # ","-joined candidates --sids auto compares; encoders tfidf | minilm | smollm2, quantisers rqkmeans | balanced_rqkmeans | rqkmeans_plus | rqvae; "" = the preset's, else release,tfidf+rqkmeans,minilm+rqkmeans
    sid_shape: str = "3x256"  # levels x codes per level of every built index (fewer codes for a catalogue this small: the demo's 3x16)


@dataclass
class Plan:
    """What a bench run uses: each script's args (script defaults < recipe < --set; per-run paths and seeds are
    set by the stages) and the bench's own values."""

    recipe: str
    seeds: list[int]
    eval_sample: int
    base_model: str  # "" = a tiny model per seed (the tiny section); else this pretrained directory
    scratch_arm: bool  # also base_model's architecture from random weights (the "scratch" methods)
    tiny: Any  # minionerec.model.tiny.Args
    sasrec: Any  # sasrec.Args
    sft: Any  # sft.Args
    rl: Any  # rl.Args
    evaluate: Any  # evaluate.Args

    def record(self) -> dict:
        """results.json's "knobs": the bench's values and every script's resolved flags, less those the bench sets
        per run (each run's run_config.yaml has them)."""
        from minionerec.run.config import RUN_FLAGS

        out = {"recipe": self.recipe, "seeds": self.seeds, "eval_sample": self.eval_sample,
               "base_model": self.base_model, "scratch_arm": self.scratch_arm}
        for section, skip in BENCH_SETS.items():
            out[section] = {k: v for k, v in asdict(getattr(self, section)).items() if k not in (*skip, *RUN_FLAGS)}
        return out

    def changed(self) -> dict:
        """Per script, the values other than the script's defaults (what the recipe and --set chose)."""
        out = {}
        for section in BENCH_SETS:
            args = getattr(self, section)
            default = type(args)()
            out[section] = {f.name: getattr(args, f.name) for f in dataclasses.fields(args)
                            if getattr(args, f.name) != getattr(default, f.name)}
        return out


def check_key(section: str, key: str, cls, where: str) -> None:
    """`key` is a flag of `section`'s script that a recipe or --set may give, else a one-line error."""
    from minionerec.run.config import RUN_FLAGS, nearest

    valid = [f.name for f in dataclasses.fields(cls) if f.name not in RUN_FLAGS]
    if key in BENCH_SETS[section]:
        hint = " (use the bench's --seeds)" if key == "seed" else ""
        raise SystemExit(f"error: {where}: {section}.{key} is set by the bench itself, per run{hint}")
    if key not in valid:
        raise SystemExit(f"error: {where}: {section} has no flag {key!r}{nearest(key, valid)}")


def parse_set(text: str, classes: dict) -> dict[str, dict[str, str]]:
    """--set "sft.learning_rate=1e-3,rl.beta=0" -> {section: {flag: value}}; a value may hold commas
    (rl.lora_target_modules=q_proj,v_proj): items split only before the next `section.flag=`."""
    from minionerec.run.config import nearest

    out = {section: {} for section in classes}
    for item in re.split(r",(?=\s*\w+\.\w+\s*=)", text) if text.strip() else []:
        key, eq, value = item.partition("=")
        section, dot, flag = key.strip().partition(".")
        if not eq or not dot or not flag:
            raise SystemExit(f"error: --set: expected section.flag=value items joined by ',', got {item!r}")
        if section not in classes:
            raise SystemExit(f"error: --set: unknown section {section!r}{nearest(section, classes)}; "
                             f"sections: {', '.join(classes)}")
        check_key(section, flag, classes[section], "--set")
        if flag in out[section]:
            raise SystemExit(f"error: --set: {section}.{flag} is given twice")
        out[section][flag] = value.strip()
    return out


def resolve(args: Args) -> Plan:
    """Each script's args from the recipe (read and type-checked by minionerec.run.config, as the scripts read
    theirs) with --set applied, the bench's values from PRESETS and its flags; every check is a one-line error."""
    from minionerec.data.prompts import STYLES
    from minionerec.run.config import ConfigError, read_recipe, recipe_values
    from minionerec.run.flags import FlagError, parse_args

    if args.preset not in PRESETS:
        raise SystemExit(f"error: --preset must be one of {', '.join(PRESETS)}, got {args.preset!r}")
    if args.stages not in ("all", "sft"):
        raise SystemExit(f"error: --stages must be all or sft, got {args.stages!r}")
    classes = script_args()
    path = args.recipe or str(ROOT / "recipes" / f"quality_{args.preset}.yaml")
    overrides = parse_set(args.set, classes)
    scripts = {}
    try:
        sections = read_recipe(path)
        for section, cls in classes.items():  # read as the scripts read theirs; a missing section: script defaults
            recipe = recipe_values(cls, path) if section in sections else {}
            for key in recipe:
                check_key(section, key, cls, path)
            try:
                scripts[section] = parse_args(cls, {**recipe, **overrides[section]})
            except FlagError as e:
                raise SystemExit(f"error: --set {section}.{str(e).lstrip('-')}") from None
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    styles = {section: scripts[section].prompt_style for section in ("sft", "rl", "evaluate")}
    if len(set(styles.values())) != 1 or styles["sft"] not in STYLES:
        raise SystemExit(f"error: prompt_style must be one of {', '.join(STYLES)} and the same in sft, rl and "
                         f"evaluate, got {styles}")
    num_beams, rl_args = scripts["evaluate"].num_beams, scripts["rl"]
    if num_beams < max(KS):
        raise SystemExit(f"error: evaluate.num_beams {num_beams} < {max(KS)}: HR@{max(KS)} needs that many beams")
    if rl_args.num_generations < 1 or rl_args.batch_size % rl_args.num_generations:
        raise SystemExit(f"error: rl.num_generations {rl_args.num_generations} must divide rl.batch_size "
                         f"{rl_args.batch_size}")
    seeds_text = args.seeds or PRESETS[args.preset]["seeds"]
    try:
        seeds = [int(x) for x in str(seeds_text).split("+")]
    except ValueError:
        raise SystemExit(f"error: --seeds must be '+'-joined integers like 42+1+2, got {seeds_text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"error: --seeds repeats a seed: {seeds_text!r}")
    base_model = args.base_model or PRESETS[args.preset].get("base_model", "")
    if base_model == "tiny":
        base_model = ""
    elif base_model and not Path(base_model).is_absolute() and not Path(base_model).exists():
        base_model = str(ROOT / base_model)  # a preset's path: from the repository root
    return Plan(recipe=path, seeds=seeds, eval_sample=args.eval_sample or PRESETS[args.preset]["eval_sample"],
                base_model=base_model, scratch_arm=wants_scratch_arm(args.scratch_arm, base_model, scripts["sft"]),
                **scripts)


def sids_of(args: Args) -> sids.SidPlan:
    """--sids and --sid_candidates, else the preset's (PRESETS), else release / sids.CANDIDATES, as a checked plan."""
    preset = PRESETS[args.preset]  # resolve checked the name
    return sids.parse(args.sids or preset.get("sids", sids.RELEASE),
                      args.sid_candidates or preset.get("sid_candidates", sids.CANDIDATES), args.sid_shape)


def wants_scratch_arm(flag: str, base_model: str, sft_args) -> bool:
    """--scratch_arm: the random-weight twin is the control for "does pretraining help", so auto runs it exactly when
    SFT starts from a pretrained model's weights; on where there are none to compare is a one-line error."""
    if flag not in ("auto", "on", "off"):
        raise SystemExit(f"error: --scratch_arm must be auto, on or off, got {flag!r}")
    # sft.py refuses LoRA from random weights; a recipe already from scratch has no pretrained arm to compare with
    pretrained = bool(base_model) and not sft_args.train_from_scratch and not sft_args.lora_r
    if flag == "on" and not pretrained:
        raise SystemExit("error: --scratch_arm on needs SFT from a pretrained base model's weights (--base_model DIR, "
                         "without sft.train_from_scratch or sft.lora_r)")
    return pretrained and flag != "off"


def data_paths(data_dir: str, category: str) -> dict:
    from minionerec.data.formats import find_split

    data = Path(data_dir)
    if not data.is_dir():
        raise SystemExit(f"error: --data_dir not found: {data}")
    paths = {split: find_split(data, split, category) for split in ("train", "valid", "test")}
    paths["index"] = data / "index" / f"{category}.index.json"
    paths["item"] = data / "index" / f"{category}.item.json"
    for name, path in paths.items():
        if not Path(path).is_file():
            raise SystemExit(f"error: {name} file not found: {path}")
    return {k: str(v) for k, v in paths.items()}


def sample_split(path: str, n: int, seed: int, out: Path) -> str:
    """A seeded sample of n rows (file order kept) written as CSV; n < 0 or >= len keeps every row."""
    import pandas as pd

    df = pd.read_csv(path)
    if 0 < n < len(df):
        df = df.sample(n=n, random_state=seed).sort_index()
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return str(out)


class Stage:
    """`with Stage("sft"):` prints start, end and seconds; the seconds land in `timings`."""

    timings: dict[str, float] = {}

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.start = time.perf_counter()
        print(f"\n[quality] === {self.name} ({time.strftime('%H:%M:%S')})", flush=True)

    def __exit__(self, *exc):
        Stage.timings[self.name] = round(time.perf_counter() - self.start, 1)
        print(f"[quality] === {self.name} done in {Stage.timings[self.name]:.0f}s", flush=True)


def run_popularity(paths: dict, splits: dict, k: int) -> dict:
    from minionerec.data.formats import load_sid_index, load_split
    from minionerec.ranking.evaluation import popularity_ranking
    from minionerec.ranking.metrics import compute_metrics

    sid_index = load_sid_index(paths["index"])
    catalogue = {"".join(s) for s in sid_index.values()}
    popular = popularity_ranking(list(load_split(paths["train"])["item_sid"]), k)
    out = {}
    for split, path in splits.items():
        targets = list(load_split(path)["item_sid"])
        out[split] = compute_metrics([popular] * len(targets), targets, KS, catalogue)
    return out


def run_sasrec(plan: Plan, paths: dict, splits: dict, out_dir: Path, seed: int) -> tuple[dict, dict, dict]:
    """sasrec.py with the recipe's flags (early stopping on the FULL valid split), then its best model scores both
    samples, by item id and by SID (score_by_sid); its ranked item ids per row go to out_dir/predictions_<split>.json
    (for paired differences). Returns (metrics by item, metrics by SID, info)."""
    import sasrec
    from minionerec.ranking.sasrec import encode_split, load_sasrec, score, score_by_sid, top_items
    from minionerec.ranking.shared_sids import sid_strings

    result = sasrec.main(dataclasses.replace(
        plan.sasrec, train_file=paths["train"], eval_file=paths["valid"], test_file=splits["test"],
        sid_index_path=paths["index"], output_dir=str(out_dir), seed=seed, device="cpu"))
    sid_of = sid_strings(paths["index"])  # item -> SID string, in catalogue order (SASRec's rows)
    items = list(sid_of)
    item_to_row = {item: row for row, item in enumerate(items)}
    model = load_sasrec(result["cf_path"]).eval()
    out, by_sid, predictions = {}, {}, {}
    for split, path in splits.items():
        history, lengths, targets = encode_split(path, item_to_row, model.max_len)
        ranked = top_items(model, history, lengths, "cpu")
        out[split] = score(ranked, targets, items)
        by_sid[split] = score_by_sid(ranked, targets, items, sid_of)
        predictions[split] = str(out_dir / f"predictions_{split}.json")
        Path(predictions[split]).write_text(json.dumps([{"item_id": items[t], "predict": [items[r] for r in row]}
                                                        for t, row in zip(targets.tolist(), ranked.tolist())]))
    info = {k: result[k] for k in ("best_epoch", "epochs_run", "train_seconds", "cf_path") if k in result}
    info.update(args=result.get("args", {}), predictions=predictions)
    return out, by_sid, info


def run_eval(plan: Plan, model_dir: str, paths: dict, splits: dict, out_dir: Path, seed: int) -> dict:
    """evaluate.py with the recipe's flags on each split's sample."""
    import evaluate

    out = {}
    for split, path in splits.items():
        rows = evaluate.main(dataclasses.replace(
            plan.evaluate, base_model=model_dir, test_file=path, sid_index_path=paths["index"],
            result_json=str(out_dir / f"predictions_{split}.json"), seed=seed, dtype="float32"))
        out[split] = rows["constrained beam search"]
    return out


def curve(log_history: list[dict], key: str) -> list[list[float]]:
    return [[h["step"], h[key]] for h in log_history if key in h and "step" in h]


def ranking_curve(run_dir: Path) -> list[list[float]]:
    """[step, valid NDCG@10] from a run's eval_during_training.jsonl (sft.py / rl.py --test_during_training)."""
    path = run_dir / "eval_during_training.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[r["step"], r["eval_NDCG@10"]] for r in rows if "eval_NDCG@10" in r]


CURVES = (("SFT", "train_loss", "SFT train loss"), ("SFT", "valid_NDCG@10", "SFT valid NDCG@10"),
          ("RL", "reward", "RL reward"), ("RL", "valid_NDCG@10", "RL valid NDCG@10 (step 0 = SFT)"))


def write_curves(curves: dict, out_dir: Path, title: str) -> None:
    """curves.csv (stage, step, metric, value: long format, one row per logged point) and curves.png (2 x 2)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(out_dir / "curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stage", "step", "metric", "value"])
        for stage, metric, _ in CURVES:
            for step, value in curves.get(stage, {}).get(metric, []):
                writer.writerow([stage, step, metric, f"{value:.6g}"])
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (stage, metric, label) in zip(axes.flat, CURVES):
        points = curves.get(stage, {}).get(metric, [])
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
        ax.set_title(label)
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_dir / "curves.png", dpi=100)
    plt.close(fig)


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def paired_ndcg10(pred_a: str, pred_b: str) -> dict:
    """Per-user NDCG@10 of method b minus method a (same rows): mean, standard error and a z score
    (minionerec/ranking/paired.py, also `python compare.py`). The two LLM rows share every user, so their
    difference is far less noisy than two independent means."""
    from minionerec.ranking.paired import check_same_rows, load_predictions, paired_difference

    a, b = load_predictions(pred_a), load_predictions(pred_b)
    check_same_rows(a, b)
    return paired_difference(a, b, "NDCG", 10)


def summarise(metrics: dict, paired: dict) -> dict:
    """Ratios on NDCG@10 and which of the issue's targets hold. The MiniOneRec row of the
    MiniOneRec/SASRec ratio is chosen on valid, then read on test."""
    n = {m: {s: metrics[m][s]["NDCG@10"] for s in ("valid", "test")} for m in METHODS}
    best_llm = max(("MiniOneRec SFT", "MiniOneRec SFT+RL"), key=lambda m: n[m]["valid"])
    out = {
        "ndcg10": n,
        "best_minionerec_by_valid": best_llm,
        "minionerec_over_sasrec_test": ratio(n[best_llm]["test"], n["SASRec"]["test"]),
        "minionerec_over_sasrec_valid": ratio(n[best_llm]["valid"], n["SASRec"]["valid"]),
        "minionerec_over_sasrec_by_sid_test": ratio(n[best_llm]["test"], n["SASRec by SID"]["test"]),
        "minionerec_over_sasrec_by_sid_valid": ratio(n[best_llm]["valid"], n["SASRec by SID"]["valid"]),
        "rl_over_sft_test": ratio(n["MiniOneRec SFT+RL"]["test"], n["MiniOneRec SFT"]["test"]),
        "rl_over_sft_valid": ratio(n["MiniOneRec SFT+RL"]["valid"], n["MiniOneRec SFT"]["valid"]),
        "rl_minus_sft_paired": paired,
    }
    out["targets"] = {
        "MiniOneRec NDCG@10 >= 1.2 x SASRec (test)": bool(n[best_llm]["test"] >= 1.2 * n["SASRec"]["test"]),
        "MiniOneRec NDCG@10 >= 1.2 x SASRec by SID (test; both scored by SID)":
            bool(n[best_llm]["test"] >= 1.2 * n["SASRec by SID"]["test"]),
        # the guard's promise; on test the paired difference and its SE (printed) say whether RL helped
        "SFT+RL NDCG@10 >= SFT (valid)": bool(n["MiniOneRec SFT+RL"]["valid"] >= n["MiniOneRec SFT"]["valid"]),
    }
    return out


def plot(metrics: dict, path: Path, title: str) -> None:
    """HR@10 / NDCG@10 bars per method on valid and test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = [f"{s} {m}" for s in ("valid", "test") for m in ("NDCG@10", "HR@10")]
    methods = list(metrics)
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = [metrics[method][s][m] for s in ("valid", "test") for m in ("NDCG@10", "HR@10")]
        ax.bar([x + (i - (len(methods) - 1) / 2) * width for x in range(len(labels))], values, width, label=method)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_tables(metrics: dict) -> None:
    from minionerec.ranking.metrics import format_table

    for split in ("valid", "test"):
        print(f"\n== {split} ({metrics['popularity'][split]['users']} users)")
        print(format_table({m: d[split] for m, d in metrics.items()}, KS))


def run_sft(plan: Plan, paths: dict, category: str, base: Path, out_dir: Path, seed: int) -> dict:
    """sft.py with the recipe's flags; its valid-NDCG@10 curve (a seeded sample of the full valid split) when the
    recipe sets test_during_training (with keep_best: early stopping on the curve, the best evaluated step is the
    SFT model). Returns the curves: train loss per logging step, valid NDCG@10 per eval."""
    import sft

    s = plan.sft
    trainer = sft.main(dataclasses.replace(
        s, base_model=str(base), train_file=paths["train"], output_dir=str(out_dir / "sft"),
        sid_index_path=paths["index"], item_meta_path=paths["item"], category=category, seed=seed,
        save_steps=10 ** 9, logging_steps=max(1, s.max_steps // 50),
        eval_file=paths["valid"] if s.test_during_training else "", test_beam=plan.evaluate.num_beams,
        eval_steps=10 ** 9))  # no periodic valid-loss passes (sft.py still reports the final one): the curve ranks
    curves = {"train_loss": curve(trainer.state.log_history, "loss"),
              "valid_NDCG@10": ranking_curve(out_dir / "sft")}
    del trainer
    return curves


def run_rl(plan: Plan, paths: dict, category: str, sft_dir: str, run_dir: Path, seed: int,
           cf_path: str, valid_rows: str) -> dict:
    """rl.py (the recipe's flags) from the SFT checkpoint; with test_during_training and keep_best its guard scores
    `valid_rows` (the bench's valid CSV) at step 0 (SFT) and every eval_step, and keeps the best. Returns the curves
    and the guard's choice (guard.json, or None)."""
    import rl

    r = plan.rl
    trainer = rl.main(dataclasses.replace(
        r, model_path=sft_dir, train_file=paths["train"], sid_index_path=paths["index"],
        item_meta_path=paths["item"], output_dir=str(run_dir), category=category, seed=seed,
        # RL prompts only in the tasks SFT taught: title -> SID needs the item-alignment task
        title2sid=plan.sft.task_item_alignment, cf_path=cf_path,
        gradient_checkpointing=False,  # models this small: recomputation costs time and saves nothing that matters
        save_steps=10 ** 9, logging_steps=max(1, r.max_steps // 50),
        # the guard scores exactly the valid rows of the bench's table: SFT+RL >= SFT there by construction
        eval_file=valid_rows if r.test_during_training else "", eval_sample=-1, test_beam=plan.evaluate.num_beams))
    curves = {"reward": curve(trainer.state.log_history, "reward"), "valid_NDCG@10": ranking_curve(run_dir)}
    del trainer
    guard = run_dir / "guard.json"
    return curves, json.loads(guard.read_text()) if guard.is_file() else None


def kept_sft(guard: dict | None) -> bool:
    """True when rl.py's guard wrote the SFT weights as final_checkpoint (no RL evaluation beat step 0)."""
    return guard is not None and guard["chosen_step"] == 0


def dataset_sids(args: Args, plan: Plan, sid_plan: sids.SidPlan, category: str,
                 out_dir: Path) -> tuple[str, dict | None, dict | None]:
    """The SID stage (bench/sids.py): the data directory the dataset's bench runs on, what results.json records
    of the choice (None for --sids release: the dataset as given, nothing built, nothing printed), and with
    several candidates the chosen one's SFT run ({"dir", "curves"}: the first seed's SFT, else None). With
    several candidates (auto), each trains SFT with the first seed and is scored on the valid sample; the best
    valid NDCG@10 by item wins (a SID shared by several items would otherwise score as a free hit), the first
    listed on a tie."""
    if sid_plan.mode == sids.RELEASE:
        return args.data_dir, None, None
    with Stage("SIDs: build candidates"):
        built, note = sids.prepare(sid_plan, args.data_dir, category, out_dir / "sids")
    if note:
        print(f"[quality] {category}: {note}", flush=True)
    scores, runs = score_sid_candidates(plan, category, built, out_dir / "sids") if len(built) > 1 else ({}, {})
    chosen = max(built, key=lambda b: scores[b.name]["ndcg10_by_item"]) if scores else built[0]
    users = f", {scores[chosen.name]['valid']['users']} valid users" if scores else ""
    title = f"{category}: SID candidates" + (f" (SFT seed {plan.seeds[0]}{users}; the best valid NDCG@10 by item is kept)"
                                             if scores else "")
    print("\n" + sids.format_table(title, built, scores, chosen.name), flush=True)
    record = {"mode": sid_plan.mode, "asked": [c.name for c in sid_plan.candidates], "note": note,
              "shape": args.sid_shape, "chosen": chosen.name, "data_dir": chosen.data_dir,
              "candidates": {b.name: {"data_dir": b.data_dir, "stats": b.stats, **scores.get(b.name, {})}
                             for b in built}}
    if scores:
        record["selection_seed"] = plan.seeds[0]
    return chosen.data_dir, record, runs.get(chosen.name)


def score_sid_candidates(plan: Plan, category: str, built: list[sids.Built],
                         sid_dir: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per candidate: SFT with the first seed on its data, as the bench trains it (a tiny model built on its index:
    the tokenizer holds the SIDs), scored on the valid sample by SID and by item (each ranked SID written as an item
    of its index: minionerec.ranking.shared_sids); with the release among them, each other candidate's per-user
    NDCG@10 by item minus the release's, paired by item id (the SIDs differ, the rows do not). Returns the scores
    and each candidate's SFT run ({"dir", "curves"})."""
    from minionerec.ranking.metrics import compute_metrics
    from minionerec.ranking.paired import check_same_rows, load_predictions, paired_difference
    from minionerec.ranking.shared_sids import item_of_sid, rows_by_item, sid_strings

    seed = plan.seeds[0]
    scores, by_item, runs = {}, {}, {}
    for b in built:
        run_dir = sid_dir / b.name / f"sft_seed_{seed}"
        scores[b.name], curves = sft_valid(plan, category, b.name, b.data_dir, run_dir, seed)
        runs[b.name] = {"dir": run_dir / "sft", "curves": curves}
        paths = data_paths(b.data_dir, category)
        by_item[b.name] = rows_by_item(load_predictions(scores[b.name]["predictions"]),
                                       item_of_sid(sid_strings(paths["index"]), paths["train"]))
        scores[b.name]["ndcg10_by_item"] = compute_metrics([r["predict"] for r in by_item[b.name]],
                                                           [r["item_sid"] for r in by_item[b.name]], (10,))["NDCG@10"]
    for name, score in scores.items():
        if sids.RELEASE in scores and name != sids.RELEASE:
            check_same_rows(by_item[sids.RELEASE], by_item[name], sids.RELEASE, name)
            score["vs_release"] = paired_difference(by_item[sids.RELEASE], by_item[name], "NDCG", 10)
    return scores, runs


def sft_valid(plan: Plan, category: str, name: str, data_dir: str, out_dir: Path, seed: int) -> tuple[dict, dict]:
    """One candidate's SFT run (the same steps as run_seed's for this seed: seeded, then the base model, then SFT)
    and its evaluation on the valid sample only (the choice never sees test): {valid metrics, NDCG@10,
    predictions}, and the SFT curves."""
    from transformers import set_seed

    paths = data_paths(data_dir, category)
    valid = {"valid": sample_split(paths["valid"], plan.eval_sample, SAMPLE_SEED, out_dir / "samples" / "valid.csv")}
    set_seed(seed)
    base = base_model(plan, paths, out_dir, seed)
    with Stage(f"SIDs {name}: SFT (seed {seed})"):
        curves = run_sft(plan, paths, category, base, out_dir, seed)
    with Stage(f"SIDs {name}: evaluate SFT (valid)"):
        metrics = run_eval(plan, str(out_dir / "sft" / "final_checkpoint"), paths, valid, out_dir / "eval_sft",
                           SAMPLE_SEED)["valid"]
    return {"valid": metrics, "ndcg10": metrics["NDCG@10"],
            "predictions": prediction_paths(out_dir / "eval_sft", valid)["valid"]}, curves


def run_dataset(args: Args, plan: Plan, sid_plan: sids.SidPlan, category: str, out_dir: Path) -> dict:
    """Every stage on one dataset, once per seed, on the SIDs the SID stage chose; prints the per-seed tables and
    writes results.json's dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"\n[quality] ##### {category} -> {out_dir}", flush=True)
    data_dir, sid_record, chosen_sft = dataset_sids(args, plan, sid_plan, category, out_dir)
    paths = data_paths(data_dir, category)
    splits = {s: sample_split(paths[s], plan.eval_sample, SAMPLE_SEED, out_dir / "samples" / f"{s}.csv")
              for s in ("valid", "test")}
    with Stage("popularity"):  # no training: the same for every seed
        popularity = run_popularity(paths, splits, plan.evaluate.num_beams)
    runs = {seed: run_seed(args, plan, paths, category, splits, popularity, out_dir / f"seed_{seed}", seed,
                           chosen_sft if seed == plan.seeds[0] else None)  # the choice trained the first seed
            for seed in plan.seeds}
    result = {"args": asdict(args), "category": category, "knobs": plan.record(), "data": paths,
              **({"sids": sid_record} if sid_record else {}), "samples": splits, "seeds": runs,
              "over_seeds": over_seeds_summary(runs), "total_s": round(time.perf_counter() - start, 1)}
    print(f"\n[quality] ##### {category}: {len(runs)} seeds, total {result['total_s'] / 60:.1f} min")
    print_seed_tables(result)
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))
    return result


def run_seed(args: Args, plan: Plan, paths: dict, category: str, splits: dict, popularity: dict, out_dir: Path,
             seed: int, trained_sft: dict | None = None) -> dict:
    """One training seed: SASRec, the base model, then each arm (SFT, evaluation, guarded GRPO, evaluation). Writes
    out_dir's files; the main arm's curves and guard where a single-arm run has them, the scratch arm's under
    "scratch". `trained_sft` (the SID choice's run of this seed, on these SIDs): the main arm's SFT, not retrained."""
    from transformers import set_seed

    set_seed(seed)  # each seed starts from the same state, as if run alone
    out_dir.mkdir(parents=True, exist_ok=True)
    Stage.timings = {}
    start = time.perf_counter()
    print(f"\n[quality] ##### {category}, seed {seed} -> {out_dir}", flush=True)
    metrics, info = {"popularity": popularity}, {}
    if args.stages == "all":
        with Stage("SASRec"):
            metrics["SASRec"], metrics["SASRec by SID"], info["SASRec"] = run_sasrec(plan, paths, splits, out_dir / "sasrec", seed)
    base = base_model(plan, paths, out_dir, seed)
    outcomes, predictions = {}, {}
    for arm in arms(plan):
        outcomes[arm] = run_arm(args, plan, arm, paths, category, splits, metrics, info, base, arm.dir(out_dir), seed,
                                None if arm.from_scratch else trained_sft)
        predictions.update(outcomes[arm].pop("predictions"))
        write_curves(outcomes[arm]["curves"], arm.dir(out_dir), f"{category}: reference curves ({args.preset} preset, "
                     f"seed {seed}{', scratch arm' if arm.from_scratch else ''})")
    main_arm = outcomes.pop(MAIN)
    metrics = {m: metrics[m] for m in method_order(plan) if m in metrics}
    result = {"seed": seed, "metrics": metrics, "curves": main_arm["curves"], "predictions": predictions,
              "sft_dir": main_arm["sft_dir"],
              **{arm.name: outcome for arm, outcome in outcomes.items()}}  # the scratch arm's curves, guard, RL - SFT
    if args.stages == "all":
        result.update(summary=summarise(metrics, main_arm["rl_minus_sft_paired"]), sasrec=info["SASRec"],
                      guard=main_arm["guard"])
    total = time.perf_counter() - start
    result.update(timings_s=Stage.timings, total_s=round(total, 1))
    print(f"\n[quality] preset={args.preset} category={category} seed={seed} stages={args.stages} "
          f"prompt_style={plan.sft.prompt_style} total {total / 60:.1f} min; stage seconds {json.dumps(Stage.timings)}")
    print_tables(metrics)
    if args.stages == "all":
        print_summary(result)
    plot(metrics, out_dir / "quality.png", f"{category} ({args.preset} preset, seed {seed})")
    return result


def base_model(plan: Plan, paths: dict, out_dir: Path, seed: int) -> Path:
    """The pretrained directory every arm starts from, else a tiny model built for this seed (the tiny section)."""
    from minionerec.model.tiny import build_tiny_model

    if plan.base_model:
        return Path(plan.base_model)
    with Stage("tiny Qwen2 base model"):
        return build_tiny_model(**vars(dataclasses.replace(
            plan.tiny, output_dir=str(out_dir / "base_model"), sid_index_path=paths["index"],
            item_meta_path=paths["item"], seed=seed)))


def run_arm(args: Args, plan: Plan, arm: Arm, paths: dict, category: str, splits: dict, metrics: dict, info: dict,
            base: Path, out_dir: Path, seed: int, trained_sft: dict | None = None) -> dict:
    """One arm in out_dir: SFT from `base` (the scratch arm: its architecture, random weights seeded by `seed`; with
    `trained_sft`, that run instead: the same training, done once), its evaluation, and with --stages all guarded
    GRPO and its evaluation; every other flag is the recipe's, so the arms differ in the starting weights only. Adds
    the arm's methods to `metrics`; returns its curves, prediction paths and SFT directory, with RL the guard's
    choice and RL - SFT paired over users."""
    if arm.from_scratch:
        plan = dataclasses.replace(plan, sft=dataclasses.replace(plan.sft, train_from_scratch=True))
    sft_method, rl_method = arm.methods
    curves = {}
    if trained_sft:
        print(f"[quality] SFT: the SID choice's run of seed {seed}, {trained_sft['dir']} (same seed, steps and rows)",
              flush=True)
        curves["SFT"], sft_run = trained_sft["curves"], Path(trained_sft["dir"])
    else:
        with Stage(arm.stage("SFT")):
            curves["SFT"], sft_run = run_sft(plan, paths, category, base, out_dir, seed), out_dir / "sft"
    sft_dir = str(sft_run / "final_checkpoint")
    with Stage(arm.stage("evaluate SFT (valid, test)")):
        metrics[sft_method] = run_eval(plan, sft_dir, paths, splits, out_dir / "eval_sft", SAMPLE_SEED)
    out = {"curves": curves, "sft_dir": str(sft_run),
           "predictions": {sft_method: prediction_paths(out_dir / "eval_sft", splits)}}
    if args.stages == "all":
        rl_result = run_rl_stages(plan, arm, paths, category, splits, metrics, curves, info, sft_dir, out_dir, seed)
        out["predictions"][rl_method] = rl_result.pop("predictions")
        out.update(rl_result)
    return out


def run_rl_stages(plan: Plan, arm: Arm, paths: dict, category: str, splits: dict, metrics: dict, curves: dict,
                  info: dict, sft_dir: str, out_dir: Path, seed: int) -> dict:
    """GRPO from the SFT checkpoint (guarded when keep_best), then its final checkpoint scored on valid and test."""
    sft_method, rl_method = arm.methods
    cf_path = info["SASRec"]["cf_path"] if "sasrec" in plan.rl.reward_type.split("+") else ""
    run_dir = out_dir / "rl"
    with Stage(arm.stage("RL (GRPO)")):
        curves["RL"], guard = run_rl(plan, paths, category, sft_dir, run_dir, seed, cf_path, splits["valid"])
    if kept_sft(guard):  # final_checkpoint is a copy of the SFT weights: SFT's scores are its scores
        rl_eval_dir, metrics[rl_method] = out_dir / "eval_sft", metrics[sft_method]
    else:
        rl_eval_dir = out_dir / "eval_rl"
        with Stage(arm.stage("evaluate SFT+RL (valid, test)")):
            metrics[rl_method] = run_eval(plan, str(run_dir / "final_checkpoint"), paths, splits, rl_eval_dir,
                                          SAMPLE_SEED)
    sft_predictions, rl_predictions = prediction_paths(out_dir / "eval_sft", splits), prediction_paths(rl_eval_dir, splits)
    paired = {split: paired_ndcg10(sft_predictions[split], rl_predictions[split]) for split in splits}
    return {"guard": guard, "rl_minus_sft_paired": paired, "predictions": rl_predictions}


def prediction_paths(eval_dir: Path, splits: dict) -> dict[str, str]:
    """{split: the predictions JSON that run_eval wrote into eval_dir}."""
    return {split: str(eval_dir / f"predictions_{split}.json") for split in splits}


def over_seeds_summary(runs: dict[int, dict]) -> dict:
    """NDCG@10 and HR@10 of every method and split across seeds (per seed, mean, spread = max - min), the RL - SFT
    difference paired over seeds and users, SFT+RL / SASRec; with the scratch arm, ARM_PAIRS likewise."""
    from minionerec.ranking.paired import over_seeds

    first = next(iter(runs.values()))
    out = {key: {method: by_seed(runs, method, metric) for method in first["metrics"]}
           for key, metric in (("ndcg10", "NDCG@10"), ("hr10", "HR@10"))}
    if "summary" in first:
        out["rl_minus_sft"] = {split: over_seeds([r["summary"]["rl_minus_sft_paired"][split] for r in runs.values()])
                               for split in ("valid", "test")}
        out["minionerec_over_sasrec"] = over_sasrec(out["ndcg10"], MAIN.methods[1])
        out["minionerec_over_sasrec_by_sid"] = over_sasrec(out["ndcg10"], MAIN.methods[1], "SASRec by SID")
    if SCRATCH.methods[0] in first["metrics"]:
        out["pretrained_vs_scratch"] = {label: {"a": a, "b": b, **{
            split: over_seeds([paired_methods(r, a, b, split) for r in runs.values()]) for split in ("valid", "test")}}
            for label, a, b in ARM_PAIRS if a in first["metrics"] and b in first["metrics"]}
        if "summary" in first:
            out["scratch_over_sasrec"] = over_sasrec(out["ndcg10"], SCRATCH.methods[1])
    return out


def by_seed(runs: dict[int, dict], method: str, metric: str) -> dict:
    """{split: per-seed values, mean, spread = max - min, spread / mean} of one method's metric."""
    out = {}
    for split in ("valid", "test"):
        values = [r["metrics"][method][split][metric] for r in runs.values()]
        mean = sum(values) / len(values)
        out[split] = {"per_seed": values, "mean": mean, "spread": max(values) - min(values),
                      "spread_over_mean": (max(values) - min(values)) / mean if mean else None}
    return out


def over_sasrec(ndcg10: dict, method: str, baseline: str = "SASRec") -> dict:
    """{split: method's NDCG@10 / the baseline's (SASRec or SASRec by SID), means over seeds}."""
    return {split: ratio(ndcg10[method][split]["mean"], ndcg10[baseline][split]["mean"]) for split in ("valid", "test")}


def scored_rows(run: dict, method: str, split: str) -> list[dict]:
    """One seed's ranked lists of `method` on a split, as paired_difference scores them (`predict` against
    `item_sid`), with `item_id` to pair rows by: evaluate.py's rows as written; SASRec's ranked item ids against the
    target item id, as its table figure is scored (a few items share a SID)."""
    from minionerec.ranking.paired import load_predictions

    if method == "SASRec":
        rows = json.loads(Path(run["sasrec"]["predictions"][split]).read_text())
        return [{"item_sid": row["item_id"], **row} for row in rows]
    return load_predictions(run["predictions"][method][split])


def paired_methods(run: dict, a: str, b: str, split: str) -> dict:
    """Per-user NDCG@10 of method b minus method a on one seed's rows of a split (minionerec.ranking.paired)."""
    from minionerec.ranking.paired import paired_difference

    rows_a, rows_b = scored_rows(run, a, split), scored_rows(run, b, split)
    if [str(row["item_id"]) for row in rows_a] != [str(row["item_id"]) for row in rows_b]:
        raise SystemExit(f"error: {a} and {b} scored different {split} rows: no paired difference")
    return paired_difference(rows_a, rows_b, "NDCG", 10)


def print_seed_tables(result: dict) -> None:
    """NDCG@10 per seed, mean and spread for every method, valid then test (with the scratch arm: the arms table);
    the RL - SFT line over seeds and the SFT+RL / SASRec ratios."""
    from minionerec.ranking.paired import format_over_seeds

    seeds, agg = list(result["seeds"]), result["over_seeds"]
    if "pretrained_vs_scratch" in agg:
        print_arms_table(result)
    else:
        for split in ("valid", "test"):
            print(f"\n== NDCG@10 by seed, {split}")
            print(f"{'method':18s} " + " ".join(f"{'seed ' + str(s):>9s}" for s in seeds)
                  + f" {'mean':>8s} {'spread':>8s} {'spread/mean':>11s}")
            for method, by_split in agg["ndcg10"].items():
                d = by_split[split]
                rel = "n/a" if d["spread_over_mean"] is None else f"{d['spread_over_mean']:.1%}"
                print(f"{method:18s} " + " ".join(f"{v:9.4f}" for v in d["per_seed"])
                      + f" {d['mean']:8.4f} {d['spread']:8.4f} {rel:>11s}")
    if "rl_minus_sft" in agg:
        for split, d in agg["rl_minus_sft"].items():
            print(f"RL - SFT NDCG@10 on {split}, paired over seeds and users: {format_over_seeds(d)}")
        for method, key, baseline in ((SCRATCH.methods[1], "scratch_over_sasrec", "SASRec"),
                                      (MAIN.methods[1], "minionerec_over_sasrec", "SASRec"),
                                      (MAIN.methods[1], "minionerec_over_sasrec_by_sid", "SASRec by SID")):
            if key in agg:
                ratios = {split: "n/a" if r is None else f"{r:.3f}" for split, r in agg[key].items()}
                print(f"{method} / {baseline} NDCG@10 (means over seeds): test {ratios['test']} "
                      f"(valid {ratios['valid']})")


def print_arms_table(result: dict) -> None:
    """One table of every method (the pretrained MiniOneRec arm, its scratch twin, the baselines): NDCG@10 and HR@10
    per seed and their means, valid then test; then ARM_PAIRS' differences paired over seeds and users."""
    from minionerec.ranking.paired import format_over_seeds

    seeds, agg = list(result["seeds"]), result["over_seeds"]
    users = {split: d["users"] for split, d in result["seeds"][seeds[0]]["metrics"]["popularity"].items()}
    cols = [f"seed {s}" for s in seeds] + ["mean"]
    print(f"\n== {result['category']}: pretrained vs scratch vs SASRec ({users['valid']} valid, {users['test']} test "
          f"users; MiniOneRec = SFT from {result['knobs']['base_model']}, scratch = its architecture from random "
          f"weights, trained the same way)")
    print(f"{'split':5s} {'method':18s}" + "".join(f" {' ' + m + ' ':-^{10 * len(cols) - 1}}" for m in ("NDCG@10", "HR@10")))
    print(f"{'':24s}" + (" " + " ".join(f"{c:>9s}" for c in cols)) * 2)
    for split in ("valid", "test"):
        for method in agg["ndcg10"]:
            cells = [v for key in ("ndcg10", "hr10") for v in (*agg[key][method][split]["per_seed"],
                                                                 agg[key][method][split]["mean"])]
            print(f"{split:5s} {method:18s} " + " ".join(f"{v:9.4f}" for v in cells))
    for label, d in agg["pretrained_vs_scratch"].items():
        for split in ("valid", "test"):
            print(f"{label} NDCG@10 on {split}, paired over seeds and users: {format_over_seeds(d[split])}")


def print_summary(result: dict) -> None:
    summary = result["summary"]
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    print(f"\nNDCG@10 ratios: MiniOneRec/SASRec test {fmt(summary['minionerec_over_sasrec_test'])} "
          f"(valid {fmt(summary['minionerec_over_sasrec_valid'])}); MiniOneRec/SASRec by SID test "
          f"{fmt(summary['minionerec_over_sasrec_by_sid_test'])} (valid {fmt(summary['minionerec_over_sasrec_by_sid_valid'])}); RL/SFT test {fmt(summary['rl_over_sft_test'])} "
          f"(valid {fmt(summary['rl_over_sft_valid'])})")
    print_rl(result["guard"], summary["rl_minus_sft_paired"])
    if SCRATCH.name in result:
        print_rl(result[SCRATCH.name]["guard"], result[SCRATCH.name]["rl_minus_sft_paired"], f"{SCRATCH.name}: ")
    for target, held in summary["targets"].items():
        print(f"target {'HOLDS' if held else 'FAILS'}: {target}")


def print_rl(guard: dict | None, rl_minus_sft: dict, prefix: str = "") -> None:
    """One arm's GRPO: the guard's valid NDCG@10 by step and choice, RL - SFT per user on each split."""
    if guard:
        print(f"{prefix}RL guard (valid NDCG@10 by step): " + ", ".join(f"{c['step']} {c[guard['metric']]:.4f}"
                                                                       for c in guard["curve"])
              + f" -> step {guard['chosen_step']} kept" + (" (the SFT weights)" if guard["chosen_step"] == 0 else ""))
    for split, d in rl_minus_sft.items():
        print(f"{prefix}RL - SFT per-user NDCG@10 on {split}: {d['mean']:+.4f} +/- {d['se']:.4f} (paired SE, "
              f"z {d['z']:+.1f}; {d['better']} users better, {d['worse']} worse)")


def main(args: Args) -> dict:
    """One dataset: its results.json dict. Several ("+"-joined --category): {category: results} plus a closing
    table of every dataset's NDCG@10 ratios."""
    plan = resolve(args)
    sid_plan = sids_of(args)
    categories = [c for c in args.category.split("+") if c]
    if not categories or len(set(categories)) != len(categories):
        raise SystemExit(f"error: --category must be '+'-joined distinct names, got {args.category!r}")
    for category in categories:  # every dataset's files exist before the first one starts training
        data_paths(args.data_dir, category)
    if plan.base_model and not Path(plan.base_model, "config.json").is_file():
        hint = " (make pretrained writes it)" if plan.base_model.endswith(PRESETS["gpu_pretrained"]["base_model"]) else ""
        raise SystemExit(f"error: base model {plan.base_model}: no model directory there{hint}; "
                         f"--base_model tiny builds a tiny one instead")
    out_root = Path(args.output_dir or ROOT / "bench" / "out" / f"quality_{args.preset}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "disabled")
    import torch

    torch.set_num_threads(args.threads)
    changed = "\n".join(f"[quality]   {s}: {json.dumps(v)}" for s, v in plan.changed().items())
    print(f"[quality] preset={args.preset} data={args.data_dir} categories={categories} -> {out_root}\n"
          f"[quality] base model: {plan.base_model or 'a tiny model per seed (tiny section)'}"
          f"{' (random weights: sft.train_from_scratch)' if plan.base_model and plan.sft.train_from_scratch else ''}"
          f"{'; beside it the scratch arm: its architecture from random weights' if plan.scratch_arm else ''}\n"
          f"[quality] recipe {plan.recipe}, seeds {plan.seeds}, eval_sample {plan.eval_sample}; values other than "
          f"each script's defaults:\n{changed}", flush=True)
    results = {category: run_dataset(args, plan, sid_plan, category,
                                     out_root / category if len(categories) > 1 else out_root)
               for category in categories}
    if len(categories) == 1:
        return results[categories[0]]
    print(f"\n[quality] ##### {len(categories)} datasets, preset {args.preset}, seeds {plan.seeds}: "
          f"NDCG@10 means over seeds (spread = max - min over seeds)")
    methods = [m for m in method_order(plan) if m != "popularity" and m in results[categories[0]]["over_seeds"]["ndcg10"]]
    print(f"{'dataset':28s} {'split':>5s} " + " ".join(f"{m:>22s}" for m in methods))
    for category, r in results.items():
        for split in ("valid", "test"):
            cells = [f"{r['over_seeds']['ndcg10'][m][split]['mean']:.4f} "
                     f"(spread {r['over_seeds']['ndcg10'][m][split]['spread']:.4f})" for m in methods]
            print(f"{category:28s} {split:>5s} " + " ".join(f"{c:>22s}" for c in cells))
    (out_root / "results.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    from minionerec.run.cli import run

    run(main, Args)
