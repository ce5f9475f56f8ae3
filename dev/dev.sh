#!/usr/bin/env bash
# `make dev`: the whole pipeline on this machine, on the real stack, with a demo.
# Starts the stack, applies topics, schemas and migrations, starts the provider sandbox and
# every processor, produces demo profiles, templates and requests, and says where to look.
# Ctrl-C stops the processors and the sandbox (the stack stays up; `make stack-down`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
RUN=$ROOT/.run/dev
mkdir -p "$RUN"
export NOTIFY_CONFIG=$ROOT/dev/notify.toml

dev/stack.sh up
cargo build --quiet --bin notify
NOTIFY=$ROOT/target/debug/notify

$NOTIFY topics apply --replication-factor 1
$NOTIFY schemas register
$NOTIFY db migrate

pids=()
stop_all() {
  echo; echo "[dev] stopping processors (SIGTERM: they drain and commit)"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "[dev] stopped; the stack is still up (make stack-down stops it)"
}
trap stop_all EXIT INT TERM

# Processors of the chain, each with its own metrics port.
port=19100
for p in $(dev/processors.sh); do
  NOTIFY_HTTP__LISTEN=127.0.0.1:$port $NOTIFY run "$p" >"$RUN/$p.log" 2>&1 &
  pids+=($!)
  echo "[dev] $p running (pid $!), metrics http://127.0.0.1:$port/metrics, log $RUN/$p.log"
  port=$((port + 1))
done

if [ -f dev/demo.sh ]; then dev/demo.sh "$NOTIFY"; fi

cat <<EOT

[dev] The pipeline is running. Where to look:
  status events:   $NOTIFY dlq inspect --help   (or read notify.status.v1 with any Kafka tool)
  dead letters:    topic notify.dlq.v1
  metrics:         http://127.0.0.1:19100/metrics and the following ports
Press Ctrl-C to stop.
EOT
wait
