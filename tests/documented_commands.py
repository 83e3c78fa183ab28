"""Every launcher command the project documents, read from where users read them, and how the test runs each.

Sources: README.md and docs/*.md (code blocks and inline code), the header comments of sft.sh, rl.sh, evaluate.sh,
slurm/*.sbatch and recipes/*.yaml. A command is `[VAR=value ...] bash sft.sh|rl.sh|evaluate.sh [--flag value ...]`
or `sbatch [--option ...] slurm/<stage>.sbatch [--flag value ...]`. tests/slow/test_documented_commands.py runs each
distinct one under REHEARSE=1 (the recipe end to end on CPU with a tiny stand-in model), several nodes as local
launches on 127.0.0.1 with their pre-check on; NOT_RUN lists those that cannot run here, with the reason.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = ("sft.sh", "rl.sh", "evaluate.sh")
SBATCH = ("slurm/sft.sbatch", "slurm/rl.sbatch", "slurm/evaluate.sbatch")
# the environment a command's paths resolve to here: the test's own data and output directories
PATH_VARS = {"DATA_DIR", "CATEGORY", "OUTPUT_DIR", "RESULT_JSON", "MODEL", "MODEL_PATH", "MASTER_ADDR", "MASTER_PORT"}
# launcher defaults (a command that leaves them out runs the same as one that spells them out)
DEFAULTS = {"RECIPE": "recipes/paper_qwen2.5_1.5b_8gpu.yaml", "CONFIG": "config/zero2_opt.yaml"}
# what a launch YAML decides besides its topology (which the launchers pass accelerate: minionerec.run.topology)
LAUNCH_KEYS = ("distributed_type", "deepspeed_config", "mixed_precision", "use_cpu")
# documented commands that cannot run here, with the reason (the test fails on a command neither run nor listed)
NOT_RUN: dict[str, str] = {}
# documented commands whose training, on CPU, is another test's code path: their rehearsal stops after the pre-check
# (flags, recipe, data, topology, the plan and the memory arithmetic of the real run), CI's time going to the distinct
# ones. Each entry: what the command matches (launcher, recipe, nodes, its flags or VAR=value assignments), the reason.
PAPER = DEFAULTS["RECIPE"]
TWO_NODE_RL = "the two-node rl.sh rehearsal of the paper recipe (ZeRO-2 full fine-tuning, a synced reference model)"
DRY_ONLY: list[tuple[dict, str]] = [
    ({"launcher": "sft.sh", "recipe": PAPER, "nodes": 1},
     "trains as the sbatch slurm/sft.sbatch rehearsal (this recipe through sft.sh on each of two nodes) does"),
    ({"launcher": "sft.sh", "BASE_MODEL": "models/SmolLM2-135M"},
     "trains as the sbatch slurm/sft.sbatch rehearsal (the same recipe values) does, with the model "
     "tests/slow/test_smollm2.py fine-tunes for real (sft.py, rl.py, evaluate.py)"),
    ({"launcher": "rl.sh", "recipe": PAPER, "nodes": 1}, f"trains as {TWO_NODE_RL} does, on one node fewer"),
    ({"launcher": "rl.sh", "recipe": "recipes/qwen2.5_1.5b_1gpu.yaml"},
     f"trains as {TWO_NODE_RL} does: the same RL values, bar its evaluation during training"),
    ({"launcher": "rl.sh", "recipe": "recipes/qwen2.5_7b_8gpu.yaml"},
     f"trains as {TWO_NODE_RL} does, with the activation checkpointing of the 7B LoRA RL rehearsal"),
    ({"launcher": "rl.sh", "recipe": "recipes/qwen2.5_32b_lora_8gpu.yaml"},
     "trains as the 7B LoRA RL rehearsal does (LoRA under ZeRO-2: on CPU the ZeRO-3 YAML is replaced, peft needing "
     "CUDA there)"),
    ({"launcher": "rl.sh", "recipe": "recipes/demo.yaml", "CONFIG": "config/zero2_cpu.yaml"},
     "trains as tests/slow/test_rl_world_sizes.py does (this recipe and launch YAML through rl.sh at 1, 2 and 4 "
     "processes)"),
    ({"launcher": "evaluate.sh", "nodes": 1},
     "evaluates as the sbatch slurm/evaluate.sbatch rehearsal (evaluate.sh on each of two nodes) does; "
     "tests/slow/test_evaluate_processes.py runs evaluate.sh with 1 and 2 processes"),
]


@dataclass(frozen=True)
class Command:
    text: str  # as documented (placeholders replaced)
    env: tuple[tuple[str, str], ...]  # VAR=value assignments before the launcher
    launcher: str  # sft.sh | rl.sh | evaluate.sh | slurm/<stage>.sbatch
    flags: tuple[str, ...]  # after the launcher
    sbatch_options: tuple[str, ...] = ()

    @property
    def variables(self) -> dict:
        return dict(self.env)

    def nodes(self) -> int:
        """How many nodes the command starts: NNODES, a node-rank alternative (0|1), a multi-node launch YAML, or an
        sbatch job's --nodes (its #SBATCH default: 2)."""
        if self.launcher in SBATCH:
            option = next((o for o in self.sbatch_options if o.startswith("--nodes=")), "--nodes=2")
            return int(option.split("=")[1])
        env = self.variables
        if "NNODES" in env:
            return int(env["NNODES"])
        if "|" in env.get("NODE_RANK", "") or int(env.get("NODE_RANK", "0").split("|")[0]) > 0:
            return 2
        config = env.get("CONFIG", "")
        if config and "two_nodes" in config:
            return 2
        return 1

    def dry_only(self) -> str:
        """The reason this command's rehearsal stops after its pre-check (DRY_ONLY), or ''."""
        facts = {**self.variables, "launcher": self.launches(), "recipe": self.variables.get("RECIPE", PAPER),
                 "nodes": self.nodes(), "flags": self.flags}
        return next((why for when, why in DRY_ONLY if all(facts.get(k) == v for k, v in when.items())), "")

    def launches(self) -> str:
        """The launcher it runs (an sbatch script runs its stage's launcher on every node)."""
        return self.launcher.removeprefix("slurm/").replace(".sbatch", ".sh")

    def key(self) -> tuple:
        """Commands that run the same launcher, recipe values, launch config, processes per node, node count and flags
        are one rehearsal (paths differ only in where files are, and a model directory that is not here is replaced by
        the recipe's stand-in either way; launch YAMLs with the same LAUNCH_KEYS are one, as the launchers override
        the rest). An sbatch command and the launcher command it runs on each node share a key."""
        import yaml

        from minionerec.run.topology import resolve

        env = self.variables
        launcher = self.launches()
        recipe = env.get("RECIPE", DEFAULTS["RECIPE"])
        section = (yaml.safe_load((ROOT / recipe).read_text()) or {}).get(launcher.removesuffix(".sh"), {}) \
            if (ROOT / recipe).is_file() else recipe
        config = env.get("CONFIG", DEFAULTS["CONFIG"]) if launcher == "rl.sh" else ""
        launch = yaml.safe_load((ROOT / config).read_text()) if config else {}
        launch = {k: launch.get(k) for k in LAUNCH_KEYS}
        topology = {k: v for k, v in env.items() if k in ("NPROC", "GPUS_PER_NODE", "NUM_PROCESSES")}
        topology["MASTER_ADDR"] = "127.0.0.1"
        nproc = resolve(launcher.removesuffix(".sh"), topology, str(ROOT / config) if config else "", gpus=lambda: 1,
                        free_port=lambda: 0).nproc
        model = env.get("BASE_MODEL", "")
        flags = tuple(f for f in self.flags if f != "--rehearse")
        section = sorted(section.items()) if isinstance(section, dict) else section
        return (launcher, repr(section), repr(launch), nproc, self.nodes(), flags,
                model if model and (ROOT / model).is_dir() else "")


def normalise(text: str) -> str:
    """Placeholders out: `<node 0>` / `<...>` -> HOST, Markdown's escaped `\\|` -> `|`, `0/1` ranks -> `0|1`."""
    text = text.replace("\\|", "|")
    text = re.sub(r"<[^>]*>", "HOST", text)
    return re.sub(r"NODE_RANK=0/1", "NODE_RANK=0|1", text)


def commands_in(text: str) -> list[Command]:
    """Every launcher command in a line of text (several per line when `;`-joined or in a table)."""
    found = []
    for part in re.split(r";|&&|`|\s-\s|\(", normalise(text)):
        try:
            tokens = shlex.split(part, comments=True)
        except ValueError:
            tokens = part.split()
        for i, token in enumerate(tokens):
            if token == "bash" and i + 1 < len(tokens) and tokens[i + 1] in LAUNCHERS:
                launcher, options, rest = tokens[i + 1], (), tokens[i + 2:]
            elif token == "sbatch":
                j = i + 1
                while j < len(tokens) and tokens[j].startswith("--"):
                    j += 1
                if j >= len(tokens) or tokens[j] not in SBATCH:
                    continue
                launcher, options, rest = tokens[j], tuple(tokens[i + 1:j]), tokens[j + 1:]
            else:
                continue
            env, k = [], i - 1
            while k >= 0 and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", tokens[k]):
                env.insert(0, tuple(tokens[k].split("=", 1)))
                k -= 1
            flags, j = [], 0
            while j < len(rest) and rest[j].startswith("--"):
                flags.append(rest[j])
                if j + 1 < len(rest) and not rest[j + 1].startswith("--") and "=" not in rest[j] and \
                        re.fullmatch(r"[\w./:+-]+", rest[j + 1]):
                    flags.append(rest[j + 1])
                    j += 1
                j += 1
            found.append(Command(part.strip(), tuple(env), launcher, tuple(flags), options))
    return found


def markdown_lines(path: Path) -> list[str]:
    """Lines of fenced code blocks, and the inline code spans of the other lines."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            lines.append(line)
        else:
            lines += re.findall(r"`([^`]+)`", line)
    return lines


def header_lines(path: Path) -> list[str]:
    """The leading comment block of a script or recipe."""
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("#!"):
            continue
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#"))
    return lines


def sources() -> dict[str, list[str]]:
    files = {p: markdown_lines(p) for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
    for p in [*(ROOT / n for n in LAUNCHERS), *sorted((ROOT / "slurm").glob("*.sbatch")),
              *sorted((ROOT / "recipes").glob("*.yaml"))]:
        files[p] = header_lines(p)
    return {str(p.relative_to(ROOT)): lines for p, lines in files.items()}


def documented() -> dict[tuple, list[tuple[str, Command]]]:
    """Rehearsal key -> [(where, command)] for every documented launcher command, the one to run first."""
    out: dict[tuple, list[tuple[str, Command]]] = {}
    for where, lines in sources().items():
        for line in lines:
            for command in commands_in(line):
                if where.startswith("recipes/") and "RECIPE" not in command.variables:  # a recipe's header: itself
                    command = Command(command.text, (("RECIPE", where), *command.env), command.launcher,
                                      command.flags, command.sbatch_options)
                out.setdefault(command.key(), []).append((where, command))
    return {key: sorted(found, key=first) for key, found in out.items()}


def first(where_command: tuple[str, Command]) -> tuple:
    """Which of a key's commands runs: a documented rl.sh command with its own NODE_RANK (the node-1 command the
    pre-check once refused), then an sbatch one (SLURM's path as well as the launcher's), then the first found."""
    command = where_command[1]
    own_rank = command.launcher == "rl.sh" and "NODE_RANK" in command.variables
    return not own_rank, command.launcher not in SBATCH
