# Sourced by slurm/*.sbatch: a SLURM job's topology in the variables every launcher reads (minionerec.run.topology).
# One launcher per node (srun --ntasks-per-node=1); each starts one process per GPU of its node.
#   NNODES       SLURM_JOB_NUM_NODES
#   NODE_RANK    SLURM_NODEID, which srun sets in each node's task (run_on_nodes, below)
#   MASTER_ADDR  the job's first host (scontrol show hostnames), reachable from every node
#   MASTER_PORT  20000 + the job id modulo 20000: two jobs sharing a node do not share a port
#   NPROC        SLURM_GPUS_ON_NODE when SLURM sets it; else the launcher counts the visible GPUs
# Each stays as it is when already set (e.g. MASTER_ADDR=ib0 address of the first node).
: "${SLURM_JOB_NUM_NODES:?not inside a SLURM job: submit with sbatch slurm/<stage>.sbatch}"
export NNODES=${NNODES:-$SLURM_JOB_NUM_NODES}
export MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
export MASTER_PORT=${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
[ -n "${SLURM_GPUS_ON_NODE:-}" ] && export NPROC=${NPROC:-$SLURM_GPUS_ON_NODE}
# every node must write into the same OUTPUT_DIR: give a path on the shared file system (the launchers check it)
run_on_nodes() {  # run_on_nodes LAUNCHER ARGS...: the launcher once per node, NODE_RANK from srun's SLURM_NODEID
  srun --nodes="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \
      bash -c 'export NODE_RANK=$SLURM_NODEID; exec bash "$@"' run_on_nodes "$@"
}
