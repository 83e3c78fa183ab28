"""Above the pipeline: running the launchers' own commands, e.g. the CPU rehearsal of a GPU recipe (rehearsal)."""
