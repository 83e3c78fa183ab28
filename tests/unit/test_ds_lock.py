"""minionerec.run.ds_lock: a lock left by an interrupted DeepSpeed JIT build is one line and exit 2, in seconds,
instead of every later DeepSpeed launch waiting for it forever (torch's FileBaton.wait)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from minionerec.run import ds_lock

ROOT = Path(__file__).resolve().parents[2]
OP = "deepspeed_shm_comm"  # DeepSpeed's CPU communication op (deepspeed/ops/op_builder/cpu/comm.py)


def plant(build_dir: Path, age_s: float) -> Path:
    build_dir.mkdir(parents=True, exist_ok=True)
    lock = build_dir / "lock"
    lock.touch()
    then = time.time() - age_s
    os.utime(lock, (then, then))
    return lock


def check(env: dict, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    full = {k: v for k, v in os.environ.items() if k not in ("TORCH_EXTENSIONS_DIR", "XDG_CACHE_HOME")}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "minionerec.run.ds_lock"], cwd=ROOT, env={**full, **env},
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - start


def test_a_stale_lock_is_one_line_and_exit_2_within_seconds(tmp_path):
    lock = plant(tmp_path / OP, age_s=600)
    proc, took = check({"TORCH_EXTENSIONS_DIR": str(tmp_path)})
    assert proc.returncode == 2 and took < 20, (proc.returncode, took)
    assert proc.stderr.splitlines() == [f"error: stale DeepSpeed JIT lock {lock} (from an interrupted build): delete "
                                        "it and rerun (a DeepSpeed launch would wait for it forever)"]
    lock.unlink()  # what the message says to do
    proc, _ = check({"TORCH_EXTENSIONS_DIR": str(tmp_path)})
    assert proc.returncode == 0 and proc.stderr == ""


def test_no_lock_or_a_fresh_one_passes(tmp_path):
    assert check({"TORCH_EXTENSIONS_DIR": str(tmp_path / "absent")})[0].returncode == 0
    plant(tmp_path / OP, age_s=0)  # a load that holds the baton right now
    proc, _ = check({"TORCH_EXTENSIONS_DIR": str(tmp_path)})
    assert proc.returncode == 0 and proc.stderr == ""


def test_an_old_lock_with_a_build_running_in_its_directory_is_not_stale(tmp_path):
    lock = plant(tmp_path / OP, age_s=600)
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path)}
    assert ds_lock.stale_locks(env) == [lock]
    worker = subprocess.Popen(["sleep", "30"], cwd=lock.parent)  # stands in for ninja / the compiler
    try:
        assert ds_lock.stale_locks(env) == []
    finally:
        worker.kill()
        worker.wait()
    assert ds_lock.stale_locks(env) == [lock]


def test_lock_paths_are_torchs_build_directories(tmp_path, monkeypatch):
    """Both namings of torch.utils.cpp_extension._get_build_directory: $TORCH_EXTENSIONS_DIR/<op>, and
    <cache>/torch_extensions/<py tag>_<cpu|cuXXX>/<op> without it."""
    from torch.utils.cpp_extension import _get_build_directory

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    explicit = plant(Path(_get_build_directory(OP, False)), age_s=600)
    assert ds_lock.stale_locks({"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}) == [explicit]

    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    default = plant(Path(_get_build_directory(OP, False)), age_s=600)
    assert default.parent.parent.name.startswith(f"py{sys.version_info.major}{sys.version_info.minor}")
    assert ds_lock.stale_locks({"XDG_CACHE_HOME": str(tmp_path / "cache")}) == [default]
    proc, _ = check({"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 2 and str(default) in proc.stderr


def test_rl_sh_stops_on_a_stale_lock_before_launching(tmp_path):
    """rl.sh runs the check right after the launch-config check: one line, exit 2, accelerate never starts."""
    plant(tmp_path / "ext" / OP, age_s=600)
    fake = tmp_path / "accelerate"
    fake.write_text(f"#!/bin/sh\ntouch {tmp_path / 'started'}\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("NPROC", "GPUS_PER_NODE", "NNODES", "NODE_RANK")}
    env.update(PYTHON=sys.executable, ACCELERATE=str(fake), CONFIG="config/zero2_cpu.yaml", PRECHECK="0",
               TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"), DATA_DIR=str(tmp_path / "no_data"))
    proc = subprocess.run(["bash", "rl.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    lines = [line for line in proc.stderr.splitlines() if "[WARNING]" not in line]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: stale DeepSpeed JIT lock "), proc.stderr[-2000:]
    assert not (tmp_path / "started").exists()


def test_an_unknown_argument_is_one_error_line_and_help_is_the_docstring(capsys):
    assert ds_lock.main(["--bogus", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [
        "error: python -m minionerec.run.ds_lock takes no arguments (got --bogus 1); see --help"]
    assert ds_lock.main(["--help"]) == 0
    assert capsys.readouterr().out.strip() == ds_lock.__doc__.strip()
