#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv.
#   scripts/setup_venv.sh          everything a user needs: the CLI, the napari plugin with
#                                  PyQt6 and the dask batch runner (the "all" extra)
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
