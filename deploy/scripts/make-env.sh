#!/usr/bin/env bash
# Print a fresh deploy/.env for docker compose: random secrets and a KRaft cluster id (a base64url UUID).
#   deploy/scripts/make-env.sh > deploy/.env && chmod 600 deploy/.env
set -euo pipefail
rand() { head -c "$1" /dev/urandom | base64 | tr -d '/+=\n' | cut -c1-"$2"; }
cat <<ENV
# Generated $(date -u +%Y-%m-%dT%H:%M:%SZ) by deploy/scripts/make-env.sh; keep out of version control.
KAFKA_CLUSTER_ID=$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
REDIS_PASSWORD=$(rand 48 40)
GRAFANA_ADMIN_PASSWORD=$(rand 32 24)
HYBRIDPOOL_IMAGE=hybridpool:local
ENV
