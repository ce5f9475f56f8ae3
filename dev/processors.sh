#!/usr/bin/env bash
# The processors `make dev` runs, in pipeline order.
cat <<'EOT'
preferences
dedup
templates
ratelimit
fanout
deliver-apns
deliver-fcm
deliver-sms
deliver-email
retry
EOT
