#!/usr/bin/env bash
# Run a command against a project-local Prefect server on 127.0.0.1, started for the
# duration of the command unless PREFECT_API_URL already points at one.
#   infra/with-prefect-server.sh [--early] .venv/bin/python -m flows.loop
# --early starts the command at once, while the server starts (~6-9 s, overlapping the
# command's own imports); the command must then wait for the API itself (flows.loop does).
# Why not Prefect's built-in temporary server: on these 2-core machines its SQLite
# database hit "database is locked" under training load and stalled a run for 60 s.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
early=0
if [ "${1:-}" = "--early" ]; then early=1; shift; fi
if [ -n "${PREFECT_API_URL:-}" ]; then exec "$@"; fi
export PREFECT_HOME="${PREFECT_HOME:-$here/.prefect}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=true
port="${SELFLOOP_PREFECT_PORT:-4200}"
mkdir -p "$PREFECT_HOME"
"$here/.venv/bin/prefect" server start --host 127.0.0.1 --port "$port" > "$PREFECT_HOME/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
export PREFECT_API_URL="http://127.0.0.1:$port/api"
echo "Prefect UI: http://127.0.0.1:$port" >&2
if [ "$early" = 1 ]; then
  SELFLOOP_WAIT_FOR_API="$PREFECT_HOME/server.log" "$@"
  exit $?
fi
for _ in $(seq 1 120); do
  if curl -sf "http://127.0.0.1:$port/api/health" > /dev/null; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then echo "prefect server failed to start; see $PREFECT_HOME/server.log" >&2; exit 1; fi
  sleep 0.5
done
curl -sf "http://127.0.0.1:$port/api/health" > /dev/null || { echo "prefect server not up after 60 s" >&2; exit 1; }
"$@"
