#!/usr/bin/env bash
# Installs Debian's Chromium when it is missing: the browser tests (pytest -m browser) drive it
# through Playwright for Python with executable_path=/usr/bin/chromium. Playwright's own browser
# download (`playwright install`) is never used.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "[install-chromium] installing Chromium from Debian's packages" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
[ -x /usr/bin/chromium ] || {
  echo "[install-chromium] /usr/bin/chromium still missing after install" >&2
  exit 1
}
