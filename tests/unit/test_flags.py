"""Flags are documented once, by --help: every Args field's line carries a trailing `# comment`."""
import dataclasses
import importlib
import inspect
import io
import re
import tokenize

import pytest

from minionerec.run.flags import usage

MODULES = ["sft", "rl", "evaluate", "sasrec", "recommend", "serve", "compare", "convert_dataset",
           "minionerec.model.tiny", "minionerec.model.pretrained", "minionerec.rq.text2emb", "minionerec.rq.rqkmeans", "minionerec.rq.balanced_rqkmeans", "minionerec.rq.rqkmeans_plus",
           "minionerec.rq.rqvae", "minionerec.rq.add_items", "minionerec.rq.report", "minionerec.rq.minilm", "minionerec.prep.make_demo_data", "minionerec.prep.amazon18_data_process",
           "minionerec.prep.amazon23_data_process", "bench.compare_seeds", "bench.quality"]


def help_texts(args_cls) -> dict[str, str]:
    """field -> the trailing comment of its line, in the class of the MRO that (last) defines it."""
    texts = {}
    for cls in reversed(args_cls.__mro__):
        own = vars(cls).get("__annotations__", {})
        for line in inspect.getsource(cls).splitlines() if dataclasses.is_dataclass(cls) else []:
            match = re.match(r"\s+(\w+)\s*:", line)
            if match and match[1] in own:
                tokens = tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline)
                texts[match[1]] = next((t.string[1:].strip() for t in tokens if t.type == tokenize.COMMENT), "")
    return texts


@pytest.mark.parametrize("name", MODULES)
def test_every_flag_has_help(name):
    args_cls = importlib.import_module(name).Args
    fields = [f.name for f in dataclasses.fields(args_cls)]
    texts = help_texts(args_cls)
    undocumented = [f for f in fields if not texts.get(f)]
    assert not undocumented, f"{name}.Args: no trailing '# help' comment on: {', '.join(undocumented)}"
    shown = usage(args_cls)
    missing = [f for f in fields if not re.search(rf"^\s*{f}\s*:", shown, re.M)]
    assert not missing, f"{name}: --help does not list: {', '.join(missing)}"


def test_help_shows_the_docstring_once_and_the_command_as_typed():
    """A two-line Args docstring is the description, not a flag line; `python -m bench.quality --help` names the
    module, not the path of its __main__.py."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "bench.quality", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("usage: python -m bench.quality --flag value ...\n")
    flags = out.split("flags (name: type = default  # meaning):\n", 1)[1].splitlines()
    assert all(re.match(r"  (\w+\s*:|#)", line) for line in flags), [f for f in flags if not re.match(r"  (\w+\s*:|#)", f)]
