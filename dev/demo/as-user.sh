#!/usr/bin/env bash
# `as-user.sh USER notify-args…`: the notify binary ($NOTIFY) signed in as Kafka user USER on the
# secured stack (NOTIFY_SECURE=1; password from $STACK_RUN/kafka/users/USER, passed in the
# environment); on the plaintext stack just the binary.
set -euo pipefail
user=$1
shift
if [ "${NOTIFY_SECURE:-0}" = 1 ]; then
  NOTIFY_KAFKA__PROPERTIES__SASL_USERNAME=$user \
    NOTIFY_KAFKA__PROPERTIES__SASL_PASSWORD=$(cat "$STACK_RUN/kafka/users/$user") exec "$NOTIFY" "$@"
fi
exec "$NOTIFY" "$@"
