#!/usr/bin/env bash
# Run a command against a project-local Prefect server on 127.0.0.1, started for the
# duration of the command unless PREFECT_API_URL already points at one.
#   infra/with-prefect-server.sh .venv/bin/python -m flows.loop
# Why not Prefect's built-in temporary server: on these 2-core machines its SQLite
# database hit "database is locked" under training load and stalled a run for 60 s.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${PREFECT_API_URL:-}" ]; then exec "$@"; fi
export PREFECT_HOME="${PREFECT_HOME:-$here/.prefect}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=true
port="${SELFLOOP_PREFECT_PORT:-4200}"
mkdir -p "$PREFECT_HOME"
"$here/.venv/bin/prefect" server start --host 127.0.0.1 --port "$port" > "$PREFECT_HOME/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if curl -sf "http://127.0.0.1:$port/api/health" > /dev/null; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then echo "prefect server failed to start; see $PREFECT_HOME/server.log" >&2; exit 1; fi
  sleep 0.5
done
curl -sf "http://127.0.0.1:$port/api/health" > /dev/null || { echo "prefect server not up after 60 s" >&2; exit 1; }
echo "Prefect UI: http://127.0.0.1:$port" >&2
export PREFECT_API_URL="http://127.0.0.1:$port/api"
"$@"
