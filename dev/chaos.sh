#!/usr/bin/env bash
# `make chaos`: every fault scenario of tests/it/faults at full length (NOTIFY_CHAOS_SCALE,
# default 5: five times the load and the fault lengths of the short versions `make test` runs),
# one at a time, against the default deployment as processes; writes RELIABILITY.md's table
# (between its chaos markers) with the command and the commit. CHAOS_RELEASE=1 runs a release
# build of `notify`. CHAOS_FILTER picks scenarios (a test name filter, default every fault test);
# CHAOS_APPEND=1 adds their rows to the last run's (.run/chaos-rows.jsonl) instead of starting
# afresh. The shared stack is started if needed and never stopped.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# A stack already serving (perhaps started from another checkout) is used as it is.
if ! (exec 3<>"/dev/tcp/127.0.0.1/${NOTIFY_KAFKA_PORT:-19092}") 2>/dev/null; then
  dev/stack.sh up
fi
export NOTIFY_CHAOS_SCALE=${NOTIFY_CHAOS_SCALE:-5}
export NOTIFY_TEST_PATIENCE=${NOTIFY_TEST_PATIENCE:-2}
build=debug
if [ "${CHAOS_RELEASE:-0}" = 1 ]; then
  build=release
  cargo build --release --quiet --bin notify
  export NOTIFY_BIN="$ROOT/target/release/notify"
else
  cargo build --quiet --bin notify
fi
mkdir -p .run
rows="$ROOT/.run/chaos-rows.jsonl"
if [ "${CHAOS_APPEND:-0}" != 1 ]; then : >"$rows"; fi
export NOTIFY_CHAOS_REPORT=$rows
status=0
cargo test -p notify-tests --test it -- "${CHAOS_FILTER:-faults::}" --test-threads 1 2>&1 | tee .run/chaos.log || status=$?
commit=$(git rev-parse --short HEAD)$(git diff --quiet || echo "+changes")
table=$(jq -rs '
  def kv(f): to_entries | map("\(.key) \(.value | f)") | join(", ") | if . == "" then "0" else . end;
  ["| scenario | s | requests | messages | delivered | lost | duplicate sends | duplicate statuses | spurious DUPLICATE | dead letters | rate-limit violations | recovery s | exits | peak RSS MiB |",
   "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|"]
  + (group_by(.scenario) | map(.[-1]) | map(.report as $r |
      "| \(.scenario) | \(.secs) | \($r.requests) | \($r.messages_expected) | \($r.delivered) | \($r.lost) | \($r.duplicate_sends) | \($r.duplicate_statuses) | \($r.spurious_duplicates) | \($r.dead_letters | kv(.)) | \($r.rate_limit_violations) | \($r.recovery_secs // "-") | \($r.exits | kv(.)) | \($r.peak_rss_mib | kv(floor)) |"))
  | .[]' "$rows")
{
  echo "<!-- chaos:begin -->"
  echo "Run: \`NOTIFY_CHAOS_SCALE=$NOTIFY_CHAOS_SCALE make chaos\` at commit \`$commit\`, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $build build of \`notify\`, test exit status $status."
  echo
  echo "$table"
  echo "<!-- chaos:end -->"
} >.run/chaos-table.md
if [ -f RELIABILITY.md ] && grep -q 'chaos:begin' RELIABILITY.md; then
  awk 'BEGIN{skip=0} /<!-- chaos:begin -->/{while((getline l < ".run/chaos-table.md")>0) print l; skip=1; next} /<!-- chaos:end -->/{skip=0; next} !skip' RELIABILITY.md >.run/RELIABILITY.new
  mv .run/RELIABILITY.new RELIABILITY.md
else
  cat .run/chaos-table.md >>RELIABILITY.md
fi
echo "[chaos] RELIABILITY.md updated (exit status $status)" >&2
exit "$status"
