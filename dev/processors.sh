#!/usr/bin/env bash
# The processors `make dev` runs: the default deployment (the chain before delivery, as the
# Helm chart deploys it). NOTIFY_SPLIT=1 runs the stages of the chain as separate processors.
if [ "${NOTIFY_SPLIT:-0}" = 1 ]; then
  printf '%s\n' preferences dedup templates ratelimit fanout
else
  echo chain
fi
printf '%s\n' deliver-apns deliver-fcm deliver-sms deliver-email retry
