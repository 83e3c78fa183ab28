"""Running a job: flags, recipes and their precedence, the one error path, atomic writes, resume,
process groups, throughput. Imports nothing else from minionerec: every other subpackage may use it."""
