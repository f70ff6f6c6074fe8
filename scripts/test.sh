#!/usr/bin/env bash
# Set up .venv with the test tools and run the whole test suite (GUI tests under Xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v Xvfb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    bash .ci/apt-packages.sh
  else
    echo "Xvfb is missing: sudo bash .ci/apt-packages.sh (GUI tests need it)" >&2
    exit 1
  fi
fi
bash scripts/setup_venv.sh test
exec .venv/bin/python -m pytest "$@"
