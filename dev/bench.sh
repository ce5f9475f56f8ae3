#!/usr/bin/env bash
# `make bench`: the benchmark harness on the local stack (started if it is not running, and
# stopped at the end only if started here). Writes BENCHMARKS.md and bench/*.png.
# Extra arguments go to notify-bench, e.g. `dev/bench.sh --records 200000` or `--quick`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# Capture first: `status | grep -q` under pipefail fails when grep exits early (SIGPIPE), which
# would take a running stack for a stopped one and stop it at the end.
stack_status=$(dev/stack.sh status || true)
started_here=false
if ! grep -q running <<<"$stack_status"; then started_here=true; fi
cleanup() { if $started_here; then dev/stack.sh down; fi; }
trap cleanup EXIT
dev/stack.sh up

quick=false
for a in "$@"; do [ "$a" = "--quick" ] && quick=true; done
if $quick; then
  # Debug builds: `make test` has built them already, so this costs seconds.
  cargo build --quiet --bin notify --bin notify-bench
  exec_bench=target/debug/notify-bench
else
  cargo build --release --quiet --bin notify --bin notify-bench
  exec_bench=target/release/notify-bench
fi
"$exec_bench" "$@"
