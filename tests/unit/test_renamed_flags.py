"""The alias table (minionerec.run.flags.RENAMED_FLAGS): a renamed flag's old name still works, on the command line
and as a recipe key, gives the same value as the new name with one warning line, and beside the new name is a
one-line error."""
import dataclasses

import pytest
import yaml

import evaluate
import rl
import sft
from minionerec.run.recipe import ConfigError, record_run, resolve_args
from minionerec.run.flags import RENAMED_FLAGS, FlagError, parse_args

SCRIPTS = {"sft": sft, "rl": rl, "evaluate": evaluate}
# a value other than the default for each new name (as a flag string, as fire passes it)
VALUES = {"recipe": None, "rank_eval_on_valid": "true", "rank_eval_every": "7", "rank_eval_beams": "5",
          "item_embeddings_path": "emb.npy", "sasrec_path": "sasrec.pt", "train_only_new_tokens": "true"}
CASES = [(script, old, new) for old, new in RENAMED_FLAGS.items() for script, module in SCRIPTS.items()
         if new in {f.name for f in dataclasses.fields(module.Args)}]


def fields(module) -> set[str]:
    return {f.name for f in dataclasses.fields(module.Args)}


def test_every_new_name_is_a_flag_and_no_old_name_is():
    every = set().union(*(fields(m) for m in SCRIPTS.values()))
    assert set(RENAMED_FLAGS.values()) <= every
    assert not set(RENAMED_FLAGS) & every
    assert {(s, old) for s, old, _ in CASES} >= {("sft", "config"), ("rl", "config"), ("evaluate", "config"),
                                                 ("sft", "freeze_LLM"), ("rl", "test_beam")}


def recipe_file(tmp_path, script: str, values: dict) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({script: values}))
    return str(path)


@pytest.mark.parametrize("script, old, new", CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_old_flag_gives_the_new_value_and_one_warning(script, old, new, tmp_path, capsys):
    args_cls = SCRIPTS[script].Args
    value = VALUES[new] or recipe_file(tmp_path, script, {})
    assert getattr(resolve_args(args_cls, {old: value}), new) == getattr(resolve_args(args_cls, {new: value}), new)
    err = capsys.readouterr().err
    assert err == f"warning: --{old} is deprecated; use --{new}\n"
    with pytest.raises(FlagError, match=rf"^--{old} is the old name of --{new}; give only --{new}$"):
        resolve_args(args_cls, {old: value, new: value})


@pytest.mark.parametrize("script, old, new", [c for c in CASES if c[1] != "config"],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_old_recipe_key_gives_the_new_value_and_one_warning(script, old, new, tmp_path, capsys):
    args_cls = SCRIPTS[script].Args
    old_recipe = recipe_file(tmp_path, script, {old: yaml.safe_load(VALUES[new])})
    args = resolve_args(args_cls, {"recipe": old_recipe})
    assert getattr(args, new) == getattr(parse_args(args_cls, {new: VALUES[new]}), new)
    assert capsys.readouterr().err == f"warning: {old_recipe}: {script}: {old} is deprecated; use {new}\n"
    # what the run resolved names the new key, sourced from the recipe, without a second warning
    doc = record_run(dataclasses.replace(args, dry_run=True), tmp_path / "out")
    assert doc["args"][new]["source"] == f"recipe {old_recipe}" and old not in doc["args"]
    assert "warning" not in capsys.readouterr().err
    # the command line's new name overrides the recipe's old one
    assert getattr(resolve_args(args_cls, {"recipe": old_recipe, new: VALUES[new]}), new) == getattr(args, new)
    both = recipe_file(tmp_path, script, {old: yaml.safe_load(VALUES[new]), new: yaml.safe_load(VALUES[new])})
    with pytest.raises(ConfigError, match=rf"^{both}: {script}: {old} is the old name of {new}; give only {new}$"):
        resolve_args(args_cls, {"recipe": both})


def test_config_key_in_a_recipe_stays_unknown(tmp_path):
    """--recipe is about the run, never read from a recipe: `config:` there is an unknown key, as before."""
    with pytest.raises(ConfigError, match=r"r\.yaml: sft: unknown key 'config'"):
        resolve_args(sft.Args, {"recipe": recipe_file(tmp_path, "sft", {"config": "x.yaml"})})


def test_both_names_on_the_command_line_is_one_line_exit_2(monkeypatch, capsys):
    from minionerec.run import cli

    monkeypatch.setattr("sys.argv", ["sft.py", "--eval_step", "5", "--rank_eval_every", "5"])
    with pytest.raises(SystemExit) as exit_info:
        cli.run(sft.main, sft.Args)
    assert exit_info.value.code == cli.SETUP_EXIT_CODE
    assert capsys.readouterr().err == ("error: --eval_step is the old name of --rank_eval_every; give only "
                                       "--rank_eval_every\n")
