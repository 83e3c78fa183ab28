"""What a bench run uses, resolved and checked before any training: the flags (Args), the presets, each script's
args from the recipe and --set (Plan), the arms, the SID plan and the dataset's files; every check a one-line error.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import sids

ROOT = Path(__file__).resolve().parents[2]

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
            "seed", "save_steps", "eval_steps", "logging_steps", "rank_eval_beams"),
    "rl": ("model_path", "train_file", "eval_file", "output_dir", "sid_index_path", "item_meta_path", "category",
           "seed", "sasrec_path", "title2sid", "gradient_checkpointing", "save_steps", "logging_steps", "eval_sample",
           "rank_eval_beams"),
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
        from minionerec.run.recipe import RUN_FLAGS

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
    from minionerec.run.recipe import RUN_FLAGS, nearest

    valid = [f.name for f in dataclasses.fields(cls) if f.name not in RUN_FLAGS]
    if key in BENCH_SETS[section]:
        hint = " (use the bench's --seeds)" if key == "seed" else ""
        raise SystemExit(f"error: {where}: {section}.{key} is set by the bench itself, per run{hint}")
    if key not in valid:
        raise SystemExit(f"error: {where}: {section} has no flag {key!r}{nearest(key, valid)}")


def parse_set(text: str, classes: dict) -> dict[str, dict[str, str]]:
    """--set "sft.learning_rate=1e-3,rl.beta=0" -> {section: {flag: value}}; a value may hold commas
    (rl.lora_target_modules=q_proj,v_proj): items split only before the next `section.flag=`. A renamed flag's old
    name (minionerec.run.flags.RENAMED_FLAGS) gives its new one, with a warning."""
    from minionerec.run.recipe import nearest
    from minionerec.run.flags import rename_deprecated

    out = {section: {} for section in classes}
    for item in re.split(r",(?=\s*\w+\.\w+\s*=)", text) if text.strip() else []:
        key, eq, value = item.partition("=")
        section, dot, flag = key.strip().partition(".")
        if not eq or not dot or not flag:
            raise SystemExit(f"error: --set: expected section.flag=value items joined by ',', got {item!r}")
        if section not in classes:
            raise SystemExit(f"error: --set: unknown section {section!r}{nearest(section, classes)}; "
                             f"sections: {', '.join(classes)}")
        (flag, _), = rename_deprecated(classes[section], {flag: ""}, where=f"--set {section}.", dashes="").items()
        check_key(section, flag, classes[section], "--set")
        if flag in out[section]:
            raise SystemExit(f"error: --set: {section}.{flag} is given twice")
        out[section][flag] = value.strip()
    return out


def resolve(args: Args) -> Plan:
    """Each script's args from the recipe (read and type-checked by minionerec.run.recipe, as the scripts read
    theirs) with --set applied, the bench's values from PRESETS and its flags; every check is a one-line error."""
    from minionerec.data.prompts import STYLES
    from minionerec.run.recipe import ConfigError, read_recipe, recipe_values
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

