"""Recipes, precedence and run_config.yaml, --dry_run on every recipe, launch-config validation,
the GRPOConfig subclass, and launcher/recipe agreement (no hyperparameter in two places)."""
import dataclasses
import re
from pathlib import Path

from conftest import write
import pytest
import yaml

import evaluate
import rl
import sft
from minionerec.run.recipe import META_KEYS, ConfigError, record_run, resolve_args
from minionerec.rl.trainer import MiniOneRecGRPOConfig
from minionerec.run.launch_config import check_accelerate_yaml, check_deepspeed_json

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
SCRIPTS = {"sft": sft, "rl": rl, "evaluate": evaluate}
# the only flags a launcher may pass: paths, names and the recipe itself (hyperparameters live in recipes)
LAUNCHER_FLAGS = {"recipe", "base_model", "model_path", "train_file", "eval_file", "test_file", "info_file",
                  "sid_index_path", "item_meta_path", "output_dir", "result_json", "category"}


def test_precedence_and_every_source_in_run_config(tmp_path, monkeypatch):
    recipe = write(tmp_path / "r.yaml", "sft:\n  learning_rate: 1.0e-2\n  batch_size: 64\n")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")  # what accelerate exports from a launch YAML
    monkeypatch.setenv("WORLD_SIZE", "1")
    args = resolve_args(sft.Args, {"recipe": recipe, "learning_rate": "5e-4", "base_model": "m"})
    assert (args.learning_rate, args.batch_size, args.micro_batch_size) == (5e-4, 64, 4)  # flag > recipe > default
    record_run(args, tmp_path / "out")
    doc = yaml.safe_load((tmp_path / "out" / "run_config.yaml").read_text())
    assert doc["args"]["learning_rate"] == {"value": 5e-4, "source": "command line"}
    assert doc["args"]["batch_size"] == {"value": 64, "source": f"recipe {recipe}"}
    assert doc["args"]["micro_batch_size"] == {"value": 4, "source": "default"}
    assert doc["launch"]["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == {"value": "2", "source": "launch YAML"}
    assert doc["launch"]["WORLD_SIZE"] == {"value": "1", "source": "launcher"}


def test_recipe_values_are_type_checked(tmp_path):
    recipe = write(tmp_path / "r.yaml", "rl:\n  beta: lots\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: beta: expected float, got 'lots'"):
        resolve_args(rl.Args, {"recipe": recipe})


@pytest.mark.parametrize("text, message", [
    ("rl:\n  lerning_rate: 1.0e-5\n", r"r\.yaml: rl: unknown key 'lerning_rate' \(did you mean 'learning_rate'\?\)"),
    ("rl:\n  beta: 0.1\nlr:\n  beta: 0.1\n", r"r\.yaml: unknown section 'lr' \(did you mean 'rl'\?\)"),
    ("sft:\n  batch_size: 8\n", r"r\.yaml: no 'rl' section \(it has: sft\)"),
])
def test_bad_recipe_is_one_line_error(tmp_path, text, message):
    recipe = write(tmp_path / "r.yaml", text)
    with pytest.raises(ConfigError, match=message):
        resolve_args(rl.Args, {"recipe": recipe})


def paths_for(section: str, demo_data: Path, model_dir: Path, out: Path) -> dict:
    data = {"sid_index_path": str(demo_data / "index" / "Demo.index.json")}
    if section == "evaluate":
        return {**data, "base_model": str(model_dir), "test_file": str(demo_data / "test" / "Demo.csv"),
                "result_json": str(out / "predictions.json")}
    key = "base_model" if section == "sft" else "model_path"
    return {**data, key: str(model_dir), "train_file": str(demo_data / "train" / "Demo.csv"),
            "eval_file": str(demo_data / "valid" / "Demo.csv"),
            "item_meta_path": str(demo_data / "index" / "Demo.item.json"), "output_dir": str(out)}


@pytest.fixture
def no_weights(monkeypatch):
    """Any attempt to read model weights fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("--dry_run loaded weights")

    for module in SCRIPTS.values():
        monkeypatch.setattr(module, "load_model", refuse)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", refuse)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_dry_run_on_every_recipe_loads_no_weights(recipe, demo_data, tiny_model_dir, tmp_path, monkeypatch,
                                                  no_weights, capsys):
    monkeypatch.chdir(ROOT)  # recipes name launch files relative to the repo root, as the launchers run
    sections = [s for s in SCRIPTS if s in yaml.safe_load(recipe.read_text())]
    assert sections, recipe
    for section in sections:
        module = SCRIPTS[section]
        flags = {"recipe": str(recipe.relative_to(ROOT)), "dry_run": True,
                 **paths_for(section, demo_data, tiny_model_dir, tmp_path / section)}
        assert module.main(resolve_args(module.Args, flags)) is None
        assert "[config] dry run:" in capsys.readouterr().out
    assert not any(tmp_path.iterdir()), "a dry run wrote files"


def test_dry_run_checks_batch_divisibility_against_world_size(demo_data, tiny_model_dir, tmp_path, monkeypatch,
                                                              no_weights):
    monkeypatch.setenv("WORLD_SIZE", "3")  # 1024 is not divisible by 16 x 3
    flags = {"recipe": "recipes/paper_qwen2.5_1.5b_8gpu.yaml", "dry_run": True,
             **paths_for("sft", demo_data, tiny_model_dir, tmp_path)}
    with pytest.raises(SystemExit, match=r"--batch_size 1024 is not divisible by --micro_batch_size 16 x 3"):
        sft.main(resolve_args(sft.Args, flags))


def test_dry_run_refuses_unwritable_output_dir(demo_data, tiny_model_dir, tmp_path, no_weights):
    (tmp_path / "file").write_text("x")  # a file where the output directory should go
    flags = {"dry_run": True, **paths_for("rl", demo_data, tiny_model_dir, tmp_path / "file" / "out")}
    with pytest.raises(SystemExit, match=r"--output_dir .*is a file, not a directory"):
        rl.main(resolve_args(rl.Args, flags))


# ---- launch configs ----------------------------------------------------------------------------

def test_shipped_launch_configs_are_valid():
    for path in sorted((ROOT / "config").glob("*.yaml")):
        check_accelerate_yaml(str(path))
    for path in sorted((ROOT / "config").glob("*.json")):
        check_deepspeed_json(str(path))


def test_sft_deepspeed_jsons_follow_the_run():
    """bf16 and batch sizes are "auto" (filled from TrainingArguments); ZeRO-3 saves gathered 16-bit weights."""
    import json

    for name in ("sft_zero2.json", "sft_zero3.json", "sft_zero3_offload.json"):
        ds = json.loads((ROOT / "config" / name).read_text())
        assert ds["bf16"]["enabled"] == "auto" and ds["train_micro_batch_size_per_gpu"] == "auto", name
    assert json.loads((ROOT / "config" / "sft_zero3.json").read_text())["zero_optimization"][
        "stage3_gather_16bit_weights_on_model_save"] is True


def test_sft_deepspeed_flag_takes_json_or_yaml_naming_one(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert sft.deepspeed_config("config/sft_zero3.json") == "config/sft_zero3.json"
    assert sft.deepspeed_config("config/zero2_opt.yaml") == "config/zero2_opt.json"  # followed
    with pytest.raises(SystemExit, match=r"zero2_cpu\.yaml: an accelerate YAML without deepspeed_config_file"):
        sft.deepspeed_config("config/zero2_cpu.yaml")
    with pytest.raises(SystemExit, match=r"expected a DeepSpeed \.json or an accelerate \.yaml"):
        sft.deepspeed_config(write(tmp_path / "ds.txt", "{}"))
    bad = write(tmp_path / "ds.json", '{"zero_optimization": {"stage": 2, "overlap_com": true}}')
    with pytest.raises(SystemExit, match=r"zero_optimization: unknown key 'overlap_com' \(did you mean 'overlap_comm'\?\)"):
        sft.deepspeed_config(bad)


# ---- the GRPOConfig subclass -------------------------------------------------------------------

def test_rl_flags_reach_grpo_config(tmp_path):
    args = rl.Args(output_dir=str(tmp_path), batch_size=8, micro_batch_size=8, num_generations=4, max_grad_norm=0.7,
                   warmup_steps=0.1, epsilon=0.1, epsilon_high=0.28, num_iterations=2, scale_rewards="batch",
                   loss_type="dr_grpo", reward_type="rule+ranking_only", reward_weights="1+0.5", add_gt=True,
                   beam_search=True, mask_all_zero=True, learning_rate=3e-6)
    config = rl.grpo_config(args, world_size=1, started=1)
    assert isinstance(config, MiniOneRecGRPOConfig)
    assert (config.max_grad_norm, config.warmup_steps, config.epsilon, config.epsilon_high) == (0.7, 0.1, 0.1, 0.28)
    assert (config.num_iterations, config.scale_rewards, config.loss_type) == (2, "batch", "dr_grpo")
    assert config.reward_weights == [1.0, 0.5] and config.learning_rate == 3e-6
    assert (config.add_gt, config.beam_search, config.mask_all_zero, config.dynamic_sampling) == (True, True, True, False)
    assert (config.per_device_train_batch_size, config.gradient_accumulation_steps) == (8, 1)
    # the global batch: 4 processes x micro 2 x accumulation 2 = 16 completions a step, as the 1-process run's 2 x 8
    global_16 = dataclasses.replace(args, batch_size=16, micro_batch_size=2)
    assert rl.grpo_config(global_16, 4, 1).gradient_accumulation_steps == 2
    assert rl.grpo_config(global_16, 1, 1).gradient_accumulation_steps == 8
    assert rl.grpo_config(dataclasses.replace(args, loss_type="bnpo", epsilon_high=0.0), 1, 1).epsilon_high is None
    assert rl.grpo_config(dataclasses.replace(args, loss_type="", dapo=True), 1, 1).loss_type == "dapo"


@pytest.mark.parametrize("overrides, message", [
    (dict(reward_type="rule+ranking_only", reward_weights="1"), r"needs 2 number\(s\), one per reward \(rule, ranking_only\)"),
    (dict(reward_type="ranking+rule"), r"names a reward twice"),
    (dict(dapo=True, loss_type="bnpo"), r"--dapo true contradicts --loss_type bnpo"),
])
def test_bad_grpo_options_fail_before_loading(demo_data, tiny_model_dir, tmp_path, overrides, message):
    args = rl.Args(**{**paths_for("rl", demo_data, tiny_model_dir, tmp_path), "batch_size": 8, "micro_batch_size": 8,
                      "num_generations": 4, **overrides})
    with pytest.raises(SystemExit, match=message):
        rl.main(args)


def test_grpo_config_subclass_validates_its_options(tmp_path):
    with pytest.raises(ValueError, match="--dynamic_sampling applies to sampled rollouts"):
        MiniOneRecGRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                             dynamic_sampling=True, beam_search=True, report_to=[], bf16=False)


# ---- one source of truth -----------------------------------------------------------------------

def launcher_flags(path: Path) -> set[str]:
    """The --flags a launcher passes to its Python script (comments dropped)."""
    code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
    return set(re.findall(r"(?<![\w-])--([a-zA-Z_]+)", code))


@pytest.mark.parametrize("launcher, module", [("sft.sh", sft), ("rl.sh", rl), ("evaluate.sh", evaluate)])
def test_launchers_pass_no_hyperparameter(launcher, module):
    fields = {f.name for f in dataclasses.fields(module.Args)}
    passed = launcher_flags(ROOT / launcher) & fields
    assert passed <= LAUNCHER_FLAGS, f"{launcher} passes hyperparameters {sorted(passed - LAUNCHER_FLAGS)}"
    assert "recipe" in passed  # ... and takes them from the recipe


def test_demo_and_quality_bench_read_their_recipes():
    demo = (ROOT / "demo.sh").read_text()
    assert "recipes/demo.yaml" in demo
    every_field = {f.name for m in SCRIPTS.values() for f in dataclasses.fields(m.Args)} - LAUNCHER_FLAGS
    assert not launcher_flags(ROOT / "demo.sh") & every_field
    from bench import quality

    for preset in quality.PRESETS:
        recipe = yaml.safe_load((ROOT / "recipes" / f"quality_{preset}.yaml").read_text())
        plan = quality.resolve(quality.Args(preset=preset))
        assert (plan.sft.max_steps, plan.sft.learning_rate, plan.rl.max_steps, plan.rl.learning_rate,
                plan.evaluate.num_beams) == (
            recipe["sft"]["max_steps"], recipe["sft"]["learning_rate"], recipe["rl"]["max_steps"],
            recipe["rl"]["learning_rate"], recipe["evaluate"]["num_beams"])
        tiny = recipe.get("tiny", {})  # gpu_pretrained: no tiny section (a pretrained base model)
        assert (plan.tiny.hidden_size, plan.sasrec.epochs) == (tiny.get("hidden_size", quality.script_args()["tiny"]().hidden_size),
                                                              recipe["sasrec"]["epochs"])
        # every section is a script's own (no bench section): its keys are that script's flags, nothing renamed
        assert set(recipe) - META_KEYS <= {"sft", "rl", "evaluate", "sasrec", "tiny"}
        for section, values in recipe.items():
            if section not in META_KEYS:
                assert values == {k: getattr(getattr(plan, section), k) for k in values}, (preset, section)
