#!/usr/bin/env bash
# The demo of `make dev`: templates, two profiles, five requests (one a duplicate, one for an
# opted-out category, one for an unknown user), then waits until the providers got them.
set -euo pipefail
NOTIFY=$1
SANDBOX=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MAILDIR=${MAILDIR:-$ROOT/.run/smtp/maildir/new}
# On the secured stack, dev.sh names a command per producer principal.
PROFILES=${DEMO_PROFILES:-$NOTIFY}
REQUESTS=${DEMO_REQUESTS:-$NOTIFY}
$PROFILES templates push "$ROOT/dev/templates"
$PROFILES produce user "$ROOT/dev/demo/users.jsonl"
$REQUESTS produce request "$ROOT/dev/demo/requests.jsonl"
# At the sandbox: ana 2 APNs + 1 FCM + 1 SMS (her duplicate is dropped), ben 1 APNs; e-mails
# (ana, ben) go to the local SMTP server. ben gets no SMS (opted out), his marketing push is
# filtered (category opt-out), carla is an unknown user (filtered).
expected=5
for _ in $(seq 1 120); do
  got=$(curl -sf "$SANDBOX/sandbox/messages" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)
  [ "$got" -ge "$expected" ] && break
  sleep 1
done
echo "[demo] provider sandbox received $got messages (expected $expected):"
curl -sf "$SANDBOX/sandbox/messages" | python3 -c '
import json, sys
for m in json.load(sys.stdin):
    print("  %-8s %-40s %s" % (m["provider"], (m.get("recipient") or "")[:40], m["path"]))'
echo "[demo] e-mails in the local SMTP server: $(ls "$MAILDIR" | wc -l) (Maildir $MAILDIR)"
