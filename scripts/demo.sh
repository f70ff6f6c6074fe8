#!/usr/bin/env bash
# Set up .venv and run the main job on the bundled sample clip (ASL sign HOUSE).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
mkdir -p out
SAMPLE=$(.venv/bin/python -c "from napari_diffslva._sample_data import sample_path; print(sample_path())")
.venv/bin/napari-diffslva export "$SAMPLE" out/sample_export.mp4 --overwrite
