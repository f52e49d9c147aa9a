#!/usr/bin/env bash
# Stop the CI cluster started by .ci/slurm-up.sh, by PID.
dir=$1
for pid in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
  [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
done
