#!/bin/sh
# Container entrypoint: `<service> [args]` runs python -m services.<service> listening on 0.0.0.0:$HTTP_PORT;
# `topics [args]` creates the catalogue topics (hybridpool topics).
set -eu

SERVICES="registry price_ingest telemetry balance bidding market_sim dispatch site_sim opsroom"

usage() {
  echo "usage: hybridpool-entrypoint <service> | topics --bootstrap HOST:PORT" >&2
  echo "services: $SERVICES" >&2
}

name="${1:-}"
case "$name" in
  topics)
    shift
    exec hybridpool topics "$@"
    ;;
  -h | --help | "")
    usage
    exit 0
    ;;
esac

for known in $SERVICES; do
  if [ "$known" = "$name" ]; then
    shift
    prefix=$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')
    # Keep an explicit <NAME>_HTTP_HOST/_PORT; otherwise listen on every interface at $HTTP_PORT.
    eval "host=\${${prefix}_HTTP_HOST:-${HTTP_HOST:-0.0.0.0}}"
    eval "port=\${${prefix}_HTTP_PORT:-${HTTP_PORT:-8000}}"
    export "${prefix}_HTTP_HOST=$host" "${prefix}_HTTP_PORT=$port"
    exec python -m "services.$name" "$@"
  fi
done

echo "unknown service: $name" >&2
usage
exit 64
