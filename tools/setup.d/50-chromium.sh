#!/usr/bin/env bash
# Chromium (Debian's `chromium` package) and the fonts it renders with: the ops-room browser tests
# drive it headless through Playwright (executable_path=/usr/bin/chromium, never `playwright install`).
set -euo pipefail
if command -v chromium >/dev/null; then exit 0; fi
if [[ $(id -u) -ne 0 ]]; then
  echo "chromium missing: install Debian's package with 'sudo apt-get install chromium fonts-dejavu-core'" >&2
  exit 0
fi
echo "installing Debian's chromium package …"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
