#!/usr/bin/env bash
# Debian packages the GUI tests need: a virtual X server and two xcb libraries Qt wants
# (see docs/install.md; offscreen Qt cannot render napari layers).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends xvfb xauth libxcb-icccm4 libxcb-keysyms1 \
  libxcb-cursor0 libxkbcommon-x11-0 libgl1 libegl1 >/dev/null
