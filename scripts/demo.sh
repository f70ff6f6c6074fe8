#!/usr/bin/env bash
# Set up .venv and anonymize the bundled sample clip (ASL sign HOUSE, 73 frames).
#
# With a CUDA GPU and network access this runs the real models: the first run downloads
# Stable Diffusion 1.5 (about 4.3 GB) and ControlNet HED (about 1.4 GB) into the Hugging
# Face cache. Offline, point it at local folders:
#   DIFFSLVA_MODEL=/models/sd15 DIFFSLVA_CONTROLNET=/models/controlnet-hed bash scripts/demo.sh
# Without a GPU (or when the models cannot be had) it runs the same pipeline with tiny
# random-weight models, so you can see every step work; the faces are then noise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
mkdir -p out
SAMPLE=$(.venv/bin/python -c "from napari_diffslva._sample_data import sample_path; print(sample_path())")
PROMPT="a woman in CG style, brown hair, is making gestures"
HAS_GPU=$(.venv/bin/python -c "import torch; print(int(torch.cuda.is_available()))")
if [ -n "${DIFFSLVA_MODEL:-}" ] || { [ "$HAS_GPU" = 1 ] && [ "${DIFFSLVA_DEMO_TINY:-0}" != 1 ]; }; then
  args=()
  if [ -n "${DIFFSLVA_MODEL:-}" ]; then
    args+=(--model "$DIFFSLVA_MODEL" --controlnet "${DIFFSLVA_CONTROLNET:?set it too}" --offline)
  fi
  if .venv/bin/napari-diffslva anonymize "$SAMPLE" -o out/sample_anonymized.mp4 \
      --prompt "$PROMPT" --overwrite --side-by-side out/sample_side_by_side.mp4 "${args[@]}"; then
    .venv/bin/napari-diffslva audit "$SAMPLE" out/sample_anonymized.mp4 --report out/audit
    echo "done: out/sample_anonymized.mp4, out/sample_side_by_side.mp4, out/audit/report.html"
    exit 0
  fi
  echo "the real models could not be loaded (see the error above); running with tiny models" >&2
else
  echo "no CUDA GPU found: the real models would take hours per clip on this CPU." >&2
  echo "running the whole pipeline with tiny random-weight models instead." >&2
fi
.venv/bin/napari-diffslva selftest -o out/sample_anonymized_tiny_models.mp4
echo "done: out/sample_anonymized_tiny_models.mp4 (tiny random models: the new face is noise)"
