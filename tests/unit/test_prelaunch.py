"""minionerec.run.prelaunch's reading of --dry_run among a launcher's extra flags (the launches: slow/test_launchers.py)."""
from minionerec.run.prelaunch import is_dry_run, without_dry_run


def test_dry_run_flags_are_recognised_and_replaced():
    assert is_dry_run(["--dry_run", "true"]) and is_dry_run(["--dry_run=1"]) and is_dry_run(["--x", "1", "--dry_run"])
    assert not is_dry_run(["--dry_run", "false"]) and not is_dry_run(["--x", "1"])
    assert without_dry_run(["--a", "1", "--dry_run", "false", "--b", "2"]) == ["--a", "1", "--b", "2"]
    assert without_dry_run(["--dry_run=false", "--a", "1"]) == ["--a", "1"]
