#!/usr/bin/env bash
# Make Debian's SLURM (slurmctld, slurmd, sbatch ...) and munge available for tests/test_sweep_slurm.py, which
# starts its own throwaway single-node cluster as root. Installs `slurm-wlm` + `munge` only when missing.
set -euo pipefail
tools=(slurmctld slurmd sbatch scancel squeue munged)
have() { for t in "${tools[@]}"; do command -v "$t" > /dev/null || return 1; done; }
as_root=(); [ "$(id -u)" -eq 0 ] || as_root=(sudo)
if ! have; then
    echo "slurm.sh: installing Debian's slurm-wlm and munge packages ..."
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge > /dev/null
    have || { echo "slurm.sh: install failed (${tools[*]})" >&2; exit 1; }
fi
echo "slurm.sh: $(slurmd -V) and munge ready"
