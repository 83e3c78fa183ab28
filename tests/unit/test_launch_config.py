"""A launch YAML's topology: num_processes (accelerate's total) and num_machines are positive and split evenly."""
import pytest

from conftest import ROOT
from minionerec.run.recipe import ConfigError
from minionerec.run.launch_config import check_accelerate_yaml


@pytest.mark.parametrize("processes, machines, message", [
    ("0", "1", r"num_processes must be a positive integer, got 0"),
    ("3", "2", r"num_processes 3 \(the total over machines\) is not a multiple of num_machines 2"),
    ("2", "0", r"num_machines must be a positive integer, got 0"),
])
def test_bad_topology_is_one_line(tmp_path, processes, machines, message):
    text = (ROOT / "config" / "ddp.yaml").read_text()
    text = text.replace("num_processes: 8", f"num_processes: {processes}").replace("num_machines: 1", f"num_machines: {machines}")
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        check_accelerate_yaml(str(tmp_path / "t.yaml"))


def test_every_shipped_launch_yaml_passes():
    for path in sorted((ROOT / "config").glob("*.yaml")):
        check_accelerate_yaml(str(path))
