#!/usr/bin/env bash
# `make test`: everything CI checks, against the real stack. Starts what is not running and
# stops, at the end, only what it started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
dev/setup.sh
started_here=false
# Capture first: `status | grep -q` under pipefail reads a running stack as stopped.
stack_status=$(dev/stack.sh status)
if ! grep -q running <<<"$stack_status"; then started_here=true; fi
cleanup() { if $started_here; then dev/stack.sh down; fi; }
trap cleanup EXIT
dev/stack.sh up

echo "[test] formatting and lints" >&2
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "[test] helm chart and container image" >&2
dev/helm-check.sh
dev/image-check.sh

echo "[test] build" >&2
cargo build --quiet --bin notify

echo "[test] unit and integration tests" >&2
# Waits for an expected outcome may take 3x their nominal time on a loaded machine.
export NOTIFY_TEST_PATIENCE=${NOTIFY_TEST_PATIENCE:-3}
cargo test --workspace --quiet -- --test-threads 4

echo "[test] benchmark harness, quick mode (checks it runs and produces numbers, not speed)" >&2
dev/bench.sh --quick
