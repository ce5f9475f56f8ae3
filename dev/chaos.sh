#!/usr/bin/env bash
# `make chaos`: every fault scenario of tests/it/faults at full length (NOTIFY_CHAOS_SCALE,
# default 5: five times the load and the fault lengths of the short versions `make test` runs),
# one at a time, against the default deployment as processes; writes RELIABILITY.md's table
# (between its chaos markers) with the command and the commit. CHAOS_RELEASE=1 runs a release
# build of `notify`. The shared stack is started if needed and never stopped.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
dev/stack.sh up
export NOTIFY_CHAOS_SCALE=${NOTIFY_CHAOS_SCALE:-5}
export NOTIFY_TEST_PATIENCE=${NOTIFY_TEST_PATIENCE:-2}
if [ "${CHAOS_RELEASE:-0}" = 1 ]; then
  cargo build --release --quiet --bin notify
  export NOTIFY_BIN="$ROOT/target/release/notify"
else
  cargo build --quiet --bin notify
fi
mkdir -p .run
rows=$(mktemp)
export NOTIFY_CHAOS_REPORT=$rows
status=0
cargo test -p notify-tests --test it -- faults:: --test-threads 1 2>&1 | tee .run/chaos.log || status=$?
commit=$(git rev-parse --short HEAD)$(git diff --quiet || echo "+changes")
table=$(jq -rs '
  ["| scenario | requests | messages | delivered | lost | duplicate sends | duplicate statuses | spurious DUPLICATE | dead letters | rate-limit violations | recovery s | peak RSS MiB |",
   "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
  + map(.report as $r | "| \(.scenario) | \($r.requests) | \($r.messages_expected) | \($r.delivered) | \($r.lost) | \($r.duplicate_sends) | \($r.duplicate_statuses) | \($r.spurious_duplicates) | \($r.dead_letters | to_entries | map("\(.key) \(.value)") | join(", ") | if . == "" then "0" else . end) | \($r.rate_limit_violations) | \($r.recovery_secs // "-") | \($r.peak_rss_mib | to_entries | map("\(.key) \(.value | floor)") | join(", ")) |")
  | .[]' "$rows")
{
  echo "<!-- chaos:begin -->"
  echo "Run: \`NOTIFY_CHAOS_SCALE=$NOTIFY_CHAOS_SCALE make chaos\` at commit \`$commit\`, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, test exit status $status."
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
rm -f "$rows"
echo "[chaos] RELIABILITY.md updated (exit status $status)" >&2
exit "$status"
