#!/usr/bin/env bash
# `make dev`: the whole pipeline on this machine, on the real stack, with a demo.
# Starts the stack, applies topics, schemas and migrations, starts the provider sandbox and
# every processor, produces demo templates, profiles and requests, and says where to look.
# Ctrl-C stops the processors and the sandbox (the stack stays up: `make stack-down`).
#
# NOTIFY_SECURE=1: the same demo on the secured stack of `NOTIFY_SECURE=1 dev/stack.sh` (TLS +
# SASL/SCRAM-SHA-512, the StandardAuthorizer, Cassandra with a password): the ACLs of
# topics/acls.toml are applied as admin, and every processor and producer signs in as its own
# principal, its password from the environment (never from the configuration file).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SECURE=${NOTIFY_SECURE:-0}
if [ "$SECURE" = 1 ]; then
  STACK_RUN=$ROOT/.run/secure
  RUN=$STACK_RUN/dev
  SANDBOX_LISTEN=127.0.0.1:${NOTIFY_SANDBOX_PORT:-28443}
  METRICS_PORT=29100
else
  STACK_RUN=$ROOT/.run
  RUN=$ROOT/.run/dev
  SANDBOX_LISTEN=127.0.0.1:${NOTIFY_SANDBOX_PORT:-18443}
  METRICS_PORT=19100
fi
SANDBOX=http://$SANDBOX_LISTEN
mkdir -p "$RUN"
# Each long step says what it does and how long it usually takes; the end states the total.
# A second run finds everything fetched and compiled and starts in seconds.
started=$SECONDS
step_started=$SECONDS
step() { # what, usual duration
  if [ -n "${step_name:-}" ]; then echo "[dev] $step_name: done in $((SECONDS - step_started))s"; fi
  step_name=$1
  step_started=$SECONDS
  echo "[dev] $1${2:+ (usually $2)}"
}

step "starting the stack: Kafka, Cassandra, Apicurio, SMTP" "1-2 min; the first run also downloads them, 3-6 min"
dev/stack.sh up
NOTIFY=$ROOT/target/debug/notify
if [ -x "$NOTIFY" ]; then
  step "building notify (incremental)" "seconds"
  cargo build --quiet --bin notify
else
  # The first compile builds librdkafka and ~400 crates: cargo's own progress bar shows it.
  step "first compile of notify (librdkafka and every crate)" "10-20 min on 2 cores, 4-8 min on 8"
  cargo build --bin notify
fi
export NOTIFY NOTIFY_SECURE=$SECURE STACK_RUN
# The tools and processors, each as the principal it would be in production.
as_user() { "$ROOT/dev/demo/as-user.sh" "$@"; }

pids=()
stop_all() {
  trap - EXIT INT TERM
  echo; echo "[dev] stopping processors and the sandbox (SIGTERM: they drain and commit)"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "[dev] stopped; the stack is still up (make stack-down stops it)"
}
trap stop_all EXIT INT TERM

# dev/notify.toml points the delivery processors at the sandbox (credentials in .run/creds,
# account ids pinned by `notify sandbox`) and e-mail at the local SMTP server.
export NOTIFY_CONFIG=$ROOT/dev/notify.toml
if [ "$SECURE" = 1 ]; then
  # dev/notify.toml on the secured stack's ports, with what every client shares to reach it.
  NOTIFY_CONFIG=$STACK_RUN/notify.toml
  sed -e 's/127.0.0.1:19092/127.0.0.1:29092/; s/127.0.0.1:18081/127.0.0.1:28081/' \
    -e 's/127.0.0.1:19042/127.0.0.1:29042/; s/127.0.0.1:18443/127.0.0.1:28443/' \
    -e 's/smtp_port = 12525/smtp_port = 22525/' -e "s#\\.run/creds#$STACK_RUN/creds#" \
    -e "s#^keyspace = \"notify\"#keyspace = \"notify\"\nusername = \"cassandra\"\npassword_file = \"$STACK_RUN/cassandra/password\"\ntls = true\nca_file = \"$STACK_RUN/kafka/tls/ca.crt\"#" \
    dev/notify.toml >"$NOTIFY_CONFIG"
  cat >>"$NOTIFY_CONFIG" <<EOF

[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.mechanism" = "SCRAM-SHA-512"
"ssl.ca.location" = "$STACK_RUN/kafka/tls/ca.crt"
EOF
  as_user admin acls apply >"$RUN/acls.log" && echo "[dev] ACLs of topics/acls.toml applied ($(tail -n 1 "$RUN/acls.log"))"
fi
$NOTIFY sandbox --listen "$SANDBOX_LISTEN" --creds-dir "$STACK_RUN/creds" >"$RUN/sandbox.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf "$SANDBOX/sandbox/messages" >/dev/null && break
  sleep 0.2
done
curl -sf "$SANDBOX/sandbox/messages" >/dev/null || { cat "$RUN/sandbox.log"; echo "[dev] the sandbox did not start"; exit 1; }
curl -sf -X DELETE "$SANDBOX/sandbox/messages" >/dev/null || true

step "topics, schemas and CQL migrations" "5-15 s"
as_user notify-setup topics apply --replication-factor 1
$NOTIFY schemas register >/dev/null && echo "[dev] schemas registered"
$NOTIFY db migrate

step "starting the processors" "seconds"
port=$METRICS_PORT
for p in $(dev/processors.sh); do
  NOTIFY_HTTP__LISTEN=127.0.0.1:$port as_user "notify-$p" run "$p" >"$RUN/$p.log" 2>&1 &
  pids+=($!)
  printf '[dev] %-14s pid %-7s metrics http://127.0.0.1:%s/metrics  log %s\n' "$p" "$!" "$port" "$RUN/$p.log"
  port=$((port + 1))
done

step "the demo: templates, two profiles, five requests" "5-20 s"
# The demo's producers: profiles and templates, and requests, each its own principal.
export DEMO_PROFILES="$ROOT/dev/demo/as-user.sh svc-profiles" DEMO_REQUESTS="$ROOT/dev/demo/as-user.sh svc-requests"
MAILDIR=$STACK_RUN/smtp/maildir/new dev/demo.sh "$NOTIFY" "$SANDBOX"
step_done=$((SECONDS - step_started))
echo "[dev] $step_name: done in ${step_done}s"
echo "[dev] ready in $((SECONDS - started))s"

cat <<EOT

[dev] The pipeline is running. Where to look:
  every outcome:   $NOTIFY status --follow        (notify.status.v1, decoded)
  provider calls:  curl $SANDBOX/sandbox/messages
  e-mails:         $STACK_RUN/smtp/maildir/new
  dead letters:    $NOTIFY dlq inspect
  metrics:         http://127.0.0.1:$METRICS_PORT/metrics … :$((port - 1))/metrics
  lag per group:   $NOTIFY lag
  send more:       echo '{"event_id":"e-1","user_id":"ana","category":"billing","template_id":"invoice_due","data":{"amount":"9","due_date":"today"}}' | $NOTIFY produce request
Press Ctrl-C to stop.
EOT
wait
