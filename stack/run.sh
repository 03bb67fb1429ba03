#!/usr/bin/env bash
# `make run`: runs cyclops-ingest and cyclops-forwarder in the foreground
# against the local stack (already started by `make stack-up`), with
# stack/demo.toml. Ctrl-C stops both.
#
# SENTRY_BASE_URL=https://sentry.example.com make run   delivers to a real Sentry;
# without it the forwarder delivers to the demo sink on DEMO_SINK_PORT (9000),
# a stand-in that prints what would have reached Sentry and stores nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
CONF=${CYCLOPS_CONF:-$ROOT/stack/demo.toml}
KAFKA_PORT=${KAFKA_PORT:-9092}
REDIS_PORT=${REDIS_PORT:-6379}
INGEST_PORT=${INGEST_PORT:-3000}
FORWARDER_PORT=${FORWARDER_PORT:-3001}
DEMO_SINK_PORT=${DEMO_SINK_PORT:-9000}
KEY=$(sed -n 's/^public_key = "\(.*\)"/\1/p' "$CONF" | head -n 1)
PROJECT=$(sed -n 's/^id = \([0-9]*\)/\1/p' "$CONF" | head -n 1)

export CYCLOPS__KAFKA__BROKERS=127.0.0.1:$KAFKA_PORT
export CYCLOPS__REDIS__URL=redis://127.0.0.1:$REDIS_PORT/0

# The services run in sessions of their own (setsid) so that Ctrl-C reaches
# only this script, which then asks each to stop once: a second signal would
# make them stop at once instead of draining.
pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "[run] stopped"
}
trap stop INT TERM EXIT

if [ -n "${SENTRY_BASE_URL:-}" ]; then
  export CYCLOPS__SENTRY__BASE_URL=$SENTRY_BASE_URL
  target="Sentry at $SENTRY_BASE_URL"
else
  export CYCLOPS__SENTRY__BASE_URL=http://127.0.0.1:$DEMO_SINK_PORT
  setsid "$BIN/cyclops-forwarder" demo-sink --sink-port "$DEMO_SINK_PORT" &
  pids+=($!)
  target="the DEMO SINK on 127.0.0.1:$DEMO_SINK_PORT (a stand-in for Sentry: it prints what it receives and stores nothing; set SENTRY_BASE_URL for a real Sentry)"
fi

setsid "$BIN/cyclops-ingest" --conf "$CONF" --port "$INGEST_PORT" -vv &
pids+=($!)
setsid "$BIN/cyclops-forwarder" --conf "$CONF" --port "$FORWARDER_PORT" -vv &
pids+=($!)

# Wait until both answer, or say which did not.
for url in "http://127.0.0.1:$INGEST_PORT/ready" "http://127.0.0.1:$FORWARDER_PORT/ready"; do
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && break
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || { echo "[run] a service exited; see its messages above" >&2; exit 1; }; done
    sleep 0.2
  done
  curl -fsS -o /dev/null "$url" || { echo "[run] $url is not ready" >&2; exit 1; }
done

cat <<MSG

[run] Cyclops is running.
      ingest     http://127.0.0.1:$INGEST_PORT   (/healthcheck /ready /metrics)
      forwarder  http://127.0.0.1:$FORWARDER_PORT   (/healthcheck /ready /metrics)
      delivering to $target

      DSN for your SDK:  http://$KEY@127.0.0.1:$INGEST_PORT/$PROJECT

      Try it:
        curl -sS -X POST http://127.0.0.1:$INGEST_PORT/api/$PROJECT/store/ \\
          -H 'Content-Type: application/json' \\
          -H 'X-Sentry-Auth: Sentry sentry_version=7, sentry_key=$KEY, sentry_client=curl/1' \\
          -d '{"message": "hello from curl", "level": "error"}'

      Ctrl-C stops everything; 'make stack-down' stops Kafka, Redis and PostgreSQL.

MSG
wait -n "${pids[@]}"
echo "[run] a service exited" >&2
