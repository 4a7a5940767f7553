#!/usr/bin/env bash
# Prometheus and promtool (Debian's `prometheus` package): the deploy checks run `promtool check`
# on deploy/prometheus and start a real Prometheus server on loopback in an integration test.
set -euo pipefail
if command -v promtool >/dev/null && command -v prometheus >/dev/null; then exit 0; fi
if [[ $(id -u) -ne 0 ]]; then
  echo "prometheus/promtool missing: install Debian's package with 'sudo apt-get install prometheus'" >&2
  exit 0
fi
echo "installing Debian's prometheus package (promtool) …"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
