#!/usr/bin/env bash
# Install this project into an environment that already has its torch stack (NVIDIA's PyTorch container):
# the other dependencies at this project's pins (docker/requirements-ngc.txt), constrained to the torch,
# torchvision, torch-tensorrt, TensorRT and Triton already installed, then the project without dependencies.
#   PIP_ARGS="--dry-run --no-index" bash docker/install.sh deps   # check the pins against this environment
set -euo pipefail
cd "$(dirname "$0")/.."
keep=$(mktemp)
trap 'rm -f "$keep"' EXIT
python -m pip list --format=freeze 2>/dev/null \
  | grep -iE '^(torch|torchvision|torch[-_]tensorrt|tensorrt|tensorrt[-_].*|triton)==' > "$keep" || true
echo "install.sh: keeping $(paste -sd' ' "$keep")"
# shellcheck disable=SC2086  # PIP_ARGS is a list of flags
python -m pip install ${PIP_ARGS:-} --no-cache-dir -c "$keep" -r docker/requirements-ngc.txt
if [ "${1:-all}" != deps ]; then
  python -m pip install ${PIP_ARGS:-} --no-cache-dir --no-deps -e .
fi
