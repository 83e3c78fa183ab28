"""`python -m bench.quality --flag value ...`: the fire shim (flags: --help)."""
from bench.quality.plan import Args
from bench.quality.run import main
from minionerec.run.cli import run

if __name__ == "__main__":
    run(main, Args)
